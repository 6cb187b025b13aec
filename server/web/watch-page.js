// The watch page: one room, live, as a spectator. Everything it shows is drawn at most
// once per animation frame, however many DIFFs arrive in between, so a room at
// thousands of diffs per second does not freeze the tab. window.statecastWatch exposes
// what the page measures (frames per second, renders, the run of seqs applied) for the
// browser tests, in counters of a fixed size however long the page stays open.

import { connect } from "/static/statecast.js";
import { changedPath } from "/static/watch.js";

const LOG_ROWS = 200;
const TREE_CHILDREN = 200;
const MAX_PATHS = 64; // distinct changed paths per frame beyond which the tree is redrawn whole
const GRID_TYPE = /:GridRoom$/;

const $ = (id) => document.getElementById(id);
const hash = new URLSearchParams(location.hash.slice(1));
const token = hash.get("token");
const roomName = decodeURIComponent(location.pathname.split("/")[2] ?? "");
const wsPort = document.querySelector('meta[name="statecast-ws-port"]').content;
const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
const ownWsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${host}:${wsPort}/rooms/${encodeURIComponent(roomName)}`;

/**
 * The endpoint: this page's own server, or a `#ws=` override on this page's own host (a
 * proxy in front of it, say). An override naming another host is ignored and said, so a
 * link cannot make the page send its token to, or show a state from, another server.
 */
function chooseWsUrl() {
  const asked = hash.get("ws");
  if (asked === null) return { url: ownWsUrl, note: "" };
  let parsed = null;
  try {
    parsed = new URL(asked);
  } catch {
    // not a URL: ignored below
  }
  if (parsed && (parsed.protocol === "ws:" || parsed.protocol === "wss:") && parsed.hostname === new URL(location.href).hostname) {
    return { url: asked, note: `connected to ${asked} (from #ws=)` };
  }
  return { url: ownWsUrl, note: `ignored #ws=${asked}: this page connects only to its own host` };
}

const { url: wsUrl, note: wsNote } = chooseWsUrl();

/** `#view=` as JSON path prefixes; a malformed one is said and the whole room shown. */
function parseView(text) {
  if (text === null || text === "") return null;
  try {
    const view = JSON.parse(text);
    if (Array.isArray(view) && view.length > 0 && view.every((p) => Array.isArray(p) && p.every((k) => typeof k === "string"))) {
      return view;
    }
  } catch {
    // said below
  }
  queueMicrotask(() =>
    showNotice(`ignored #view=${text}: a view is JSON path prefixes, e.g. #view=[["board"],["players","p7"]]`),
  );
  return null;
}

function describeView(view) {
  if (view === null) return "whole room";
  return view.map((p) => (p.length === 0 ? "(root)" : p.join(" › "))).join(", ");
}

document.title = `${roomName} · statecast`;
$("room-name").textContent = roomName;
if (token) $("home").href = `/#token=${encodeURIComponent(token)}`;

/**
 * What the tests read. `applied` counts DIFFs and follows their seqs: `from` is the seq of
 * the last SNAPSHOT, `to` the last seq applied, `breaks` how many DIFFs did not follow the
 * one before by exactly one (a gap or a duplicate would show there). `fullRenders` counts
 * redraws of the whole tree.
 */
const measure = {
  fps: 0,
  frames: 0,
  renders: 0,
  fullRenders: 0,
  snapshots: 0,
  applied: { count: 0, from: null, to: null, breaks: 0 },
  room: null,
};
window.statecastWatch = measure;

// --- frame-rate meter: counts animation frames, independently of rendering ----------
let frameTimes = [];
function tick(now) {
  measure.frames += 1;
  frameTimes.push(now);
  while (frameTimes.length && frameTimes[0] < now - 1000) frameTimes.shift();
  measure.fps = frameTimes.length;
  requestAnimationFrame(tick);
}
requestAnimationFrame(tick);

// --- rendering, coalesced to one per frame -----------------------------------------
const dirty = { paths: new Map(), log: [], full: true }; // paths: key -> path, each once
let scheduled = false;
function invalidate() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(render);
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

async function main() {
  $("status").title = wsUrl;
  if (wsNote) showNotice(wsNote);
  let info = null;
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const resp = await fetch(`/rooms/${encodeURIComponent(roomName)}`, { headers });
    if (resp.status === 404) {
      showNotice(`There is no room named “${roomName}”.`);
      setStatus("closed");
      return;
    }
    if (resp.ok) info = await resp.json();
    else showNotice(`${resp.status}: ${(await resp.json().catch(() => ({}))).message ?? "refused"}`);
  } catch {
    // the listing is a nicety; the WebSocket tells the real story
  }
  $("type").textContent = info ? info.type.split(":").pop() : "–";
  $("type").title = info ? info.type : "";
  const isGrid = info !== null && GRID_TYPE.test(info.type);

  // #netchange=0: catch up by every diff (replay) instead of the net change.
  const netChange = hash.get("netchange") !== "0";
  // #view=[["board"],["players","p7"]]: watch only that part of the room (§5.12).
  const view = parseView(hash.get("view"));
  $("view").textContent = describeView(view);
  const room = connect(wsUrl, { role: "spectator", token: token ?? undefined, netChange, view });
  measure.room = room;
  room.on("status", invalidate);
  room.on("welcome", invalidate);
  room.on("snapshot", (_state, _epoch, seq) => {
    measure.snapshots += 1;
    measure.applied.from = measure.applied.to = seq;
    dirty.full = true;
    dirty.paths.clear();
    invalidate();
  });
  room.on("change", (ops, seq, bytes) => {
    const applied = measure.applied;
    applied.count += 1;
    if (seq !== applied.to + 1) applied.breaks += 1;
    applied.to = seq;
    if (!dirty.full) {
      for (const op of ops) {
        const path = changedPath(op);
        dirty.paths.set(keyOf(path), path);
      }
    }
    // Too many places changed since the last frame (or no frame for a while, in a hidden
    // tab): redraw whole instead of queueing every path.
    if (dirty.paths.size > MAX_PATHS) {
      dirty.full = true;
      dirty.paths.clear();
    }
    dirty.log.push({ seq, ops, bytes });
    if (dirty.log.length > LOG_ROWS) dirty.log.splice(0, dirty.log.length - LOG_ROWS);
    invalidate();
  });
  room.on("error", (err) => {
    if (room.status === "closed") {
      showNotice(`Closed by the server (${room.closeCode}): ${err.message}`);
      invalidate();
    }
  });
  $("drop").addEventListener("click", () => room.drop());
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").textContent = paused ? "Resume" : "Pause";
  });
  board.enabled = isGrid;
  $("board-wrap").hidden = !isGrid;
  setInterval(() => sampleRates(room), 250);
}

// --- status and rates ------------------------------------------------------------
let paused = false;
const samples = [];
function sampleRates(room) {
  const now = performance.now();
  const s = room.stats;
  samples.push({ now, diffs: s.diffs, bytes: s.bytes });
  while (samples.length > 2 && samples[0].now < now - 2000) samples.shift();
  invalidate();
}

function rates() {
  if (samples.length < 2) return { diffs: 0, bytes: 0 };
  const a = samples[0];
  const b = samples[samples.length - 1];
  const dt = (b.now - a.now) / 1000 || 1;
  return { diffs: (b.diffs - a.diffs) / dt, bytes: (b.bytes - a.bytes) / dt };
}

function human(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${Math.round(n)} B`;
}

function setStatus(status) {
  const pill = $("status");
  pill.textContent = status;
  pill.className = `pill ${status}`;
}

function renderStatus(room) {
  setStatus(room.status);
  $("epoch").textContent = room.epoch ?? "–";
  $("epoch").title = room.epoch ?? "";
  $("seq").textContent = room.epoch === null ? "–" : String(room.seq);
  $("sync").textContent = room.lastSync ?? "–";
  $("reconnects").textContent = String(room.reconnects);
  const r = rates();
  $("rate").textContent = r.diffs >= 100 ? r.diffs.toFixed(0) : r.diffs.toFixed(1);
  $("bytes").textContent = `${human(r.bytes)}`;
}

// --- the state tree ----------------------------------------------------------------
const nodes = new Map(); // path key -> element of that path's row
const keyOf = (path) => JSON.stringify(path);

function scalar(value) {
  const span = document.createElement("span");
  if (typeof value === "string") {
    span.className = "str";
    span.textContent = JSON.stringify(value.length > 200 ? `${value.slice(0, 200)}…` : value);
  } else if (typeof value === "number") {
    span.className = "num";
    span.textContent = String(value);
  } else {
    span.className = "lit";
    span.textContent = value === null ? "null" : String(value);
  }
  return span;
}

function buildNode(key, value, path) {
  const el = document.createElement("div");
  el.className = "node";
  const row = document.createElement("div");
  row.className = "row";
  if (key !== null) {
    const k = document.createElement("span");
    k.className = "key";
    k.textContent = typeof key === "number" ? `[${key}]` : key;
    const sep = document.createElement("span");
    sep.className = "sep";
    sep.textContent = ": ";
    row.append(k, sep);
  }
  el.append(row);
  el.pathKey = keyOf(path);
  nodes.set(el.pathKey, el);
  if (value !== null && typeof value === "object") {
    const isList = Array.isArray(value);
    const keys = isList ? null : Object.keys(value);
    const count = isList ? value.length : keys.length;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = isList ? `list (${count})` : `map (${count})`;
    row.append(meta);
    const children = document.createElement("div");
    children.className = "children";
    // Only the first TREE_CHILDREN are drawn, so only they are visited: a long list that
    // grows at every diff costs the same per frame as a short one.
    for (let i = 0; i < Math.min(count, TREE_CHILDREN); i++) {
      const k = isList ? i : keys[i];
      children.append(buildNode(k, value[k], [...path, k]));
    }
    if (count > TREE_CHILDREN) {
      const more = document.createElement("div");
      more.className = "meta";
      more.textContent = `… ${count - TREE_CHILDREN} more`;
      children.append(more);
    }
    el.append(children);
  } else {
    row.append(scalar(value));
  }
  return el;
}

function valueAt(state, path) {
  let node = state;
  for (const seg of path) {
    if (node === null || typeof node !== "object" || !(seg in node)) return undefined;
    node = node[seg];
  }
  return node;
}

function rebuild(path, state) {
  const el = nodes.get(keyOf(path));
  if (!el) return false;
  const value = path.length === 0 ? state : valueAt(state, path);
  if (value === undefined) return false;
  for (const child of el.querySelectorAll(".node")) nodes.delete(child.pathKey);
  const fresh = buildNode(path.length ? path[path.length - 1] : null, value, path);
  el.replaceWith(fresh);
  return true;
}

function renderTree(room, full, paths) {
  const tree = $("tree");
  const state = room.state;
  if (state === null) return;
  if (full) {
    measure.fullRenders += 1;
    nodes.clear();
    tree.replaceChildren(buildNode(null, state, []));
    return;
  }
  // Rebuild the container of each changed path (its parent), once per frame.
  const parents = new Map();
  for (const p of paths) {
    for (let n = p.length - 1; n >= 0; n--) {
      const parent = p.slice(0, n);
      if (nodes.has(keyOf(parent))) {
        parents.set(keyOf(parent), parent);
        break;
      }
    }
  }
  // Outermost first, skipping any inside one already rebuilt.
  const done = [];
  for (const parent of [...parents.values()].sort((a, b) => a.length - b.length)) {
    if (done.some((d) => d.every((seg, i) => seg === parent[i]))) continue;
    if (rebuild(parent, state)) done.push(parent);
  }
  flashAll(paths);
}

function flashAll(paths) {
  const seen = new Set();
  for (const p of paths) {
    for (let n = p.length; n >= 0; n--) {
      const key = keyOf(p.slice(0, n));
      const el = nodes.get(key);
      if (el) {
        if (!seen.has(key)) {
          seen.add(key);
          el.firstChild.animate([{ background: "var(--flash)" }, { background: "transparent" }], {
            duration: 700,
            easing: "ease-out",
          });
        }
        break;
      }
    }
  }
}

// --- the board (grid rooms) -------------------------------------------------------
const board = { enabled: false, cells: [], size: null };

function colour(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${h % 360} 62% 48%)`;
}

function renderBoard(state) {
  const size = Array.isArray(state?.size) ? state.size : null;
  if (!size) return;
  const [w, h] = size;
  const el = $("board");
  if (board.size?.[0] !== w || board.size?.[1] !== h) {
    board.size = [w, h];
    el.style.gridTemplateColumns = `repeat(${w}, 26px)`;
    board.cells = [];
    el.replaceChildren();
    for (let i = 0; i < w * h; i++) {
      const cell = document.createElement("div");
      cell.className = "cell";
      board.cells.push(cell);
      el.append(cell);
    }
  }
  for (const cell of board.cells) {
    cell.textContent = "";
    cell.style.background = "";
    cell.title = "";
  }
  for (const [id, pos] of Object.entries(state.agents ?? {})) {
    const cell = board.cells[pos?.y * w + pos?.x];
    if (!cell) continue;
    cell.textContent = id.slice(0, 2);
    cell.style.background = colour(id);
    cell.title = `${id} (${pos.x}, ${pos.y})`;
  }
}

// --- the DIFF log ------------------------------------------------------------------
function renderLog(entries) {
  const body = $("log");
  const rows = [];
  for (const { seq, ops, bytes } of entries.slice(-LOG_ROWS)) {
    const tr = document.createElement("tr");
    const text = JSON.stringify(ops);
    tr.innerHTML = '<td class="seq"></td><td class="ops"></td><td class="bytes"></td>';
    tr.children[0].textContent = String(seq);
    tr.children[1].textContent = text.length > 240 ? `${text.slice(0, 240)}…` : text;
    tr.children[2].textContent = `${bytes} B`;
    rows.push(tr);
  }
  body.prepend(...rows.reverse());
  while (body.childElementCount > LOG_ROWS) body.lastElementChild.remove();
}

// --- the frame ---------------------------------------------------------------------
function render() {
  scheduled = false;
  const room = measure.room;
  if (!room) return;
  measure.renders += 1;
  renderStatus(room);
  if (dirty.full || dirty.paths.size) {
    renderTree(room, dirty.full, [...dirty.paths.values()]);
    if (board.enabled) renderBoard(room.state);
  }
  if (!paused && dirty.log.length) {
    renderLog(dirty.log);
    dirty.log = [];
  }
  dirty.full = false;
  dirty.paths.clear();
}

main();
