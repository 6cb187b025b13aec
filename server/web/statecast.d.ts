// Types for statecast.js (served at /static/statecast.js). Hand-written; the module has no build step.

/** A state value: what a room's state is made of (JSON-compatible, ints exact within ±2^53). */
export type Value = null | boolean | number | string | Value[] | { [key: string]: Value };
export type State = { [key: string]: Value };
export type Path = (string | number)[];
/** [0, path, value] set · [1, path] del · [2, path, value] ins */
export type Op = [0, Path, Value] | [1, Path] | [2, Path, Value];

export type Role = "agent" | "spectator";
export type SyncKind = "snapshot" | "replay" | "current" | "patch";
export type Status = "connecting" | "syncing" | "live" | "resyncing" | "reconnecting" | "closed";

export interface Welcome {
  epoch: string;
  seq: number;
  role: Role;
  client: string | null;
  acked: number;
  sync: SyncKind;
  /** statecast extension: the largest message the server accepts, in bytes. */
  max_message?: number;
}

export interface ConnectOptions {
  /** Default "agent". Spectators only read. */
  role?: Role;
  /**
   * The agent's stable client id. Default: one claimed for this tab (sessionStorage, held by
   * a Web Lock while the Room runs), kept across reloads; a duplicated tab, or a second Room
   * in this tab, mints its own. Without Web Locks (an insecure origin), a fresh id per Room.
   */
  client?: string;
  /** A bearer token (--auth jwt). */
  token?: string;
  /** Called for a token before the first connection (when `token` is absent) and after close 4001. */
  getToken?: () => string | Promise<string>;
  /**
   * false: never reconnect. Or the backoff's settings in milliseconds: the full-jitter base and
   * cap (50, 5000), the wait added after close 4029 (1000), and how long a connection must
   * stay up after its WELCOME before the backoff starts again from the base (10000).
   */
  reconnect?:
    | boolean
    | { baseDelay?: number; maxDelay?: number; rateLimitedDelay?: number; stableAfter?: number };
  /**
   * Catch up by the net change (a PATCH, docs/protocol.md §5.11) when that is smallest
   * (default true). false: a resume gets every diff (replay) or a SNAPSHOT, as for a client
   * that must see each change, a changelog say.
   */
  netChange?: boolean;
  /**
   * The part of the room to see (docs/protocol.md §5.12): path prefixes such as
   * [["board"], ["players", "p7"]]. The state then holds only what is at or under them,
   * and changes come only when they change. Default: all this connection may see.
   */
  view?: string[][] | null;
  /** A WebSocket constructor (default globalThis.WebSocket; in Node 20, e.g. the `ws` package's). */
  WebSocket?: new (url: string) => WebSocket;
}

export interface Stats {
  /** DIFFs applied. */
  diffs: number;
  /** DIFFs ignored because their seq was not above the client's. */
  duplicates: number;
  /** Gaps seen (each answered by one RESYNC). */
  gaps: number;
  /** PATCHes applied: catch-ups by the net change (docs/protocol.md §5.11), one "change" each. */
  patches: number;
  frames: number;
  bytes: number;
  reconnects: number;
}

export interface RoomSnapshot {
  readonly state: State | null;
  readonly epoch: string | null;
  readonly seq: number;
  readonly status: Status;
}

/** An action the room refused (`code`: its ERROR code), or "closed" / "taken_over" / "forbidden". */
export class StatecastError extends Error {
  code: string;
  aid?: number;
  closeCode?: number;
}

export class OpError extends Error {
  code: "invalid" | "too_large";
}

export class ProtocolError extends Error {
  closeCode: number;
}

export interface EventMap {
  /** After a DIFF was applied: its ops, its seq and its encoded size in bytes. */
  change: (ops: Op[], seq: number, bytes: number) => void;
  /** After a SNAPSHOT replaced the state. */
  snapshot: (state: State, epoch: string, seq: number) => void;
  status: (status: Status) => void;
  welcome: (welcome: Welcome) => void;
  /** A callback that threw, a server notice (ERROR with aid nil), a protocol error, or the final close. */
  error: (error: Error) => void;
  /** After any change of state or status (what subscribe() listens to). */
  update: () => void;
}

export class Room {
  /** The URL of the current (or next) connection: one of `urls`. */
  readonly url: string;
  /** The largest message the server accepts (its WELCOME's max_message), or null before it; act() refuses a larger action with "too_large". */
  readonly maxMessage: number | null;
  /** Every URL given to connect(); a connection that ends moves on to the next (round the list). */
  readonly urls: readonly string[];
  readonly role: Role;
  /** The state at `seq` (null until the first SNAPSHOT). Updated in place: read, don't write. */
  readonly state: State | null;
  readonly epoch: string | null;
  readonly seq: number;
  readonly status: Status;
  readonly client: string | null;
  /** The last WELCOME's sync kind. */
  readonly lastSync: SyncKind | null;
  /** How many times the client came back (WELCOMEs after the first). */
  readonly reconnects: number;
  /** The close code of the last connection, once one has closed. */
  readonly closeCode: number | null;
  readonly stats: Stats;
  /** Aids sent and not yet answered. */
  readonly pending: number[];
  /** Resolves on the first WELCOME; rejects if the client stops for good before one. */
  readonly ready: Promise<Welcome>;

  on<K extends keyof EventMap>(event: K, callback: EventMap[K]): () => void;
  /** Calls back with (value, previous, path) when a value under the pattern changes ("players/*\/hp"). */
  watch(
    pattern: string | Path,
    callback: (value: Value | undefined, previous: Value | undefined, path: Path) => void,
  ): () => void;
  /**
   * Resolves with the action's diff seq, or null when it had been processed while away.
   * Rejects with a StatecastError: the ERROR code, or once stopped the reason it stopped
   * ("taken_over" after 4009, "closed" after close() or another final close code).
   */
  act(name: string, args?: unknown): Promise<number | null>;
  /**
   * Resolves with what the action's handler returned (null if nothing): the answer its ACK
   * carries (docs/protocol.md §5.8); an action sent again after a reconnect gets the same
   * answer. Rejects as act() does, and with code "answer_lost" when the action took effect
   * while the client was away and a later one of its actions did too.
   */
  call(name: string, args?: unknown): Promise<Value | null>;
  /** For React's useSyncExternalStore. */
  subscribe(callback: () => void): () => void;
  getSnapshot(): RoomSnapshot;
  /** Drop the connection as a network fault would: the client reconnects and resumes. */
  /** See `view` from now on (null: all this connection may see); the state becomes the new view's at once. */
  setView(view: string[][] | null): void;
  /** The view asked for: path prefixes, or true for all this connection may see. */
  readonly view: string[][] | true;
  drop(): void;
  /** Stop for good. */
  close(): void;
}

/** `url` may be a list: the same room on each node of a cluster, tried in turn. */
export function connect(url: string | readonly string[], options?: ConnectOptions): Room;
export function applyOps(state: State, ops: Op[], maxDepth?: number): void;
export class ClientSync {}
