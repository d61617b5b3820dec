/*
 * dashboard.js: the live cluster dashboard (/dashboard.html). Plain ES2020, no build.
 *
 * Every 2 s it reads GET /api/stats (every live node's stats record, see
 * core/stats.py) with the admin token kept in sessionStorage, derives rates from
 * consecutive records of each node (counters are cumulative, `ts` is the node's
 * write time), keeps the last 15 minutes in memory and draws them with uPlot
 * (static/vendor/, MIT). A node that was seen and is missing from the latest answer
 * is marked "stale" in the table and the legends, and its lines stop.
 *
 * window.squallDashboard exposes the state for tests: points(), nodes(), charts.
 */
(function () {
  "use strict";

  const POLL_MS = 2000;
  const WINDOW_S = 15 * 60;
  const TOKEN_KEY = "squall.adminToken";
  const COLORS = ["#2f6fde", "#e8710a", "#1e8e3e", "#9334e6", "#d01884", "#12b5cb", "#c0392b", "#7c5800", "#3c4043", "#f538a0"];
  const CLUSTER_COLOR = "#1d2330";
  const CLOSE_NAMES = {
    1000: "normal", 1001: "going away", 1009: "too big", 1011: "internal", 1012: "restart",
    4000: "protocol", 4001: "auth", 4002: "expired", 4003: "forbidden", 4004: "auth timeout",
    4008: "rate limit", 4009: "replaced", 4010: "kicked", 4011: "slow consumer",
    4029: "too many", 4408: "no pong",
  };

  const STATUS_NAMES = {
    101: "accepted", 400: "bad request", 401: "unauthorized", 403: "forbidden",
    429: "too many", 503: "unavailable",
  };

  const $ = (id) => document.getElementById(id);
  const samples = []; // {t, nodes: {id: {conn, in, out, rtt, hs: {}, closes: {}, auth: {}}}}
  const known = new Map(); // id -> {color, record, prev, rates, seenAt, stale}
  const charts = {}; // name -> {plot, signature, el}
  let timer = null;
  let scope = "";

  // -- token ------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askToken(message) {
    $("auth").hidden = false;
    $("view").hidden = !samples.length;
    setStatus(message || "paste an admin token to see the cluster", !!message);
    $("token").focus();
  }

  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    $("auth").hidden = true;
    poll();
  });

  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(timer);
    askToken();
  });

  $("scope").addEventListener("change", (ev) => {
    scope = ev.target.value;
    draw();
  });

  function setStatus(text, bad) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
  }

  // -- polling ----------------------------------------------------------------

  async function poll() {
    clearTimeout(timer);
    const tok = token();
    if (!tok) return askToken();
    let body;
    try {
      const resp = await fetch("/api/stats", { headers: { Authorization: "Bearer " + tok }, cache: "no-store" });
      if (resp.status === 401 || resp.status === 403) {
        let why = "";
        try {
          why = (await resp.json()).message || "";
        } catch (e) {
          why = "";
        }
        sessionStorage.removeItem(TOKEN_KEY);
        return askToken("token refused (" + resp.status + (why ? ": " + why : "") + ")");
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      body = await resp.json();
    } catch (err) {
      setStatus("cannot read /api/stats: " + err.message + " (retrying)", true);
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    ingest(body, Date.now() / 1000);
    draw();
    setStatus("updated " + new Date().toLocaleTimeString() + " from node " + body.node.id);
    timer = setTimeout(poll, POLL_MS);
  }

  // -- data -------------------------------------------------------------------

  function rate(now, prev, dt) {
    return dt > 0 ? Math.max(0, (now - prev) / dt) : 0;
  }

  function rates(record, prev) {
    const out = { in: 0, out: 0, hs: {}, closes: {}, auth: {} };
    if (!prev || prev.started_at !== record.started_at) return out; // first, or restarted
    const dt = (record.ts - prev.ts) / 1000;
    out.in = rate(record.frames_in, prev.frames_in, dt);
    out.out = rate(record.frames_out, prev.frames_out, dt);
    for (const key of ["handshakes", "closes", "auth_failures"]) {
      const target = key === "handshakes" ? out.hs : key === "closes" ? out.closes : out.auth;
      const now = record[key] || {};
      const before = prev[key] || {};
      for (const label of Object.keys(now)) target[label] = rate(now[label], before[label] || 0, dt);
    }
    return out;
  }

  function ingest(body, t) {
    const present = new Set();
    const sample = { t: t, nodes: {} };
    for (const record of body.nodes || []) {
      present.add(record.node);
      let k = known.get(record.node);
      if (!k) {
        k = { color: COLORS[known.size % COLORS.length], record: null, prev: null, rates: rates(record, null) };
        known.set(record.node, k);
        const opt = document.createElement("option");
        opt.value = record.node;
        opt.textContent = "node " + record.node;
        $("scope").appendChild(opt);
      }
      if (!k.record || record.ts !== k.record.ts) {
        k.prev = k.record;
        k.record = record;
        k.rates = rates(record, k.prev);
      }
      k.seenAt = t;
      k.stale = false;
      sample.nodes[record.node] = {
        conn: record.connections,
        in: k.rates.in,
        out: k.rates.out,
        rtt: record.backend_rtt_ms,
        hs: k.rates.hs,
        closes: k.rates.closes,
        auth: k.rates.auth,
      };
    }
    for (const [id, k] of known) if (!present.has(id)) k.stale = true;
    samples.push(sample);
    while (samples.length && samples[0].t < t - WINDOW_S) samples.shift();
    // forget nodes gone for the whole window
    for (const [id, k] of known) {
      if (k.stale && k.seenAt < t - WINDOW_S) known.delete(id);
    }
    renderTotals(body.totals || {});
    renderNodes(t);
  }

  // -- table and totals ---------------------------------------------------------

  function fmt(n, digits) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits || 0 });
  }

  function uptime(s) {
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(1) + " d";
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function badge(td, text, cls) {
    const b = document.createElement("span");
    b.className = "badge " + cls;
    b.textContent = text;
    td.appendChild(b);
  }

  function renderNodes(t) {
    const body = $("nodes");
    body.textContent = "";
    for (const [id, k] of [...known].sort((a, b) => a[0].localeCompare(b[0]))) {
      const r = k.record;
      const row = document.createElement("tr");
      row.dataset.node = id;
      if (k.stale) row.className = "stale";
      const name = cell(row, "");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = k.color;
      name.appendChild(sw);
      name.appendChild(document.createTextNode(id));
      if (k.stale) badge(name, "stale", "bad");
      cell(row, r.version);
      cell(row, uptime(r.uptime_s), "num");
      const ready = cell(row, "");
      if (k.stale) badge(ready, "gone", "bad");
      else if (r.draining) badge(ready, "draining", "warn");
      else badge(ready, r.ready ? "ready" : "not ready", r.ready ? "ok" : "bad");
      cell(row, fmt(r.connections) + " / " + fmt(r.max_connections), "num");
      cell(row, fmt(r.users), "num");
      cell(row, fmt(r.rooms), "num");
      cell(row, k.stale ? "–" : fmt(k.rates.in, 1), "num");
      cell(row, k.stale ? "–" : fmt(k.rates.out, 1), "num");
      cell(row, r.backend_rtt_ms === null ? "–" : fmt(r.backend_rtt_ms, 2) + " ms", "num");
      cell(row, k.stale ? Math.round(t - k.seenAt) + " s ago" : "now", "num");
      body.appendChild(row);
    }
  }

  function renderTotals(totals) {
    const sum = (m) => Object.values(m || {}).reduce((a, b) => a + b, 0);
    const items = [
      ["nodes", fmt(totals.nodes) + (totals.ready !== totals.nodes ? " (" + fmt(totals.ready) + " ready)" : "")],
      ["connections", fmt(totals.connections)],
      ["users", fmt(totals.users)],
      ["rooms (sum)", fmt(totals.rooms)],
      ["frames in", fmt(totals.frames_in)],
      ["frames out", fmt(totals.frames_out)],
      ["auth failures", fmt(sum(totals.auth_failures))],
      ["worst RTT", totals.backend_rtt_ms === null ? "–" : fmt(totals.backend_rtt_ms, 2) + " ms"],
    ];
    const box = $("totals");
    box.textContent = "";
    for (const [label, value] of items) {
      const div = document.createElement("div");
      div.className = "total";
      div.innerHTML = '<div class="label"></div><div class="value"></div>';
      div.firstChild.textContent = label;
      div.lastChild.textContent = value;
      box.appendChild(div);
    }
  }

  // -- charts -------------------------------------------------------------------

  function nodeIds() {
    return [...known.keys()].sort();
  }

  /** [{label, color, values}] per node (plus the cluster sum when `total`). */
  function perNode(pick, total) {
    const series = nodeIds().map((id) => ({
      label: id + (known.get(id).stale ? " (stale)" : ""),
      color: known.get(id).color,
      values: samples.map((s) => (s.nodes[id] ? pick(s.nodes[id]) : null)),
    }));
    if (total) {
      series.unshift({
        label: "cluster",
        color: CLUSTER_COLOR,
        width: 2.5,
        values: samples.map((s) => {
          const vals = Object.values(s.nodes).map(pick).filter((v) => v !== null && v !== undefined);
          return vals.length ? vals.reduce((a, b) => a + b, 0) : null;
        }),
      });
    }
    return series;
  }

  /** [{label, color, values}] per label of a map field, over `scope` (cluster or a node). */
  function perLabel(field, names) {
    const labels = new Set();
    for (const s of samples) {
      for (const [id, n] of Object.entries(s.nodes)) {
        if (!scope || id === scope) Object.keys(n[field]).forEach((l) => labels.add(l));
      }
    }
    return [...labels].sort().map((label, i) => ({
      label: names && names[label] ? label + " " + names[label] : label,
      color: COLORS[i % COLORS.length],
      values: samples.map((s) => {
        let total = 0;
        let any = false;
        for (const [id, n] of Object.entries(s.nodes)) {
          if (scope && id !== scope) continue;
          any = true;
          total += n[field][label] || 0;
        }
        return any ? total : null;
      }),
    }));
  }

  const CHARTS = [
    ["connections", "Connections", () => perNode((n) => n.conn, true), ""],
    ["frames_in", "Frames in / s", () => perNode((n) => n.in, true), "/s"],
    ["frames_out", "Frames out / s", () => perNode((n) => n.out, true), "/s"],
    ["handshakes", "Handshakes / s by status", () => perLabel("hs", STATUS_NAMES), "/s"],
    ["closes", "Closes / s by code", () => perLabel("closes", CLOSE_NAMES), "/s"],
    ["auth", "Auth failures / s by reason", () => perLabel("auth"), "/s"],
    ["rtt", "Redis round trip (ms)", () => perNode((n) => n.rtt, false), " ms"],
  ];

  function chartWidth(el) {
    return Math.max(200, el.clientWidth);
  }

  function chartHeight() {
    return window.innerWidth < 600 ? 170 : 210;
  }

  function draw() {
    $("view").hidden = false;
    const box = $("charts");
    const xs = samples.map((s) => s.t);
    for (const [name, title, build, unit] of CHARTS) {
      let c = charts[name];
      if (!c) {
        const wrap = document.createElement("section");
        wrap.className = "chart";
        wrap.dataset.chart = name;
        wrap.innerHTML = "<h2></h2><div class=\"plot\"></div>";
        wrap.firstChild.textContent = title;
        box.appendChild(wrap);
        c = charts[name] = { el: wrap.lastChild, plot: null, signature: "" };
      }
      const series = build();
      const signature = series.map((s) => s.label + s.color).join("|");
      const data = [xs, ...series.map((s) => s.values)];
      if (!series.length) {
        if (c.plot) c.plot.destroy();
        c.plot = null;
        c.signature = "";
        c.el.innerHTML = '<p class="empty">none in the last 15 minutes</p>';
        continue;
      }
      if (c.plot && c.signature === signature) {
        c.plot.setData(data);
        continue;
      }
      if (c.plot) c.plot.destroy();
      c.el.textContent = "";
      c.signature = signature;
      c.plot = new uPlot(
        {
          width: chartWidth(c.el),
          height: chartHeight(),
          cursor: { drag: { x: false, y: false } },
          scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
          axes: [{}, { size: 56, values: (u, vals) => vals.map((v) => fmt(v, 2) + unit) }],
          series: [
            {},
            ...series.map((s) => ({
              label: s.label,
              stroke: s.color,
              width: s.width || 1.5,
              spanGaps: false,
              value: (u, v) => (v === null || v === undefined ? "–" : fmt(v, 2) + unit),
            })),
          ],
        },
        data,
        c.el
      );
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const c of Object.values(charts)) {
        if (c.plot) c.plot.setSize({ width: chartWidth(c.el), height: chartHeight() });
      }
    }, 100);
  });

  window.squallDashboard = {
    charts: charts,
    points: () => samples.length,
    nodes: () =>
      [...known].map(([id, k]) => ({ id: id, stale: k.stale, connections: k.record.connections })),
    series: (name) => (charts[name] && charts[name].plot ? charts[name].plot.data : null),
  };

  if (token()) {
    $("auth").hidden = true;
    poll();
  } else {
    askToken();
  }
})();
