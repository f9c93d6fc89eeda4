// The nxs-mesh console: reads the gateway that serves this page, nothing else.
//   GET /v1/nodes          every second (heartbeat ages tick, a silent node turns suspect, then dead)
//   SSE /v1/stream?kind=…  alerts and chat as they are stored (EventSource resumes by Last-Event-ID)
//   POST /v1/messages      the chat form (the gateway's short form)
//   POST /v1/tasks         the task form; GET /v1/tasks/{id} every second until the task's state is final;
//                          each unfinished task's Cancel button: POST /v1/tasks/{id}/cancel
//   GET /v1/dlq            every few seconds; each dead letter's Replay button: POST /v1/dlq/{id}/replay
// With gateway tokens, open the page as /#token=<token>: it is kept in sessionStorage, sent as a bearer
// header, and as ?access_token= to /v1/stream only (EventSource cannot send headers).
"use strict";

const NODES_EVERY_MS = 1000;
const DLQ_EVERY_MS = 3000;
const TASK_EVERY_MS = 1000;
const FINAL_TASK_STATES = new Set(["completed", "done", "failed", "expired", "cancelled", "orphaned"]); // the mesh's terminal states
const KEEP = 200; // entries kept per list

const token = (() => {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("nxs-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search); // keep it out of the address bar
  }
  return sessionStorage.getItem("nxs-token");
})();

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

async function api(path, init = {}) {
  const headers = { ...(init.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, { ...init, headers });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ? `${res.status}: ${body.error}` : `HTTP ${res.status}`);
  return body;
}

function stream(query, onRecord) {
  const q = new URLSearchParams(query);
  if (token) q.set("access_token", token);
  const source = new EventSource(`/v1/stream?${q}`);
  source.onmessage = (ev) => onRecord(JSON.parse(ev.data));
  source.addEventListener("mesh-error", (ev) => setLink("down", JSON.parse(ev.data).error));
  // A refused stream (401/403: a missing or wrong token) is closed for good; anything else is retried.
  source.onerror = () => (source.readyState === EventSource.CLOSED
    ? setLink("down", "stream refused: open /#token=<token>")
    : setLink("connecting", "reconnecting…"));
  source.onopen = () => setLink("live", "live");
  return source;
}

function setLink(state, text) {
  const pill = $("#link");
  pill.dataset.state = state;
  pill.textContent = text;
}

const fmt = {
  age: (s) => (s == null ? "–" : s < 60 ? `${s.toFixed(1)} s` : `${Math.round(s / 60)} min`),
  load: (x) => (x == null ? "–" : Number(x).toFixed(2)),
  time: (iso) => new Date(iso).toLocaleTimeString(),
  text: (c) => (typeof c === "string" ? c : JSON.stringify(c)),
};

// ---- nodes ----
function renderNodes(nodes) {
  const rows = nodes.map((n) => el("tr", { "data-node": n.node, "data-state": n.state },
    el("td", { class: "node" }, n.node),
    el("td", {}, el("span", { class: "state", "data-state": n.state }, n.state)),
    el("td", { class: "age" }, fmt.age(n.heartbeat_age)),
    el("td", {}, fmt.load(n.load)),
    el("td", { class: "server" }, n.server || "–"),
    el("td", {}, n.location || "–"),
    el("td", {}, n.version || "–")));
  $("#nodes tbody").replaceChildren(...rows);
  const live = nodes.filter((n) => n.state !== "dead" && n.state !== "stopped").length;
  $("#nodes-summary").textContent = `${live} live of ${nodes.length}`;
  $("#node-ids").replaceChildren(...nodes.map((n) => el("option", { value: n.node })));
}

async function pollNodes() {
  try {
    renderNodes((await api("/v1/nodes")).nodes);
    $("#nodes-error").hidden = true;
  } catch (err) {
    $("#nodes-error").textContent = `nodes: ${err.message}`;
    $("#nodes-error").hidden = false;
  } finally {
    setTimeout(pollNodes, NODES_EVERY_MS);
  }
}

function prepend(list, item) {
  list.querySelector(".empty")?.remove();
  list.prepend(item);
  while (list.children.length > KEEP) list.lastElementChild.remove();
}

// ---- alerts ----
function showAlert(rec) {
  const env = rec.envelope;
  if (!env) return;
  const a = env.payload.content || {};
  const what = a.event ? `${a.node} is ${a.event}` : fmt.text(a);
  const by = a.detected_by ? ` (seen by ${a.detected_by})` : "";
  prepend($("#alerts"), el("li", { class: "alert", "data-event": a.event || "", "data-node": a.node || "" },
    el("span", { class: "when" }, fmt.time(rec.stored_at)), el("span", { class: "what" }, what + by)));
}

// ---- chat ----
function showChat(rec) {
  const env = rec.envelope;
  if (!env) return;
  const from = env.source.agent_id && env.source.agent_id !== "*" ? `${env.source.instance_id}/${env.source.agent_id}` : env.source.instance_id;
  const to = env.target.broadcast ? "everyone" : env.target.instance_id + (env.target.agent_id !== "*" ? `/${env.target.agent_id}` : "");
  prepend($("#chat"), el("li", { class: "chat", "data-seq": String(rec.seq), "data-to": env.target.instance_id },
    el("span", { class: "when" }, fmt.time(rec.stored_at)),
    el("span", { class: "who" }, `${from} → ${to}`),
    el("span", { class: "text" }, fmt.text(env.payload.content))));
}

async function sendChat(ev) {
  ev.preventDefault();
  const text = $("#chat-text");
  const body = { type: "CHAT", content: text.value };
  const to = $("#chat-to").value.trim();
  const agent = $("#chat-agent").value.trim();
  if (to) body.to = to;
  if (agent) body.agent = agent;
  try {
    const ack = await api("/v1/messages", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(body) });
    $("#chat-status").textContent = `stored in ${ack.stream} as #${ack.seq}`;
    $("#chat-status").className = "muted";
    text.value = "";
  } catch (err) {
    $("#chat-status").textContent = `not sent: ${err.message}`;
    $("#chat-status").className = "error";
  }
}

// ---- tasks ----
function parsePayload(text) {
  if (text.trim() === "") return null;
  try { return JSON.parse(text); } catch { return text; } // plain text is a string payload
}

function taskRow(taskId, capability) {
  const cancel = el("button", { type: "button", class: "cancel" }, "Cancel");
  const row = el("tr", { "data-task": taskId },
    el("td", { class: "task" }, taskId.slice(0, 8)), el("td", {}, capability),
    el("td", {}, el("span", { class: "state", "data-state": "submitted" }, "submitted")),
    el("td", { class: "node" }, "–"), el("td", { class: "result" }, ""), el("td", {}, cancel));
  cancel.addEventListener("click", () => cancelTask(taskId, row, cancel));
  prepend($("#tasks tbody"), row);
  return row;
}

function showTask(row, t) {
  const state = row.querySelector(".state");
  state.textContent = state.dataset.state = t.state;
  row.dataset.state = t.state;
  row.querySelector(".node").textContent = t.node || "–";
  row.querySelector(".result").textContent = t.error ? String(t.error) : t.result === undefined ? "" : fmt.text(t.result);
  if (FINAL_TASK_STATES.has(t.state)) row.querySelector("button.cancel").hidden = true; // nothing left to cancel
}

// The gateway moves the task to "cancelled" once (409 when it had already ended); its worker stops.
async function cancelTask(taskId, row, button) {
  button.disabled = true;
  try {
    showTask(row, await api(`/v1/tasks/${taskId}/cancel`, { method: "POST" }));
    $("#task-status").textContent = `task ${taskId} cancelled`;
    $("#task-status").className = "muted";
  } catch (err) {
    $("#task-status").textContent = `task ${taskId} not cancelled: ${err.message}`;
    $("#task-status").className = "error";
    button.disabled = false;
  }
}

async function followTask(taskId, row) {
  let t;
  try {
    t = await api(`/v1/tasks/${taskId}`);
  } catch (err) {
    row.querySelector(".result").textContent = err.message;
    setTimeout(() => followTask(taskId, row), TASK_EVERY_MS);
    return;
  }
  showTask(row, t);
  if (!FINAL_TASK_STATES.has(t.state)) setTimeout(() => followTask(taskId, row), TASK_EVERY_MS);
}

async function submitTask(ev) {
  ev.preventDefault();
  const capability = $("#task-capability").value.trim();
  try {
    const t = await api("/v1/tasks", { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify({ capability, payload: parsePayload($("#task-payload").value) }) });
    $("#task-status").textContent = `task ${t.task_id} queued in ${t.stream} as #${t.seq}`;
    $("#task-status").className = "muted";
    followTask(t.task_id, taskRow(t.task_id, capability));
  } catch (err) {
    $("#task-status").textContent = `not submitted: ${err.message}`;
    $("#task-status").className = "error";
  }
}

// ---- dead letters ----
function renderDeadLetters(items) {
  const rows = items.map((d) => {
    const replay = el("button", { type: "button", class: "replay" }, "Replay");
    replay.addEventListener("click", () => replayDeadLetter(d.id, replay));
    return el("tr", { "data-id": String(d.id) },
      el("td", {}, String(d.id)), el("td", {}, fmt.time(d.time)), el("td", { class: "subject" }, d.subject),
      el("td", { class: "reason" }, d.reason), el("td", { class: "preview" }, d.preview.slice(0, 60)), el("td", {}, replay));
  });
  $("#dlq tbody").replaceChildren(...rows);
  $("#dlq-summary").textContent = items.length ? `${items.length} waiting` : "none";
}

async function pollDeadLetters() {
  try {
    renderDeadLetters((await api("/v1/dlq")).dead_letters);
  } catch (err) {
    $("#dlq-status").textContent = `dead letters: ${err.message}`;
  } finally {
    setTimeout(pollDeadLetters, DLQ_EVERY_MS);
  }
}

async function replayDeadLetter(id, button) {
  button.disabled = true;
  try {
    const done = await api(`/v1/dlq/${id}/replay`, { method: "POST" });
    $("#dlq-status").textContent = `#${id} replayed to ${done.subject} (${done.stream} #${done.seq})`;
    $(`#dlq tr[data-id="${id}"]`)?.remove();
  } catch (err) {
    $("#dlq-status").textContent = `#${id} not replayed: ${err.message}`;
    button.disabled = false;
  }
}

$("#chat-form").addEventListener("submit", sendChat);
$("#task-form").addEventListener("submit", submitTask);
pollNodes();
pollDeadLetters();
stream({ kind: "alert", last: "50" }, showAlert);
stream({ kind: "chat", last: "50" }, showChat);
