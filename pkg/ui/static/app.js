// troupe's saga UI: reads the saga API (GET /api/sagas/stats, /api/sagas,
// /api/sagas/{id}) and the dead letters (GET /api/deadletters) and renders
// them; no framework, no build step.
"use strict";

const STATUSES = ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"];
const view = { status: "", cursor: "", cursors: [], selected: "", timer: 0 };

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function badge(status) {
  return el("span", { class: "badge " + status, text: status });
}

function when(t) {
  if (!t) return "";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// api GETs path and returns its JSON; errors carry the API's message.
async function api(path) {
  const r = await troupeAuth.fetch(path, { headers: { Accept: "application/json" } });
  const body = await r.text();
  let v = null;
  try { v = body ? JSON.parse(body) : null; } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = (v && (v.error || v.message)) || body.trim() || r.statusText;
    const err = new Error(`${path}: HTTP ${r.status}: ${msg}`);
    err.status = r.status;
    throw err;
  }
  return v;
}

function showError(err) {
  const b = $("#banner");
  if (!err) { b.hidden = true; b.textContent = ""; return; }
  b.hidden = false;
  b.textContent = err.status === 503
    ? `${err.message} (a rebalance or a restore is in progress; retrying)`
    : err.message;
}

async function loadStats() {
  const st = await api("/api/sagas/stats");
  const box = $("#stats");
  box.replaceChildren();
  let total = 0;
  for (const s of STATUSES) {
    const n = (st.byStatus && st.byStatus[s]) || 0;
    total += n;
    box.append(el("button", {
      type: "button", class: "stat" + (view.status === s ? " active" : ""), "data-status": s,
      onclick: () => setFilter(view.status === s ? "" : s),
    }, badge(s), el("b", { text: n })));
  }
  box.append(el("button", {
    type: "button", class: "stat" + (view.status === "" ? " active" : ""), "data-status": "ALL",
    onclick: () => setFilter(""),
  }, el("span", { class: "muted", text: "all" }), el("b", { text: total })));
  // Orphans: events of ids whose trigger never came; no saga, not counted above.
  box.append(el("a", {
    class: "stat", id: "orphans", href: "/api/orphans",
    title: "events that started no saga (no trigger seen): troupe saga orphans",
  }, el("span", { class: "muted", text: "orphans" }), el("b", { text: st.orphans || 0 })));
}

// loadDeadLetters shows the outstanding dead letters of every step and of
// the coordinator (GET /api/deadletters), whose own dead letters belong to
// no saga's history. A server without that endpoint hides the card.
async function loadDeadLetters() {
  const box = $("#deadletters");
  let dl;
  try {
    dl = await api("/api/deadletters");
  } catch (_) {
    box.hidden = true;
    return;
  }
  const steps = (dl && dl.steps || []).filter((s) => s.outstanding > 0);
  if (!steps.length) { box.hidden = true; box.replaceChildren(); return; }
  const total = steps.reduce((n, s) => n + s.outstanding, 0);
  const parts = [el("h2", { class: "warn", text: `Outstanding dead letters (${total})` })];
  for (const s of steps) {
    const coord = s.command.includes("--coordinator");
    const sel = coord ? s.command.slice(s.command.indexOf("--coordinator")) : `--step ${s.step}`;
    const card = el("div", { class: "dead", "data-step": s.step },
      el("div", {}, el("b", { text: coord ? `coordinator (${s.step})` : s.step }), `: ${s.outstanding} outstanding in ${s.topic}`),
      el("code", { text: s.command }));
    for (const d of (s.letters || []).slice(0, 3)) {
      const at = `${sel} --partition ${d.partition} --offset ${d.offset}`;
      card.append(
        el("div", {}, el("b", { text: d.key }), ` ${d.event || "undecodable record"}, after ${d.attempts} attempts: `, d.error),
        el("code", { text: `troupe dlq replay ${at}` }),
        el("code", { text: `troupe dlq discard ${at}` }));
    }
    parts.push(card);
  }
  box.replaceChildren(...parts);
  box.hidden = false;
}

function setFilter(status) {
  view.status = status;
  view.cursor = "";
  view.cursors = [];
  refresh();
}

async function loadList() {
  const q = new URLSearchParams({ limit: "25" });
  if (view.status) q.set("status", view.status);
  if (view.cursor) q.set("cursor", view.cursor);
  const page = await api("/api/sagas?" + q);
  $("#filter-label").textContent = view.status ? `· ${view.status}` : "";
  const body = $("#sagas tbody");
  body.replaceChildren();
  if (!page.items || page.items.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: "No sagas here yet." })));
  }
  for (const it of page.items || []) {
    if (it.saga) $("#saga-name").textContent = "· " + it.saga;
    const dead = (it.deadLetters || []).length;
    const tr = el("tr", { "data-id": it.id, onclick: () => select(it.id) },
      el("td", {}, el("code", { text: it.id })),
      el("td", {}, badge(it.status), dead ? el("span", { class: "warn", title: "outstanding dead letters", text: ` ⚠ ${dead}` }) : ""),
      el("td", { text: it.reason || "" }),
      el("td", { text: (it.completed || []).join(" → ") }),
      el("td", { text: (it.compensated || []).join(" → ") }),
      el("td", { class: "muted", text: when(it.updatedAt) }));
    if (it.id === view.selected) tr.classList.add("selected");
    body.append(tr);
  }
  $("#next").disabled = !page.next;
  $("#first").disabled = !view.cursor;
  $("#next").onclick = () => { view.cursors.push(view.cursor); view.cursor = page.next; refresh(); };
}

function select(id) {
  view.selected = id;
  if (location.hash !== "#/sagas/" + encodeURIComponent(id)) location.hash = "#/sagas/" + encodeURIComponent(id);
  refresh();
}

async function loadDetail() {
  const box = $("#detail");
  if (!view.selected) return;
  let inst;
  try {
    inst = await api("/api/sagas/" + encodeURIComponent(view.selected));
  } catch (err) {
    if (err.status === 404) {
      box.replaceChildren(el("p", { class: "muted", text: `No saga "${view.selected}" (yet): its first event may not have been read.` }));
      return;
    }
    throw err;
  }
  const facts = el("dl", {},
    el("dt", { text: "status" }), el("dd", {}, badge(inst.status)),
    el("dt", { text: "reason" }), el("dd", { text: inst.reason || "—" }),
    el("dt", { text: "completed" }), el("dd", { text: (inst.completed || []).join(" → ") || "—" }),
    el("dt", { text: "compensated" }), el("dd", { text: (inst.compensated || []).join(" → ") || "—" }),
    el("dt", { text: "started" }), el("dd", { text: inst.startedAt || "" }),
    el("dt", { text: "ended" }), el("dd", { text: inst.endedAt || "—" }));
  if (inst.error) facts.append(el("dt", { text: "error" }), el("dd", { class: "warn", text: inst.error }));
  if (inst.pending) facts.append(el("dt", { text: "compensating" }), el("dd", { text: `${inst.pending.step} (attempt ${inst.pending.attempts})` }));
  if (inst.traceId) facts.append(el("dt", { text: "trace" }), el("dd", {}, el("code", { class: "trace-id", text: inst.traceId })));
  const parts = [el("h2", {}, "Saga ", el("code", { text: inst.id })), facts];

  const dead = inst.deadLetters || [];
  if (dead.length) {
    parts.push(el("h3", { class: "warn", text: `Outstanding dead letters (${dead.length})` }));
    for (const d of dead) {
      const at = `--step ${d.step} --partition ${d.partition} --offset ${d.offset}`;
      parts.push(el("div", { class: "dead" },
        el("div", {}, el("b", { text: d.event || "undecodable record" }), ` at ${d.step}, after ${d.attempts} attempts: `, d.error),
        el("div", { class: "muted", text: "Once the cause is fixed, replay it; or give up on it (its parked events then run without it):" }),
        el("code", { text: `troupe dlq replay ${at}` }),
        el("code", { text: `troupe dlq discard ${at}` })));
    }
  }

  const hist = el("table", { id: "history" },
    el("thead", {}, el("tr", {}, el("th", { text: "time" }), el("th", { text: "event" }), el("th", { text: "step" }), el("th", { text: "at" }), el("th", { text: "note" }))));
  const tb = el("tbody");
  for (const h of inst.history || []) {
    tb.append(el("tr", {},
      el("td", { class: "muted", text: when(h.time) }),
      el("td", { text: h.type }),
      el("td", { text: h.step || "" }),
      el("td", { class: "muted", text: h.offset >= 0 ? `${h.topic ? h.topic + "/" : ""}${h.partition}@${h.offset}` : "timer" }),
      el("td", { text: h.note || "" })));
  }
  hist.append(tb);
  parts.push(el("h3", { text: "History" }), hist);
  box.replaceChildren(...parts);
}

async function refresh() {
  clearTimeout(view.timer);
  try {
    await Promise.all([loadStats(), loadList(), loadDetail(), loadDeadLetters()]);
    showError(null);
  } catch (err) {
    showError(err);
  }
  if ($("#auto").checked) view.timer = setTimeout(refresh, 2000);
}

function fromHash() {
  const m = location.hash.match(/^#\/sagas\/(.+)$/);
  view.selected = m ? decodeURIComponent(m[1]) : "";
}

$("#find").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("#find-id").value.trim();
  if (id) select(id);
});
$("#first").addEventListener("click", () => { view.cursor = ""; view.cursors = []; refresh(); });
$("#auto").addEventListener("change", () => refresh());
window.addEventListener("hashchange", () => { fromHash(); refresh(); });
fromHash();
refresh();
