// The watch page: one room, live, as a spectator. Everything it shows is drawn at most
// once per animation frame, however many DIFFs arrive in between, so a room at
// thousands of diffs per second does not freeze the tab. window.statecastWatch exposes
// what the page measures (frames per second, renders) for the browser tests.

import { connect } from "/static/statecast.js";
import { changedPath } from "/static/watch.js";

const LOG_ROWS = 200;
const TREE_CHILDREN = 200;
const GRID_TYPE = /:GridRoom$/;

const $ = (id) => document.getElementById(id);
const hash = new URLSearchParams(location.hash.slice(1));
const token = hash.get("token");
const roomName = decodeURIComponent(location.pathname.split("/")[2] ?? "");
const wsPort = document.querySelector('meta[name="statecast-ws-port"]').content;
const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
const wsUrl =
  hash.get("ws") ?? `${location.protocol === "https:" ? "wss" : "ws"}://${host}:${wsPort}/rooms/${encodeURIComponent(roomName)}`;

document.title = `${roomName} · statecast`;
$("room-name").textContent = roomName;
if (token) $("home").href = `/#token=${encodeURIComponent(token)}`;

/** What the tests read: frames drawn per second, renders, every applied seq. */
const measure = {
  fps: 0,
  frames: 0,
  renders: 0,
  applied: [],
  snapshots: [],
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
const dirty = { tree: null, paths: [], log: [], status: true, full: true };
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

  const room = connect(wsUrl, { role: "spectator", token: token ?? undefined });
  measure.room = room;
  room.on("status", () => {
    dirty.status = true;
    invalidate();
  });
  room.on("welcome", () => {
    dirty.status = true;
    invalidate();
  });
  room.on("snapshot", (_state, _epoch, seq) => {
    measure.snapshots.push(seq);
    dirty.full = true;
    invalidate();
  });
  room.on("change", (ops, seq, bytes) => {
    measure.applied.push(seq);
    if (!dirty.full) for (const op of ops) dirty.paths.push(changedPath(op));
    dirty.log.push({ seq, ops, bytes });
    if (dirty.log.length > LOG_ROWS) dirty.log.splice(0, dirty.log.length - LOG_ROWS);
    invalidate();
  });
  room.on("error", (err) => {
    if (room.status === "closed") {
      showNotice(`Closed by the server (${room.closeCode}): ${err.message}`);
      dirty.status = true;
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
  dirty.status = true;
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
    const entries = isList ? value.map((v, i) => [i, v]) : Object.entries(value);
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = isList ? `list (${entries.length})` : `map (${entries.length})`;
    row.append(meta);
    const children = document.createElement("div");
    children.className = "children";
    for (const [k, v] of entries.slice(0, TREE_CHILDREN)) children.append(buildNode(k, v, [...path, k]));
    if (entries.length > TREE_CHILDREN) {
      const more = document.createElement("div");
      more.className = "meta";
      more.textContent = `… ${entries.length - TREE_CHILDREN} more`;
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
  if (full || paths.length > 64) {
    nodes.clear();
    tree.replaceChildren(buildNode(null, state, []));
    if (!full) flashAll(paths);
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
  if (dirty.status) renderStatus(room);
  if (dirty.full || dirty.paths.length) {
    renderTree(room, dirty.full, dirty.paths);
    if (board.enabled) renderBoard(room.state);
  }
  if (!paused && dirty.log.length) {
    renderLog(dirty.log);
    dirty.log = [];
  }
  dirty.status = false;
  dirty.full = false;
  dirty.paths = [];
}

main();
