// The room listing: GET /rooms a page at a time, refreshed every two seconds.

const PAGE = 50;
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const fragment = token ? `#token=${encodeURIComponent(token)}` : "";
let after = "";
let next = null;

function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

async function refresh() {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (after) query.set("after", after);
  let body;
  try {
    const resp = await fetch(`/rooms?${query}`, { headers });
    body = await resp.json();
    if (!resp.ok) {
      $("notice").textContent = `${resp.status} ${body.code}: ${body.message}` +
        (resp.status === 401 ? " (open this page as /#token=YOUR_TOKEN)" : "");
      $("notice").hidden = false;
      return;
    }
  } catch (err) {
    $("notice").textContent = `The server did not answer: ${err.message}`;
    $("notice").hidden = false;
    return;
  }
  $("notice").hidden = true;
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
setInterval(refresh, 2000);
