/*
 * squall.js: browser client for the Squall v1 protocol (JSON subprotocol).
 * Plain ES2020, no dependencies, no build step. Served by the node at /squall.js.
 *
 *   const client = new Squall.SquallClient("/ws", { token: () => getToken() });
 *   client.on("msg", (m) => console.log(m.room, m.seq, m.data));
 *   await client.connect();
 *   await client.join("lobby");
 *   await client.publish("lobby", { text: "hi" });
 *
 * Guarantees (PROTOCOL.md v1):
 * - each request promise resolves with its `ok` (or `pong`) or rejects with
 *   RequestFailed(code, reason, retryAfter) for its `err`; exactly one outcome;
 * - after any close except 4001, 4003, 4009, 4010, 4029 (1012 "draining" included)
 *   or a network drop, the client waits per its backoff policy (the same rules as
 *   the Python client's client/backoff.py: a delay in
 *   [ceiling * (1 - jitter), ceiling] with ceiling = min(cap, base * 2^n), n the
 *   consecutive failed tries, reset after a connection stayed up `resetAfter`
 *   seconds; after a 1012/1001 restart or drain close a delay in
 *   [0, restartDelay] and the count starts over; after `maxAttempts` failed tries
 *   it gives up with GaveUp), asks the token provider again, reconnects with
 *   ?token=, and rejoins every
 *   joined room with `since` (last seq seen) and `epoch`; the server replays what
 *   was missed, and msgs whose seq is not above the last one seen are dropped, so
 *   each room's messages reach the handlers in seq order without duplicates;
 * - requests made while reconnecting wait for the new connection and its rejoins;
 *   requests in flight when the connection dropped reject with ConnectionLost;
 * - a non-reconnectable close ends the client: pending and later requests reject
 *   with Closed(code, reason) and the "closed" event fires once;
 * - dm frames are acknowledged after every "dm" handler returned (or the promise it
 *   returned resolved); a dm redelivered after a reconnect is not emitted twice;
 * - every state change is a "status" event {state, attempt, delay, code, reason},
 *   state one of connecting, open, retry, recovered, gave_up, closed (the fields
 *   mean what they mean in the Python client's client/events.py).
 *
 * Browsers do not expose the HTTP status of a refused handshake (bad token: the
 * socket just closes with 1006). The first connect() rejects in that case; later
 * reconnects keep retrying with backoff (the token provider is asked every time).
 */
(function (root, factory) {
  "use strict";
  const api = factory();
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else {
    root.Squall = api;
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const SUBPROTOCOL = "squall.v1.json";
  const NO_RECONNECT = new Set([4001, 4003, 4009, 4010, 4029]);
  /** Restart / drain closes: reconnect soon, the attempt count started over. */
  const RESTART = new Set([1001, 1012]);
  const SEEN_DMS = 4096;
  const EVENTS = ["msg", "dm", "presence", "state", "status", "welcome", "rejoin", "closed", "left"];
  const MAX_EXPONENT = 64;

  /**
   * The backoff policy (seconds), validated; the same fields and defaults as the
   * Python client's Backoff: base 0.5, cap 30, jitter 1 (full), maxAttempts null
   * (never give up), resetAfter 10, restartDelay 1.
   */
  function Backoff(options) {
    const o = options || {};
    const pick = (v, d) => (v === undefined ? d : v);
    const p = {
      base: pick(o.base, 0.5),
      cap: pick(o.cap, 30),
      jitter: pick(o.jitter, 1),
      maxAttempts: pick(o.maxAttempts, null),
      resetAfter: pick(o.resetAfter, 10),
      restartDelay: pick(o.restartDelay, 1),
    };
    if (!(p.base > 0) || !(p.cap > 0)) throw new RangeError("backoff base and cap must be positive");
    if (p.cap < p.base) throw new RangeError("backoff cap must not be below its base");
    if (!(p.jitter >= 0 && p.jitter <= 1)) throw new RangeError("backoff jitter must be between 0 and 1");
    if (p.maxAttempts !== null && !(Number.isInteger(p.maxAttempts) && p.maxAttempts >= 1)) {
      throw new RangeError("backoff maxAttempts must be an integer >= 1 (or null)");
    }
    if (!(p.resetAfter >= 0) || !(p.restartDelay >= 0)) {
      throw new RangeError("backoff resetAfter and restartDelay must not be negative");
    }
    return Object.freeze(p);
  }

  /** The reference design's preset: 1 s doubling to 30 s (20 % jitter), 10 tries. */
  const REFERENCE_BACKOFF = Backoff({ base: 1, cap: 30, jitter: 0.2, maxAttempts: 10 });

  /** Upper bound of the delay (s) before try number `attempt` (0-based) under `policy`. */
  function ceilingOf(policy, attempt) {
    if (attempt < 0) throw new RangeError("attempt must not be negative");
    return Math.min(policy.cap, policy.base * Math.pow(2, Math.min(attempt, MAX_EXPONENT)));
  }

  /** A delay in [ceiling * (1 - jitter), ceiling]; `random` gives [0, 1). */
  function delayOf(policy, attempt, random) {
    const top = ceilingOf(policy, attempt);
    return top * (1 - policy.jitter) + top * policy.jitter * random();
  }

  /**
   * One client's retry state (the Python client's Attempts): nextDelay() counts a
   * try and returns null once maxAttempts consecutive tries failed; restart() drops
   * the count (the restart's try is try 1 of a new one); a connection up for
   * resetAfter seconds resets it. Times are caller-supplied seconds.
   */
  class Attempts {
    constructor(policy, random) {
      this.policy = policy;
      this._random = random || Math.random;
      this.attempt = 0;
      this._upSince = null;
    }

    get exhausted() {
      const limit = this.policy.maxAttempts;
      return limit !== null && this.attempt >= limit;
    }

    nextDelay() {
      if (this.exhausted) return null;
      const delay = delayOf(this.policy, this.attempt, this._random);
      this.attempt += 1;
      return delay;
    }

    restart() {
      this.attempt = 1;
      return this.policy.restartDelay * this._random();
    }

    reset() {
      this.attempt = 0;
    }

    connected(now) {
      this._upSince = now;
    }

    disconnected(now) {
      if (this._upSince !== null && now - this._upSince >= this.policy.resetAfter) this.reset();
      this._upSince = null;
    }
  }

  class SquallError extends Error {}

  class RequestFailed extends SquallError {
    constructor(code, reason, retryAfter) {
      super(code + " " + reason);
      this.name = "RequestFailed";
      this.code = code;
      this.reason = reason;
      this.retryAfter = retryAfter === undefined ? null : retryAfter;
    }
  }

  class Closed extends SquallError {
    constructor(code, reason) {
      super("closed: " + code + " " + (reason || ""));
      this.name = "Closed";
      this.code = code;
      this.reason = reason || "";
    }
  }

  class ConnectionLost extends SquallError {
    constructor(code, reason) {
      super("connection lost: " + code + " " + (reason || ""));
      this.name = "ConnectionLost";
      this.code = code;
      this.reason = reason || "";
    }
  }

  /** The client stopped reconnecting after `attempts` consecutive failed tries. */
  class GaveUp extends Closed {
    constructor(attempts, code, reason) {
      super(code, reason);
      this.name = "GaveUp";
      this.attempts = attempts;
      this.message = "gave up after " + attempts + " tries: " + code + " " + (reason || "");
    }
  }

  class RequestTimeout extends SquallError {
    constructor(what) {
      super("timed out: " + what);
      this.name = "RequestTimeout";
    }
  }

  /** Upper bound of the delay (s) before retry number `attempt` (0-based). */
  function backoffCeiling(attempt, base, cap) {
    return ceilingOf({ base: base, cap: cap }, attempt);
  }

  /** Full-jitter delay in seconds: uniform in [0, ceiling). */
  function backoffDelay(attempt, base, cap, random) {
    return delayOf({ base: base, cap: cap, jitter: 1 }, attempt, random || Math.random);
  }

  /** One human line for a "status" event, as the Python client's StatusEvent.describe(). */
  function describeStatus(e) {
    let why = "";
    if (e.code !== null && e.code !== undefined) why = (" (" + e.code + " " + (e.reason || "")).trimEnd() + ")";
    else if (e.reason) why = " (" + e.reason + ")";
    switch (e.state) {
      case "connecting":
        return e.attempt ? "connecting (retry " + e.attempt + ")" : "connecting";
      case "retry":
        return "retry " + e.attempt + " in " + (e.delay || 0).toFixed(1) + " s" + why;
      case "recovered":
        return "recovered after " + e.attempt + (e.attempt === 1 ? " try" : " tries");
      case "gave_up":
        return "gave up after " + e.attempt + " tries" + why;
      case "closed":
        return "closed" + why;
      default:
        return e.state;
    }
  }

  /** A ws:// or wss:// URL for `url`, which may be relative to the page ("/ws"). */
  function absoluteWsUrl(url) {
    if (/^wss?:\/\//i.test(url)) return url;
    const loc = typeof location !== "undefined" ? location : null;
    if (!loc) throw new TypeError("relative URL outside a browser: " + url);
    const u = new URL(url, loc.href);
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.toString();
  }

  class SquallClient {
    /**
     * @param {string} url  ws(s):// URL of /ws, or a path relative to the page.
     * @param {object} options
     *   token: string | () => Promise<string>   (asked before every connection)
     *   backoff: {base: 0.5, cap: 30, jitter: 1, maxAttempts: null, resetAfter: 10,
     *             restartDelay: 1}   (seconds; Squall.REFERENCE_BACKOFF is 1 s to 30 s, 10 tries)
     *   autoAck: true          acknowledge dms after the handlers ran
     *   requestTimeout: 10000  ms, also bounds waiting for a reconnect
     *   connectTimeout: 10000  ms, from opening the socket to `welcome`
     *   random: Math.random    jitter source (tests)
     *   WebSocket: the WebSocket class (defaults to the global one)
     */
    constructor(url, options) {
      const opts = options || {};
      if (opts.token === undefined) throw new TypeError("options.token is required");
      this.url = url;
      this._tokenSource = opts.token;
      this.backoff = Backoff(opts.backoff);
      this.autoAck = opts.autoAck !== false;
      this.requestTimeout = opts.requestTimeout || 10000;
      this.connectTimeout = opts.connectTimeout || 10000;
      this._random = opts.random || Math.random;
      this._WebSocket = opts.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
      this._handlers = {};
      for (const e of EVENTS) this._handlers[e] = new Set();
      this._ws = null;
      this._state = "idle"; // idle | connecting | open | reconnecting | closed
      this._ready = false;
      this._waiters = new Set(); // {resolve, reject} waiting for readiness
      this._pending = new Map(); // id -> {resolve, reject, onOk, timer}
      this._nextId = 1;
      this._rooms = new Map(); // name -> {name, seq, epoch, joined, recovered}
      this._dms = new Map(); // mid -> acked (insertion ordered, bounded)
      this._attempts = new Attempts(this.backoff, this._random);
      this._tries = 0; // tries of the current outage
      this.status = null; // the last "status" event
      this._timer = null;
      this._closing = false;
      this._final = null;
      this._started = false;
      this.welcome = null;
      this.connections = 0;
      this._onOnline = () => {
        if (this._state === "reconnecting" && this._timer !== null) {
          clearTimeout(this._timer);
          this._timer = null;
          this._reconnect();
        }
      };
    }

    // -- events ---------------------------------------------------------------

    /** Subscribe to "msg" | "dm" | "presence" | "state" | "welcome" | "rejoin" | "closed" | "left". */
    on(event, fn) {
      if (!this._handlers[event]) throw new TypeError("unknown event " + event);
      this._handlers[event].add(fn);
      return () => this.off(event, fn);
    }

    off(event, fn) {
      if (this._handlers[event]) this._handlers[event].delete(fn);
    }

    _emit(event, arg, extra) {
      const results = [];
      for (const fn of this._handlers[event]) {
        try {
          results.push(fn(arg, extra));
        } catch (err) {
          console.error("squall: " + event + " handler failed", err);
          results.push(Promise.reject(err));
        }
      }
      return results;
    }

    get state() {
      return this._state;
    }

    get connected() {
      return this._ready;
    }

    /** Rooms joined (or being joined): name -> {seq, epoch, joined, recovered}. */
    get rooms() {
      const out = {};
      for (const [name, s] of this._rooms) out[name] = Object.assign({}, s);
      return out;
    }

    _setState(state, info) {
      if (this._state === state) return;
      this._state = state;
      this._emit("state", state, info || {});
    }

    /** A "status" event: {state, attempt, delay, code, reason} (see the header). */
    _status(state, fields) {
      const f = fields || {};
      const event = {
        state: state,
        attempt: f.attempt || 0,
        delay: f.delay === undefined ? null : f.delay,
        code: f.code === undefined ? null : f.code,
        reason: f.reason || "",
      };
      this.status = event;
      this._emit("status", event);
    }

    // -- life cycle -------------------------------------------------------------

    /** Open the first connection; resolves with `welcome`, rejects with Closed. */
    async connect() {
      if (this._started) throw new SquallError("connect() may be called once");
      this._started = true;
      this._setState("connecting");
      this._status("connecting");
      let opened;
      try {
        opened = await this._open();
      } catch (err) {
        const code = err && typeof err.code === "number" ? err.code : 1006;
        this._finish(err instanceof Closed ? err : new Closed(code, String(err && err.message)));
        throw this._final;
      }
      if (typeof addEventListener === "function") addEventListener("online", this._onOnline);
      this._attach(opened.ws, opened.welcome);
      this._markReady();
      this._status("open");
      return opened.welcome;
    }

    /** Close and stop reconnecting. Pending requests reject with Closed(1000). */
    close(code, reason) {
      this._closing = true;
      const ws = this._ws;
      if (ws) ws.close(code || 1000, reason || "");
      this._finish(null);
    }

    async _token() {
      const src = this._tokenSource;
      return typeof src === "function" ? await src() : src;
    }

    /** One attempt: socket open and `welcome` received. */
    _open() {
      return new Promise((resolve, reject) => {
        this._token().then((token) => {
          if (this._closing) return reject(new Closed(1000, "closed by the client"));
          if (!this._WebSocket) return reject(new SquallError("no WebSocket available"));
          const base = absoluteWsUrl(this.url);
          const url = base + (base.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
          let ws;
          try {
            ws = new this._WebSocket(url, SUBPROTOCOL);
          } catch (err) {
            return reject(err);
          }
          let welcomed = false;
          let bye = null;
          const timer = setTimeout(() => {
            if (!welcomed) {
              ws.close();
              reject(new ConnectionLost(null, "no welcome in time"));
            }
          }, this.connectTimeout);
          ws.onmessage = (ev) => {
            let frame;
            try {
              frame = JSON.parse(ev.data);
            } catch (err) {
              return; // not ours to interpret; the server never sends this
            }
            if (frame === null || typeof frame !== "object" || Array.isArray(frame)) return;
            if (frame.t === "bye") bye = frame; // its code stands in for a missing close code
            if (welcomed) return this._dispatch(ws, frame);
            if (frame.t === "welcome") {
              welcomed = true;
              clearTimeout(timer);
              if (ws.protocol && ws.protocol !== SUBPROTOCOL) {
                ws.close(1000, "subprotocol");
                return reject(new SquallError("server chose subprotocol " + ws.protocol));
              }
              resolve({ ws: ws, welcome: frame });
            }
          };
          // A socket that fails to open: browsers fire "error" then "close"; Node's
          // WebSocket only "error". Settle on the first one (the close is then a no-op).
          let upgraded = false;
          ws.onopen = () => {
            upgraded = true;
          };
          ws.onerror = () => {
            if (welcomed || upgraded) return; // after the upgrade the close will follow
            clearTimeout(timer);
            welcomed = true; // settled
            reject(new ConnectionLost(1006, "connection failed"));
          };
          ws.onclose = (ev) => {
            const code = ev.code === 1005 || ev.code === 1006 ? (bye ? bye.code : ev.code) : ev.code;
            const reason = ev.reason || (bye ? bye.reason : "");
            if (!welcomed) {
              clearTimeout(timer);
              welcomed = true; // settled
              return reject(
                NO_RECONNECT.has(code) ? new Closed(code, reason) : new ConnectionLost(code, reason)
              );
            }
            this._onClose(ws, code, reason);
          };
        }, reject);
      });
    }

    _attach(ws, welcome) {
      this._ws = ws;
      this.welcome = welcome;
      this.connections += 1;
      this._attempts.connected(Date.now() / 1000);
      this._lastSeen = Date.now();
      this._startWatchdog(ws, welcome.hb);
      this._emit("welcome", welcome);
    }

    _markReady() {
      this._ready = true;
      this._setState("open");
      const waiters = Array.from(this._waiters);
      this._waiters.clear();
      for (const w of waiters) w.resolve();
    }

    /**
     * Liveness: when nothing arrived for a heartbeat interval, send a ping; when it
     * is not answered, drop the connection and reconnect (a half-open TCP connection
     * can otherwise hang a browser for minutes).
     */
    _startWatchdog(ws, hb) {
      const interval = Math.max(5, Number(hb) || 25) * 1000;
      const tick = () => {
        if (ws !== this._ws) return;
        if (Date.now() - this._lastSeen >= interval) {
          this._request({ t: "ping" }, null, ws).catch((err) => {
            if (err instanceof RequestTimeout && ws === this._ws) {
              this._onClose(ws, 4408, "no answer to ping");
              ws.close();
            }
          });
        }
        ws._squallWatchdog = setTimeout(tick, interval);
      };
      ws._squallWatchdog = setTimeout(tick, interval);
    }

    _onClose(ws, code, reason) {
      clearTimeout(ws._squallWatchdog);
      if (ws !== this._ws) return;
      this._ws = null;
      this._ready = false;
      this._attempts.disconnected(Date.now() / 1000);
      if (this._closing || this._final) return this._finish(null);
      if (NO_RECONNECT.has(code)) return this._finish(new Closed(code, reason));
      this._failPending(new ConnectionLost(code, reason));
      for (const [name, s] of this._rooms) if (!s.joined) this._rooms.delete(name);
      this._tries = 0;
      this._scheduleReconnect({ code: code, reason: reason }, RESTART.has(code));
    }

    _scheduleReconnect(info, restart) {
      const delay = restart ? this._attempts.restart() : this._attempts.nextDelay();
      if (delay === null) {
        const tries = this._attempts.attempt;
        this._status("gave_up", { attempt: tries, code: info.code, reason: info.reason });
        return this._finish(new GaveUp(tries, info.code, info.reason));
      }
      this._tries += 1;
      this._setState("reconnecting", Object.assign({ delay: delay, attempt: this._tries }, info));
      this._status("retry", {
        attempt: this._tries,
        delay: delay,
        code: info.code,
        reason: info.reason,
      });
      this._timer = setTimeout(() => {
        this._timer = null;
        this._reconnect();
      }, delay * 1000);
    }

    async _reconnect() {
      if (this._closing || this._final) return;
      this._status("connecting", { attempt: this._tries });
      let opened;
      try {
        opened = await this._open();
      } catch (err) {
        if (this._closing || this._final) return;
        if (err instanceof Closed) return this._finish(err);
        const code = err && err.code !== undefined ? err.code : null;
        return this._scheduleReconnect({ code: code, reason: (err && err.reason) || "" }, false);
      }
      if (this._closing || this._final) {
        opened.ws.close(1000, "");
        return;
      }
      // server-side rooms are joined again by the server (listed in the new welcome)
      for (const [name, st] of Array.from(this._rooms.entries())) {
        if (st.serverSide) this._rooms.delete(name);
      }
      this._attach(opened.ws, opened.welcome);
      this._rejoin(opened.ws);
    }

    async _rejoin(ws) {
      const states = Array.from(this._rooms.values()).filter((s) => s.joined && !s.serverSide);
      const results = await Promise.allSettled(
        states.map((s) => {
          const frame = { t: "join", room: s.name };
          if (s.token) frame.token = s.token;
          if (s.seq !== null && s.epoch !== null) {
            frame.since = s.seq;
            frame.epoch = s.epoch;
          }
          return this._request(frame, (ok) => this._joined(s, ok, true), ws);
        })
      );
      if (ws !== this._ws) return;
      let retry = false;
      results.forEach((r, i) => {
        const s = states[i];
        if (r.status === "fulfilled") {
          this._emit("rejoin", { room: s.name, recovered: s.recovered, seq: s.seq });
          return;
        }
        const err = r.reason;
        if (err instanceof RequestTimeout || (err instanceof RequestFailed && (err.code === 429 || err.code === 503))) {
          retry = true;
        } else if (err instanceof RequestFailed) {
          if (this._rooms.get(s.name) === s) this._rooms.delete(s.name);
          this._emit("rejoin", { room: s.name, error: err });
        }
      });
      if (retry) {
        this._onClose(ws, 1000, "rejoin failed");
        ws.close(1000, "rejoin failed");
        return;
      }
      this._markReady();
      this._status("recovered", { attempt: this._tries });
    }

    _joined(state, ok, rejoin) {
      state.joined = true;
      state.seq = ok.seq;
      state.epoch = ok.epoch;
      if (rejoin) state.recovered = !!ok.recovered;
    }

    _finish(error) {
      if (this._state === "closed") return;
      this._final = error || new Closed(1000, "closed by the client");
      this._ready = false;
      if (this._timer !== null) clearTimeout(this._timer);
      this._timer = null;
      if (typeof removeEventListener === "function") removeEventListener("online", this._onOnline);
      this._failPending(this._final);
      const waiters = Array.from(this._waiters);
      this._waiters.clear();
      for (const w of waiters) w.reject(this._final);
      const ws = this._ws;
      this._ws = null;
      if (ws) {
        clearTimeout(ws._squallWatchdog);
        ws.close(1000, "");
      }
      this._setState("closed", error ? { code: error.code, reason: error.reason } : {});
      this._status(
        "closed",
        error ? { code: error.code, reason: error.reason } : { code: 1000, reason: "closed by the client" }
      );
      this._emit("closed", error);
    }

    _failPending(error) {
      const pending = Array.from(this._pending.values());
      this._pending.clear();
      for (const p of pending) {
        clearTimeout(p.timer);
        p.reject(error);
      }
    }

    // -- requests ---------------------------------------------------------------

    _whenReady() {
      if (this._state === "closed") return Promise.reject(this._final);
      if (this._ready) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const w = {
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        };
        const timer = setTimeout(() => {
          this._waiters.delete(w);
          reject(new RequestTimeout("not connected"));
        }, this.requestTimeout);
        this._waiters.add(w);
      });
    }

    /** Send `frame` with a fresh id; resolve with its ok/pong, reject on err. */
    async _request(frame, onOk, ws) {
      if (!ws) {
        await this._whenReady();
        ws = this._ws;
      }
      const id = this._nextId++;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this._pending.delete(id);
          reject(new RequestTimeout(frame.t));
        }, this.requestTimeout);
        this._pending.set(id, { resolve: resolve, reject: reject, onOk: onOk, timer: timer });
        try {
          ws.send(JSON.stringify(Object.assign({}, frame, { id: id })));
        } catch (err) {
          clearTimeout(timer);
          this._pending.delete(id);
          reject(new ConnectionLost(null, String(err && err.message)));
        }
      });
    }

    /**
     * Join a room; resolves with the ok {room, seq, epoch, recovered}. Rejoined after reconnects.
     * `token`: a room token, for rooms whose namespace requires one.
     */
    async join(room, token) {
      if (this._rooms.has(room)) throw new RequestFailed(409, "already joined");
      const state = { name: room, seq: null, epoch: null, joined: false, recovered: null, token: token || null };
      this._rooms.set(room, state);
      const frame = { t: "join", room: room };
      if (token) frame.token = token;
      try {
        return await this._request(frame, (ok) => this._joined(state, ok, false));
      } catch (err) {
        if (!state.joined && this._rooms.get(room) === state) this._rooms.delete(room);
        throw err;
      }
    }

    leave(room) {
      return this._request({ t: "leave", room: room }, () => this._rooms.delete(room));
    }

    /** Publish to a joined room; resolves with the seq assigned. */
    async publish(room, data) {
      const ok = await this._request({ t: "pub", room: room, data: data });
      return ok.seq;
    }

    /** Private message; resolves with {mid, online, queued}. */
    send(to, data) {
      return this._request({ t: "send", to: to, data: data });
    }

    /** Call a method of the application (its rpc hook); resolves with the result data. */
    async rpc(method, data) {
      const ok = await this._request({ t: "rpc", method: method, data: data === undefined ? null : data });
      return ok.data;
    }

    /** User ids in the room, across all nodes. */
    async presence(room) {
      const ok = await this._request({ t: "presence", room: room });
      return ok.users;
    }

    /** Round-trip time in milliseconds. */
    async ping() {
      await this._whenReady();
      const start = performance.now();
      await this._request({ t: "ping" });
      return performance.now() - start;
    }

    /** New access token for the same user; later reconnects use it when `token` was a string. */
    refresh(token) {
      return this._request({ t: "refresh", token: token }, () => {
        if (typeof this._tokenSource === "string") this._tokenSource = token;
      });
    }

    /** Acknowledge dms (needed only with autoAck: false). Best effort while disconnected. */
    ack(mid) {
      const mids = Array.isArray(mid) ? mid : [mid];
      for (const m of mids) this._rememberDm(m, true);
      this._sendAck(mids);
    }

    _sendAck(mids) {
      const ws = this._ws;
      if (!ws || !mids.length) return;
      try {
        ws.send(JSON.stringify({ t: "ack", mid: mids.length === 1 ? mids[0] : mids }));
      } catch (err) {
        // redelivered on the next connection, and acked again then
      }
    }

    _rememberDm(mid, acked) {
      const before = this._dms.get(mid) || false;
      this._dms.delete(mid);
      this._dms.set(mid, acked || before);
      while (this._dms.size > SEEN_DMS) this._dms.delete(this._dms.keys().next().value);
    }

    // -- inbound ----------------------------------------------------------------

    _dispatch(ws, frame) {
      if (ws === this._ws) this._lastSeen = Date.now();
      const t = frame.t;
      if (t === "ok" || t === "err" || t === "pong") {
        const p = this._pending.get(frame.id);
        if (!p) return;
        this._pending.delete(frame.id);
        clearTimeout(p.timer);
        if (t === "err") {
          p.reject(new RequestFailed(frame.code, frame.reason, frame.retry_after));
        } else {
          if (p.onOk) p.onOk(frame);
          p.resolve(frame);
        }
      } else if (t === "joined") {
        // a server-side room (rooms_auto claim, connect hook), listed in welcome
        let st = this._rooms.get(frame.room);
        if (!st) {
          st = { name: frame.room, seq: null, epoch: null, joined: false, recovered: null, serverSide: true };
          this._rooms.set(frame.room, st);
        }
        this._joined(st, frame, false);
      } else if (t === "msg") {
        const s = this._rooms.get(frame.room);
        if (!s || typeof frame.seq !== "number") return;
        if (typeof frame.epoch === "string" && frame.epoch !== s.epoch) {
          // the room's history was lost and its seq restarted: not duplicates
          s.epoch = frame.epoch;
          s.seq = null;
        }
        if (s.seq !== null && frame.seq <= s.seq) return; // replayed and already seen
        s.seq = frame.seq;
        this._emit("msg", frame);
      } else if (t === "left") {
        // a refreshed token no longer allows the room: forget it (no rejoin)
        if (this._rooms.delete(frame.room)) this._emit("left", frame);
      } else if (t === "presence") {
        if (this._rooms.has(frame.room)) this._emit("presence", frame);
      } else if (t === "dm") {
        const mid = frame.mid;
        if (this._dms.has(mid)) {
          if (this._dms.get(mid)) this._sendAck([mid]);
          return;
        }
        this._rememberDm(mid, false);
        const results = this._emit("dm", frame);
        if (this.autoAck) {
          Promise.all(results).then(
            () => this.ack(mid),
            () => {} // a failed handler: not acked, redelivered on the next connection
          );
        }
      }
    }
  }

  return {
    SquallClient: SquallClient,
    SquallError: SquallError,
    RequestFailed: RequestFailed,
    Closed: Closed,
    ConnectionLost: ConnectionLost,
    GaveUp: GaveUp,
    RequestTimeout: RequestTimeout,
    NO_RECONNECT: NO_RECONNECT,
    RESTART: RESTART,
    SUBPROTOCOL: SUBPROTOCOL,
    Backoff: Backoff,
    Attempts: Attempts,
    REFERENCE_BACKOFF: REFERENCE_BACKOFF,
    ceilingOf: ceilingOf,
    delayOf: delayOf,
    describeStatus: describeStatus,
    backoffCeiling: backoffCeiling,
    backoffDelay: backoffDelay,
  };
});
