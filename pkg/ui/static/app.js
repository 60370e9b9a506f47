// troupe's saga UI: reads the saga API (GET /api/topology, /api/sagas/stats,
// /api/sagas, /api/sagas/{id}, /api/records/...) and the dead letters
// (GET /api/deadletters, POST .../replay|discard) and renders them; no
// framework, no build step. Two views: the overview (#/) and one saga
// (#/sagas/ID).
"use strict";

const STATUSES = ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"];
const SVGNS = "http://www.w3.org/2000/svg";
const view = {
  status: "", reason: "", id: "", cursor: "", cursors: [], selected: "", timer: 0,
  topology: null, actionsOff: "", entry: null, record: null, confirm: null, notice: null,
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  for (const c of children) if (c !== null && c !== undefined && c !== "") e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVGNS, tag);
  setAttrs(e, attrs);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.setAttribute("class", v);
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
}

function badge(status) {
  return el("span", { class: "badge " + status, text: status });
}

// fmtTime is the one format of every time shown: local, to the
// millisecond, with the zone.
function fmtTime(t) {
  if (!t) return "";
  const d = t instanceof Date ? t : new Date(t);
  if (isNaN(d)) return String(t);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  let zone = "";
  try {
    zone = new Intl.DateTimeFormat([], { timeZoneName: "short" }).formatToParts(d).find((x) => x.type === "timeZoneName").value;
  } catch (_) {
    const off = -d.getTimezoneOffset();
    zone = "UTC" + (off >= 0 ? "+" : "-") + p(Math.floor(Math.abs(off) / 60)) + ":" + p(Math.abs(off) % 60);
  }
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)} ${zone}`;
}

// fmtDuration formats ms for a span: 0.4 ms, 12 ms, 1.25 s, 2 min 5 s.
function fmtDuration(ms) {
  if (ms < 0) ms = 0;
  if (ms < 10) return ms.toFixed(1) + " ms";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
  return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
}

// command renders a troupe command so that a line breaks only between a
// flag and the next, never inside "--flag value".
function command(text) {
  const words = text.split(" ");
  const groups = [];
  for (let i = 0; i < words.length; i++) {
    if (words[i].startsWith("--") && i + 1 < words.length && !words[i + 1].startsWith("--")) {
      groups.push(words[i] + " " + words[i + 1]);
      i++;
    } else groups.push(words[i]);
  }
  const c = el("code", { class: "cmd" });
  groups.forEach((g, i) => c.append(el("span", { text: g }), i < groups.length - 1 ? " " : ""));
  return c;
}

// flagged renders text in which each "--flag value" (of a troupe command
// quoted in a note or an error) is kept on one line.
function flagged(text, attrs = {}) {
  const e = el("span", attrs);
  for (const part of String(text || "").split(/(--[a-z][a-z-]* [^\s;(),]+)/)) {
    if (/^--[a-z]/.test(part)) e.append(el("span", { class: "nowrap", text: part }));
    else if (part) e.append(part);
  }
  return e;
}

// api fetches path and returns its JSON; errors carry the API's message.
async function api(path, init) {
  const r = await troupeAuth.fetch(path, Object.assign({ headers: { Accept: "application/json" } }, init || {}));
  const body = await r.text();
  let v = null;
  try { v = body ? JSON.parse(body) : null; } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const msg = (v && (v.error || v.message)) || body.trim() || r.statusText;
    const err = new Error(`${path}: HTTP ${r.status}: ${msg}`);
    err.status = r.status;
    err.apiMessage = msg;
    throw err;
  }
  return v;
}

// showNotice shows the answer of the last action, at the top of the page,
// until the next action or another page.
function showNotice() {
  const n = $("#notice");
  const v = view.notice;
  n.hidden = !v;
  n.className = v && v.error ? "warn" : "ok";
  n.replaceChildren(...(v ? [el("span", { text: `dead letter ${v.id.replace(/\/(\d+)\/(\d+)$/, " $1@$2")}: ${v.text}` }), " ", el("button", { type: "button", onclick: () => { view.notice = null; showNotice(); } }, "OK")] : []));
}

function showError(err) {
  const b = $("#banner");
  if (!err) { b.hidden = true; b.textContent = ""; return; }
  b.hidden = false;
  b.textContent = err.status === 503
    ? `${err.message} (a rebalance or a restore is in progress; retrying)`
    : err.message;
}

// ---- the instance's path on the diagram -------------------------------

// pathOf says, for each node of the diagram (by id), what the instance
// did there: a state (done, failed, compensated, compensating, running,
// waiting, unreached) and, for compensated steps, their place in the
// compensation order (1 first). Without an instance every node is "plain".
function pathOf(topo, inst) {
  const nodes = {};
  for (const n of topo.wide.nodes) nodes[n.id] = { state: inst ? "unreached" : "plain" };
  if (!inst) return nodes;
  const byName = {};
  for (const n of topo.wide.nodes) byName[n.kind + ":" + (n.kind === "event" ? n.label : n.name)] = n.id;
  const seen = new Set((inst.history || []).map((h) => h.type));
  const failing = inst.reason && topo.failsOn.includes(inst.reason) ? inst.reason : "";
  const compensated = inst.compensated || [];
  const dead = new Set((inst.deadLetters || []).map((d) => d.step));
  for (const n of topo.wide.nodes) {
    if (n.kind !== "event" || !seen.has(n.label)) continue;
    let state = "done";
    if (n.label === failing) state = "failed";
    else if (n.role === "command" || n.role === "ack") state = "compensation";
    nodes[n.id] = { state };
  }
  for (const s of topo.steps) {
    const id = s.node;
    const got = s.on.some((e) => seen.has(e));
    let state = got ? "waiting" : "unreached";
    if ((inst.completed || []).includes(s.name)) state = "done";
    if (failing && s.emits.includes(failing) && seen.has(failing)) state = "failed";
    if (inst.pending && inst.pending.step === s.name) state = "compensating";
    const order = compensated.indexOf(s.name);
    if (order >= 0) state = "compensated";
    nodes[id] = { state, order: order >= 0 ? order + 1 : 0, dead: dead.has(s.name) };
    if (dead.has(s.name) && state === "waiting") nodes[id].state = "dead";
  }
  return nodes;
}

function drawDiagram(box, topo, inst) {
  const narrow = (box.clientWidth || window.innerWidth) < 640;
  const layout = narrow ? topo.narrow : topo.wide;
  const path = pathOf(topo, inst);
  const pad = 14;
  const s = svg("svg", {
    viewBox: `${-pad} ${-pad} ${layout.width + 2 * pad} ${layout.height + 2 * pad}`,
    class: "diagram" + (narrow ? " narrow" : ""), role: "img",
    "aria-label": `diagram of saga ${topo.saga}` + (inst ? ` with the path of ${inst.id}` : ""),
    style: `max-width:${layout.width + 2 * pad}px`,
  });
  s.append(svg("defs", {},
    svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  const taken = (e) => {
    if (!inst) return false;
    const a = path[e.from].state, b = path[e.to].state;
    return a !== "unreached" && b !== "unreached";
  };
  for (const e of layout.edges) {
    s.append(svg("path", { d: e.path, class: `edge ${e.kind}` + (taken(e) ? " taken" : ""), "marker-end": "url(#arrow)" }));
  }
  for (const n of layout.nodes) {
    const p = path[n.id];
    const g = svg("g", {
      class: `node ${n.kind} ${p.state}` + (n.role ? " role-" + n.role : ""), "data-node": n.id, "data-state": p.state,
      "data-order": p.order || undefined, "data-dead": p.dead ? "1" : undefined,
    });
    const title = n.kind === "step" ? `step ${n.name}` : `${n.label} on topic ${n.topic}` + (n.role ? ` (${n.role})` : "");
    g.append(svg("title", {}, title + (inst ? `: ${p.state}` : "")));
    g.append(svg("rect", { x: n.x, y: n.y, width: n.w, height: n.h, rx: n.kind === "event" ? n.h / 2 : 6 }));
    if (n.kind === "event") {
      g.append(svg("text", { x: n.x + n.w / 2, y: n.y + 19, class: "label" }, n.label));
      g.append(svg("text", { x: n.x + n.w / 2, y: n.y + 33, class: "topic" }, n.topic));
    } else {
      g.append(svg("text", { x: n.x + n.w / 2, y: n.y + n.h / 2 + 5, class: "label" }, n.label));
    }
    if (p.order) {
      g.append(svg("circle", { cx: n.x + n.w - 4, cy: n.y + 4, r: 10, class: "order" }));
      g.append(svg("text", { x: n.x + n.w - 4, y: n.y + 8, class: "order-n" }, "↶" + p.order));
    }
    if (p.dead) {
      g.append(svg("circle", { cx: n.x + 4, cy: n.y + 4, r: 10, class: "dead-mark" }));
      g.append(svg("text", { x: n.x + 4, y: n.y + 8, class: "dead-n" }, "!"));
    }
    s.append(g);
  }
  const legend = el("div", { class: "legend" });
  const items = inst
    ? [["done", "completed / seen"], ["failed", "failing event"], ["compensated", "compensated (↶ order)"], ["compensation", "compensation event"],
      ["compensating", "compensating"], ["waiting", "got its input, no answer yet"], ["dead", "holds a dead letter"], ["unreached", "not reached"]]
    : [["plain role-trigger", "trigger"], ["plain role-completes", "completes the saga"], ["plain role-fails", "fails it"], ["plain role-command", "compensation"]];
  for (const [cls, text] of items) legend.append(el("span", { class: "key" }, el("i", { class: cls }), text));
  box.replaceChildren(el("div", { class: "diagram-scroll" }, s), legend);
}

// ---- the timeline -------------------------------------------------------

// timelineOf turns an instance's history into rows on a time axis: each
// step's span from its input to its output (a wait when a timer of the
// step emitted it; or to its dead letter, then parked until a replay or
// discard), then the compensation phase, each
// compensated step from its command to its ack, with re-sends counted.
// Times are ms since the epoch.
function timelineOf(topo, inst) {
  const hist = inst.history || [];
  const t = (h) => new Date(h.time).getTime();
  const first = (pred) => hist.find(pred);
  const rows = [];
  const end = inst.endedAt ? new Date(inst.endedAt).getTime() : Math.max(Date.now(), ...hist.map(t));
  for (const s of topo.steps) {
    const input = first((h) => s.on.includes(h.type) && !h.type.startsWith("DeadLetter"));
    if (!input) continue;
    const out = first((h) => h.step === s.name && s.emits.includes(h.type));
    const row = { step: s.name, phase: "forward", start: t(input), input: input.type, segments: [], notes: [] };
    const dl = first((h) => h.type === "DeadLetter" && h.step === s.name);
    if (dl) {
      const settled = first((h) => (h.type === "DeadLetterReplayed" || h.type === "DeadLetterDiscarded") && h.step === s.name && t(h) >= t(dl));
      const m = /after (\d+) attempts/.exec(dl.note || "");
      row.segments.push({ kind: "retrying", from: t(input), to: t(dl), label: m ? `${m[1]} attempts` : "failed" });
      const parkedTo = settled ? t(settled) : (out ? t(out) : end);
      row.segments.push({ kind: "parked", from: t(dl), to: parkedTo, label: settled ? (settled.type === "DeadLetterReplayed" ? "parked until replayed" : "parked until discarded") : "parked (dead letter outstanding)" });
      if (m) row.notes.push(`${m[1]} attempts, then a dead letter`);
      if (out && settled) row.segments.push({ kind: "run", from: t(settled), to: t(out), label: "after the replay" });
    } else if (out) {
      // An output a timer emitted (After, At or SetTimer) was waited for.
      const timer = /emitted by timer (\S+)/.exec(out.note || "");
      const kind = topo.failsOn.includes(out.type) ? "failed" : timer ? "timer" : "run";
      row.segments.push({ kind, from: t(input), to: t(out), label: timer ? `waiting on timer ${timer[1]}` : "" });
      if (timer) row.notes.push(`waited on timer ${timer[1]}`);
    } else {
      row.segments.push({ kind: "waiting", from: t(input), to: end, label: inst.status === "RUNNING" ? "waiting for its answer (a timer or a slow handler)" : "no answer" });
    }
    row.end = out ? t(out) : row.segments[row.segments.length - 1].to;
    row.output = out ? out.type : "";
    rows.push(row);
  }
  const deadline = first((h) => h.type === "Deadline");
  const order = (inst.compensated || []).slice();
  if (inst.pending && !order.includes(inst.pending.step)) order.push(inst.pending.step);
  for (const name of order) {
    const s = topo.steps.find((x) => x.name === name);
    if (!s) continue;
    const cmd = first((h) => h.type === s.command);
    const ack = first((h) => h.type === s.ack);
    const resent = hist.filter((h) => h.type === "CompensationTimeout" && h.step === name).length;
    const from = cmd ? t(cmd) : (deadline ? t(deadline) : end);
    const to = ack ? t(ack) : end;
    const row = { step: name, phase: "compensation", start: from, end: to, input: s.command, output: ack ? s.ack : "", segments: [], notes: [] };
    row.segments.push({ kind: ack ? "compensated" : "compensating", from, to, label: ack ? "" : "awaiting its ack" });
    if (resent) row.notes.push(`${resent} re-send${resent > 1 ? "s" : ""} (no ack in time)`);
    rows.push(row);
  }
  const starts = [new Date(inst.startedAt).getTime(), ...hist.map(t)].filter((x) => !isNaN(x));
  return { rows, from: Math.min(...starts), to: Math.max(end, ...rows.map((r) => r.end)), deadline: deadline ? t(deadline) : 0 };
}

function drawTimeline(box, topo, inst) {
  const tl = timelineOf(topo, inst);
  const span = Math.max(tl.to - tl.from, 1);
  const pct = (x) => ((x - tl.from) / span) * 100;
  const list = el("ol", { class: "timeline", id: "timeline" });
  let phase = "";
  for (const r of tl.rows) {
    if (r.phase !== phase) {
      phase = r.phase;
      list.append(el("li", { class: "phase", text: phase === "forward" ? "Steps" : "Compensation (in reverse order)" }));
    }
    const track = el("div", { class: "track" });
    for (const sg of r.segments) {
      track.append(el("span", {
        class: "bar " + sg.kind, title: `${sg.kind}${sg.label ? ": " + sg.label : ""}, ${fmtDuration(sg.to - sg.from)}`,
        style: `left:${pct(sg.from).toFixed(2)}%;width:${Math.max(pct(sg.to) - pct(sg.from), 0.6).toFixed(2)}%`,
      }));
    }
    if (tl.deadline) track.append(el("span", { class: "deadline", title: "deadline passed " + fmtTime(new Date(tl.deadline)), style: `left:${pct(tl.deadline).toFixed(2)}%` }));
    const what = [r.input, r.output].filter(Boolean).join(" → ");
    const segs = r.segments.filter((sg) => sg.kind !== "run" && sg.kind !== "compensated" && sg.kind !== "failed").map((sg) => `${sg.label || sg.kind} ${fmtDuration(sg.to - sg.from)}`);
    list.append(el("li", { class: "row " + r.phase, "data-step": r.step, "data-phase": r.phase, "data-start": String(r.start) },
      el("div", { class: "what" }, el("b", { text: r.step }), " ", el("span", { class: "dur", text: fmtDuration(r.end - r.start) }),
        el("div", { class: "muted small", text: [what, ...segs, ...r.notes].join(" · ") })),
      track));
  }
  if (!tl.rows.length) list.append(el("li", { class: "muted", text: "No step has run yet." }));
  box.replaceChildren(list,
    el("div", { class: "axis muted small" }, el("span", { text: fmtTime(new Date(tl.from)) }), el("span", { text: fmtDuration(span) }), el("span", { text: fmtTime(new Date(tl.to)) })));
}

// ---- dead letters and the actions on them ----------------------------

// deadLetterActions renders the buttons that replay or discard the dead
// letter of step at partition/offset, and the commands that do the same.
function deadLetterActions(step, key, partition, offset) {
  const sel = step.startsWith("saga.") ? `--coordinator ${step.slice(5)}` : `--step ${step}`;
  const at = `${sel} --partition ${partition} --offset ${offset}`;
  const id = `${step}/${partition}/${offset}`;
  const box = el("div", { class: "actions", "data-deadletter": id });
  const c = view.confirm;
  if (c && c.id === id) {
    box.append(el("div", { class: "confirm", role: "dialog", "aria-label": `confirm ${c.action}` },
      el("div", { text: c.dry.message }),
      el("div", { class: "muted small", text: c.action === "replay" ? `Replay it now? Step ${step} runs the event again, then the instance's parked events.` : `Discard it for good? Step ${step} drops the event and runs the instance's parked events.` }),
      el("button", { type: "button", class: "danger", "data-confirm": c.action, onclick: () => act(step, partition, offset, c.action, false) }, c.action === "replay" ? "Replay now" : "Discard now"),
      " ",
      el("button", { type: "button", onclick: () => { view.confirm = null; refresh(); } }, "Cancel")));
  } else {
    const off = view.actionsOff;
    for (const action of ["replay", "discard"]) {
      box.append(el("button", {
        type: "button", "data-action": action, disabled: off ? "disabled" : undefined, title: off || `dry run first, then confirm`,
        onclick: () => act(step, partition, offset, action, true),
      }, action === "replay" ? "Replay…" : "Discard…"), " ");
    }
    if (off) box.append(el("div", { class: "muted small", text: off }));
  }
  box.append(command(`troupe dlq replay ${at}`), command(`troupe dlq discard ${at}`));
  return box;
}

// act replays or discards a dead letter: a dry run first, whose answer the
// confirmation shows; then, confirmed, the real one.
async function act(step, partition, offset, action, dryRun) {
  const id = `${step}/${partition}/${offset}`;
  try {
    const res = await api(`/api/deadletters/${encodeURIComponent(step)}/${partition}/${offset}/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify({ dryRun }),
    });
    if (dryRun) {
      view.confirm = { id, action, dry: res };
      view.notice = null;
    } else {
      view.confirm = null;
      view.notice = { id, text: res.message };
    }
  } catch (err) {
    view.confirm = null;
    view.notice = { id, text: err.apiMessage || err.message, error: true };
  }
  refresh();
}

async function loadDeadLetters() {
  const box = $("#deadletters");
  let dl;
  try {
    dl = await api("/api/deadletters");
  } catch (_) {
    box.hidden = true;
    return;
  }
  view.actionsOff = (dl && dl.actionsOff) || "";
  if (view.selected) return;
  const steps = (dl && dl.steps || []).filter((s) => s.outstanding > 0);
  if (!steps.length) { box.hidden = true; box.replaceChildren(); return; }
  const total = steps.reduce((n, s) => n + s.outstanding, 0);
  const parts = [el("h2", { class: "warn", text: `Outstanding dead letters (${total})` })];
  for (const s of steps) {
    const coord = s.command.includes("--coordinator");
    const card = el("div", { class: "dead", "data-step": s.step },
      el("div", {}, el("b", { text: coord ? `coordinator (${s.step})` : s.step }), `: ${s.outstanding} outstanding in ${s.topic}`),
      command(s.command));
    for (const d of (s.letters || []).slice(0, 3)) {
      card.append(
        el("div", {}, el("a", { href: "#/sagas/" + encodeURIComponent(d.key), text: d.key }), ` ${d.event || "undecodable record"}, after ${d.attempts} attempts: `, flagged(d.error)),
        deadLetterActions(s.step, d.key, d.partition, d.offset));
    }
    parts.push(card);
  }
  box.replaceChildren(...parts);
  box.hidden = false;
}

// ---- the overview -------------------------------------------------------

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
      onclick: () => setFilter({ status: view.status === s ? "" : s }),
    }, badge(s), el("b", { text: n })));
  }
  box.append(el("button", {
    type: "button", class: "stat" + (view.status === "" ? " active" : ""), "data-status": "ALL",
    onclick: () => setFilter({ status: "" }),
  }, el("span", { class: "muted", text: "all" }), el("b", { text: total })));
  // Orphans: events of ids whose trigger never came; no saga, not counted above.
  box.append(el("a", {
    class: "stat", id: "orphans", href: "/api/orphans",
    title: "events that started no saga (no trigger seen): troupe saga orphans",
  }, el("span", { class: "muted", text: "orphans" }), el("b", { text: st.orphans || 0 })));
}

function setFilter(f) {
  Object.assign(view, f);
  view.cursor = "";
  view.cursors = [];
  refresh();
}

async function loadList() {
  const q = new URLSearchParams({ limit: "25" });
  if (view.status) q.set("status", view.status);
  if (view.reason) q.set("reason", view.reason);
  if (view.id) q.set("id", view.id);
  if (view.cursor) q.set("cursor", view.cursor);
  const page = await api("/api/sagas?" + q);
  const label = [view.status, view.reason && "reason " + view.reason, view.id && `id contains "${view.id}"`].filter(Boolean).join(" · ");
  $("#filter-label").textContent = label ? "· " + label : "· newest first";
  const body = $("#sagas tbody");
  body.replaceChildren();
  if (!page.items || page.items.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: "6", class: "muted", text: label ? "No saga matches." : "No sagas here yet." })));
  }
  for (const it of page.items || []) {
    const dead = (it.deadLetters || []).length;
    body.append(el("tr", { "data-id": it.id, onclick: () => select(it.id) },
      el("td", {}, el("a", { href: "#/sagas/" + encodeURIComponent(it.id) }, el("code", { text: it.id }))),
      el("td", {}, badge(it.status), dead ? el("span", { class: "warn", title: "outstanding dead letters", text: ` ⚠ ${dead}` }) : ""),
      el("td", { text: it.reason || "" }),
      el("td", { text: (it.completed || []).join(" → ") }),
      el("td", { text: (it.compensated || []).join(" → ") }),
      el("td", { class: "muted time", text: fmtTime(it.startedAt) })));
  }
  $("#next").disabled = !page.next;
  $("#prev").disabled = view.cursors.length === 0;
  $("#page-no").textContent = `page ${view.cursors.length + 1}`;
  $("#next").onclick = () => { view.cursors.push(view.cursor); view.cursor = page.next; refresh(); };
}

function select(id) {
  if (location.hash !== "#/sagas/" + encodeURIComponent(id)) location.hash = "#/sagas/" + encodeURIComponent(id);
}

// ---- one saga -----------------------------------------------------------

async function loadDetail() {
  const box = $("#detail");
  let inst;
  try {
    inst = await api("/api/sagas/" + encodeURIComponent(view.selected));
  } catch (err) {
    if (err.status === 404) {
      box.replaceChildren(el("p", {}, el("a", { href: "#/", text: "← all sagas" })),
        el("p", { class: "muted", text: `No saga "${view.selected}" (yet): its first event may not have been read. ${err.apiMessage || ""}` }));
      return;
    }
    throw err;
  }
  const topo = view.topology;
  const facts = el("dl", { class: "facts" },
    el("dt", { text: "status" }), el("dd", {}, badge(inst.status)),
    el("dt", { text: "reason" }), el("dd", { text: inst.reason || "—" }),
    el("dt", { text: "completed" }), el("dd", { id: "completed", text: (inst.completed || []).join(" → ") || "—" }),
    el("dt", { text: "compensated" }), el("dd", { id: "compensated", text: (inst.compensated || []).join(" → ") || "—" }),
    el("dt", { text: "started" }), el("dd", { class: "time", text: fmtTime(inst.startedAt) }),
    el("dt", { text: "ended" }), el("dd", { class: "time", text: inst.endedAt ? fmtTime(inst.endedAt) : "—" }));
  if (inst.endedAt) facts.append(el("dt", { text: "took" }), el("dd", { text: fmtDuration(new Date(inst.endedAt) - new Date(inst.startedAt)) }));
  if (inst.error) facts.append(el("dt", { text: "error" }), el("dd", { class: "warn", text: inst.error }));
  if (inst.pending) facts.append(el("dt", { text: "compensating" }), el("dd", { text: `${inst.pending.step} (attempt ${inst.pending.attempts})` }));
  if (inst.traceId) facts.append(el("dt", { text: "trace" }), el("dd", {}, el("code", { class: "trace-id", text: inst.traceId })));
  const parts = [el("p", { class: "back" }, el("a", { href: "#/", text: "← all sagas" })),
    el("h2", {}, "Saga ", el("code", { text: inst.id })), facts];

  if (topo) {
    const d = el("div", { id: "diagram-path" });
    const t = el("div", { id: "timeline-box" });
    parts.push(el("section", { class: "card" }, el("h3", { text: "Path" }), d),
      el("section", { class: "card" }, el("h3", { text: "Timeline" }), t));
    drawDiagram(d, topo, inst);
    drawTimeline(t, topo, inst);
  }

  const dead = inst.deadLetters || [];
  if (dead.length) {
    const sec = el("section", { class: "card", id: "saga-deadletters" }, el("h3", { class: "warn", text: `Outstanding dead letters (${dead.length})` }));
    for (const d of dead) {
      sec.append(el("div", { class: "dead" },
        el("div", {}, el("b", { text: d.event || "undecodable record" }), ` at ${d.step}, after ${d.attempts} attempts, ${fmtTime(d.failedAt)}: `, flagged(d.error)),
        el("div", { class: "muted", text: "Once the cause is fixed, replay it; or give up on it (its parked events then run without it):" }),
        deadLetterActions(d.step, inst.id, d.partition, d.offset)));
    }
    parts.push(sec);
  }

  const hist = el("table", { id: "history" },
    el("thead", {}, el("tr", {}, el("th", { text: "time" }), el("th", { text: "event" }), el("th", { text: "step" }), el("th", { text: "record" }), el("th", { text: "note" }))));
  const tb = el("tbody");
  (inst.history || []).forEach((h, i) => {
    const rec = h.offset >= 0 && h.topic;
    const key = rec ? `${h.topic}/${h.partition}/${h.offset}` : "";
    const open = view.entry === key && key;
    const tr = el("tr", {
      class: (rec ? "entry" : "") + (open ? " open" : ""), "data-entry": String(i), "data-record": key || undefined, tabindex: rec ? "0" : undefined,
      onclick: rec ? () => openEntry(key) : undefined, onkeydown: rec ? (e) => { if (e.key === "Enter") openEntry(key); } : undefined,
    },
    el("td", { class: "muted time", text: fmtTime(h.time) }),
    el("td", {}, rec ? el("a", { href: "javascript:void 0", text: h.type }) : h.type),
    el("td", { text: h.step || "" }),
    el("td", { class: "muted", text: h.offset >= 0 ? `${h.topic ? h.topic + "/" : ""}${h.partition}@${h.offset}` : "timer" }),
    el("td", { class: "note" }, flagged(h.note)));
    tb.append(tr);
    if (open) tb.append(el("tr", { class: "event-row" }, el("td", { colspan: "5" }, eventPanel())));
  });
  hist.append(tb);
  parts.push(el("section", { class: "card" }, el("h3", {}, "History ", el("span", { class: "muted small", text: "in the order things happened; click an entry to see its event" })),
    el("div", { class: "scroll" }, hist)));
  box.replaceChildren(...parts);
}

function openEntry(key) {
  if (view.entry === key) { view.entry = null; view.record = null; refresh(); return; }
  view.entry = key;
  view.record = null;
  refresh();
  api("/api/records/" + key.split("/").map(encodeURIComponent).join("/")).then((r) => { view.record = r; }, (err) => { view.record = { failed: err.apiMessage || err.message }; }).then(refresh);
}

function eventPanel() {
  const r = view.record;
  const box = el("div", { class: "event", id: "event" });
  if (!r) { box.append(el("span", { class: "muted", text: "reading the record…" })); return box; }
  if (r.failed) { box.append(el("span", { class: "warn", text: r.failed })); return box; }
  box.append(el("dl", { class: "facts" },
    el("dt", { text: "topic" }), el("dd", { "data-field": "topic", text: r.topic }),
    el("dt", { text: "partition" }), el("dd", { "data-field": "partition", text: r.partition }),
    el("dt", { text: "offset" }), el("dd", { "data-field": "offset", text: r.offset }),
    el("dt", { text: "timestamp" }), el("dd", { class: "time", text: fmtTime(r.timestamp) }),
    el("dt", { text: "key" }), el("dd", { text: r.key === null ? "(null)" : r.key }),
    el("dt", { text: "type" }), el("dd", { "data-field": "type", text: (r.type || "—") + (r.schemaId !== undefined ? ` (schema id ${r.schemaId})` : "") })));
  const hs = el("table", { class: "headers" });
  for (const h of r.headers || []) hs.append(el("tr", {}, el("th", { text: h.key }), el("td", { text: h.value })));
  box.append(el("h4", { text: "Headers" }), hs);
  if (r.value !== undefined) box.append(el("h4", { text: "Value" }), el("pre", { class: "value", "data-field": "value", text: JSON.stringify(r.value, null, 2) }));
  else box.append(el("h4", { text: "Value" }), el("div", { class: "warn", text: "not decoded: " + (r.error || "") }),
    r.rawValueBase64 ? el("pre", { class: "value", text: r.rawValueBase64 }) : "");
  return box;
}

// ---- refresh --------------------------------------------------------------

async function loadTopology() {
  if (view.topology) return;
  try {
    view.topology = await api("/api/topology");
  } catch (_) {
    return; // an older server: no diagram
  }
  const t = view.topology;
  $("#saga-name").textContent = `· ${t.saga}`;
  $("#diagram-caption").textContent = `${t.saga}: triggered by ${t.trigger}; completes on ${t.completesOn.join(", ")}; fails on ${t.failsOn.join(", ")}` + (t.deadline ? `; deadline ${t.deadline}` : "");
  const reasons = $("#find-reason");
  for (const r of [...t.failsOn, "timeout"]) reasons.append(el("option", { value: r, text: r }));
}

async function refresh() {
  clearTimeout(view.timer);
  try {
    await loadTopology();
    $("#overview").hidden = !!view.selected;
    $("#detail").hidden = !view.selected;
    if (view.selected) {
      await loadDeadLetters();
      await loadDetail();
    } else {
      if (view.topology && !view.drawn) { drawDiagram($("#diagram"), view.topology, null); view.drawn = true; }
      await Promise.all([loadStats(), loadList(), loadDeadLetters()]);
    }
    showError(null);
    showNotice();
  } catch (err) {
    showError(err);
  }
  document.body.dataset.loaded = String(Date.now());
  // An open confirmation or event stays as it is until acted on.
  if ($("#auto").checked && !view.confirm) view.timer = setTimeout(refresh, 2000);
}

function fromHash() {
  const m = location.hash.match(/^#\/sagas\/(.+)$/);
  const sel = m ? decodeURIComponent(m[1]) : "";
  if (sel !== view.selected) { view.entry = null; view.record = null; view.confirm = null; view.notice = null; }
  view.selected = sel;
}

$("#find").addEventListener("submit", (e) => {
  e.preventDefault();
  setFilter({ id: $("#find-id").value.trim(), reason: $("#find-reason").value });
});
$("#find-clear").addEventListener("click", () => { $("#find-id").value = ""; $("#find-reason").value = ""; setFilter({ id: "", reason: "", status: "" }); });
$("#prev").addEventListener("click", () => { view.cursor = view.cursors.pop() || ""; refresh(); });
$("#auto").addEventListener("change", () => refresh());
window.addEventListener("hashchange", () => { fromHash(); window.scrollTo(0, 0); refresh(); });
window.addEventListener("resize", () => { view.drawn = false; clearTimeout(view.resize); view.resize = setTimeout(refresh, 150); });
fromHash();
refresh();
