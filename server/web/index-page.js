// The room listing: GET /rooms a page at a time, refreshed every two seconds.
//
// Only the answer to the latest request is ever shown: a click on "Next page" or
// "First page" starts a request of its own (aborting the one in flight), and an answer
// that arrives after a newer request started is dropped, so a slow answer for the old
// page never overwrites the new one. The periodic refresh starts nothing while a request
// is in flight. window.statecastRooms counts answers shown and stale answers dropped.

const PAGE = 50;
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const fragment = token ? `#token=${encodeURIComponent(token)}` : "";
let after = "";
let next = null;
/** The request in flight ({controller}), or null. */
let current = null;
const measures = { shown: 0, stale: 0 };
window.statecastRooms = measures;

function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function refresh() {
  current?.controller.abort();
  const request = (current = { controller: new AbortController() });
  try {
    await load(request);
  } finally {
    if (current === request) current = null;
  }
}

async function load(request) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (after) query.set("after", after);
  const stale = () => {
    if (current === request) return false;
    measures.stale += 1;
    return true;
  };
  let body;
  try {
    const resp = await fetch(`/rooms?${query}`, { headers, signal: request.controller.signal });
    body = await resp.json();
    if (stale()) return;
    if (!resp.ok) {
      $("notice").textContent = `${resp.status} ${body.code}: ${body.message}` +
        (resp.status === 401 ? " (open this page as /#token=YOUR_TOKEN)" : "");
      $("notice").hidden = false;
      return;
    }
  } catch (err) {
    if (stale()) return;
    $("notice").textContent = `The server did not answer: ${err.message}`;
    $("notice").hidden = false;
    return;
  }
  $("notice").hidden = true;
  measures.shown += 1;
  const rows = body.rooms.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.room = r.room;
    const name = document.createElement("td");
    const link = document.createElement("a");
    link.href = `/rooms/${encodeURIComponent(r.room)}/watch${fragment}`;
    link.textContent = r.room;
    name.append(link);
    const type = cell(r.type.split(":").pop());
    type.title = r.type;
    const agents = cell(r.agents.length ? `${r.agents.length}: ${r.agents.slice(0, 5).join(", ")}${r.agents.length > 5 ? ", …" : ""}` : "0");
    agents.title = r.agents.join("\n");
    tr.append(name, type, cell(r.epoch, "mono"), cell(String(r.seq), "mono"), agents, cell(String(r.spectators), "mono"));
    return tr;
  });
  $("rooms").replaceChildren(...rows);
  $("empty").hidden = rows.length > 0 || Boolean(after);
  next = body.next;
  $("next").hidden = next === null;
  $("first").hidden = !after;
  $("count").textContent = `${rows.length} room${rows.length === 1 ? "" : "s"}${next ? "+" : ""}`;
}

$("next").addEventListener("click", () => {
  after = next ?? "";
  refresh();
});
$("first").addEventListener("click", () => {
  after = "";
  refresh();
});
refresh();
setInterval(() => {
  if (current === null) refresh();
}, 2000);
