// Type declarations of static/squall.js, the Squall v1 browser client (JSON subprotocol).
// Checked by `tsc --noEmit` against tests/ts/example.ts (tests/unit/test_js_client.py).
// Usable as a global (`<script src="/squall.js">` defines `Squall`) or as a CommonJS
// module (`const Squall = require("squall-client")`).

export = Squall;
export as namespace Squall;

declare namespace Squall {
  /** A frame as the server sends it (PROTOCOL.md): `t` names its type. */
  interface Frame {
    t: string;
    [field: string]: unknown;
  }

  interface Welcome extends Frame {
    t: "welcome";
    conn: string;
    uid: string;
    node: string;
    /** heartbeat interval, seconds */
    hb: number;
    /** token expiry, Unix ms */
    exp: number;
    /** the subprotocol in use (extension, docs/protocol.md) */
    subprotocol?: "squall.v1.json" | "squall.v1.msgpack";
    /** server-side rooms joined right after welcome, each confirmed by `joined` */
    rooms?: string[];
  }

  interface RoomMessage extends Frame {
    t: "msg";
    room: string;
    seq: number;
    epoch: string;
    from: string | null;
    ts: number;
    data: unknown;
  }

  interface DirectMessage extends Frame {
    t: "dm";
    mid: string;
    from: string | null;
    ts: number;
    data: unknown;
    offline?: boolean;
  }

  interface PresenceEvent extends Frame {
    t: "presence";
    room: string;
    uid: string;
    event: "join" | "leave";
  }

  interface JoinOk extends Frame {
    t: "ok";
    room: string;
    seq: number;
    epoch: string;
    recovered: boolean;
  }

  interface SendOk extends Frame {
    t: "ok";
    mid: string;
    online: boolean;
    queued: boolean;
  }

  /** Backoff policy, seconds (the Python client's client.backoff.Backoff). */
  interface BackoffOptions {
    base?: number;
    cap?: number;
    /** fraction of the ceiling that is random, 0..1 (1 = full jitter) */
    jitter?: number;
    /** consecutive failed tries before giving up; null = never */
    maxAttempts?: number | null;
    resetAfter?: number;
    restartDelay?: number;
  }

  type BackoffPolicy = Readonly<Required<BackoffOptions>>;

  type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";

  type StatusState = "connecting" | "open" | "retry" | "recovered" | "gave_up" | "closed";

  /** One state change (the Python client's client.events.StatusEvent). */
  interface StatusEvent {
    state: StatusState;
    attempt: number;
    delay: number | null;
    code: number | null;
    reason: string;
  }

  interface RoomState {
    seq: number | null;
    epoch: string | null;
    joined: boolean;
    recovered: boolean | null;
    /** a room token, sent again on rejoin */
    token?: string | null;
    /** a server-side room (rooms_auto claim, connect hook): the server rejoins it */
    serverSide?: boolean;
  }

  interface RejoinEvent {
    room: string;
    recovered?: boolean;
    seq?: number | null;
    error?: RequestFailed;
  }

  type TokenSource = string | (() => string | Promise<string>);

  interface ClientOptions {
    token: TokenSource;
    backoff?: BackoffOptions;
    autoAck?: boolean;
    /** ms */
    requestTimeout?: number;
    /** ms */
    connectTimeout?: number;
    random?: () => number;
    WebSocket?: typeof WebSocket;
  }

  interface EventMap {
    msg: (m: RoomMessage) => void;
    dm: (d: DirectMessage) => void | Promise<void>;
    presence: (p: PresenceEvent) => void;
    state: (state: State, info: { code?: number | null; reason?: string; delay?: number; attempt?: number }) => void;
    status: (event: StatusEvent) => void;
    welcome: (w: Welcome) => void;
    rejoin: (r: RejoinEvent) => void;
    closed: (error: Closed | null) => void;
  }

  class SquallError extends Error {}

  class RequestFailed extends SquallError {
    constructor(code: number, reason: string, retryAfter?: number | null);
    code: number;
    reason: string;
    retryAfter: number | null;
  }

  class Closed extends SquallError {
    constructor(code: number | null, reason?: string);
    code: number | null;
    reason: string;
  }

  class GaveUp extends Closed {
    constructor(attempts: number, code: number | null, reason?: string);
    attempts: number;
  }

  class ConnectionLost extends SquallError {
    constructor(code: number | null, reason?: string);
    code: number | null;
    reason: string;
  }

  class RequestTimeout extends SquallError {
    constructor(what: string);
  }

  class Attempts {
    constructor(policy: BackoffPolicy, random?: () => number);
    readonly policy: BackoffPolicy;
    attempt: number;
    readonly exhausted: boolean;
    /** seconds before the next try, or null: give up */
    nextDelay(): number | null;
    /** seconds before the try after a restart/drain close (count starts over) */
    restart(): number;
    reset(): void;
    connected(nowSeconds: number): void;
    disconnected(nowSeconds: number): void;
  }

  class SquallClient {
    constructor(url: string, options: ClientOptions);
    readonly url: string;
    readonly backoff: BackoffPolicy;
    readonly state: State;
    readonly connected: boolean;
    readonly rooms: Record<string, RoomState>;
    /** the last "status" event */
    status: StatusEvent | null;
    welcome: Welcome | null;
    connections: number;
    on<E extends keyof EventMap>(event: E, fn: EventMap[E]): () => void;
    off<E extends keyof EventMap>(event: E, fn: EventMap[E]): void;
    connect(): Promise<Welcome>;
    close(code?: number, reason?: string): void;
    /** `token`: a room token, for rooms whose namespace requires one */
    join(room: string, token?: string): Promise<JoinOk>;
    leave(room: string): Promise<Frame>;
    publish(room: string, data: unknown): Promise<number>;
    send(to: string, data: unknown): Promise<SendOk>;
    presence(room: string): Promise<string[]>;
    /** call a method of the application (its rpc hook); resolves with the result data */
    rpc(method: string, data?: unknown): Promise<unknown>;
    /** round trip, ms */
    ping(): Promise<number>;
    refresh(token: string): Promise<Frame>;
    ack(mid: string | string[]): void;
  }

  function Backoff(options?: BackoffOptions): BackoffPolicy;
  const REFERENCE_BACKOFF: BackoffPolicy;
  const NO_RECONNECT: ReadonlySet<number>;
  const RESTART: ReadonlySet<number>;
  const SUBPROTOCOL: "squall.v1.json";
  function ceilingOf(policy: BackoffPolicy, attempt: number): number;
  function delayOf(policy: BackoffPolicy, attempt: number, random: () => number): number;
  function describeStatus(event: StatusEvent): string;
  function backoffCeiling(attempt: number, base: number, cap: number): number;
  function backoffDelay(attempt: number, base: number, cap: number, random?: () => number): number;
}
