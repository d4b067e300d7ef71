// The dashboard's live part: polls /api/overview and fills the tables, in place, with text
// nodes only (never markup: names and bodies come from clients). Actions send the session's
// CSRF token in X-Console-Token.
"use strict";

const POLL_MS = 1500;
const csrf = document.querySelector('meta[name="csrf"]').content;
const $ = (id) => document.getElementById(id);
let previous = null;

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren();
  for (const values of rows) {
    const tr = document.createElement("tr");
    for (const v of values) cell(tr, v === null || v === undefined ? "" : String(v));
    tbody.appendChild(tr);
  }
}

function seconds(ms) {
  return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s";
}

function when(unixMs) {
  return unixMs ? new Date(unixMs).toLocaleString() : "";
}

async function call(method, url, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  if (method !== "GET") options.headers["X-Console-Token"] = csrf;
  const response = await fetch(url, options);
  if (response.status === 401) {
    window.location.assign("/login");
    throw new Error("logged out");
  }
  const answer = response.status === 204 ? {} : await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function showCluster(cluster) {
  const warnings = $("warnings");
  warnings.replaceChildren();
  if (!cluster) {
    $("cluster-stale").textContent = "";
    $("holder").textContent = "standalone broker: no shared directory";
    return;
  }
  // Said by the server, with the reading's age: e.g. "cluster view from 12 s ago: reading the
  // shared directory timed out ...".
  $("cluster-stale").textContent = cluster.stale || "";
  if (cluster.read_unix_ms === null) {
    $("holder").textContent = "";
    fill($("nodes").tBodies[0], []);
    return;
  }
  for (const w of cluster.warnings) {
    const li = document.createElement("li");
    li.textContent = w;
    warnings.appendChild(li);
  }
  const h = cluster.holder;
  $("holder").textContent = h
    ? `lock holder: ${h.node} (host ${h.host}, pid ${h.pid}), epoch ${h.epoch}, ${h.state}, heartbeat ${seconds(h.heartbeat_age_ms)} ago`
    : "no node has held the lock yet";
  fill($("nodes").tBodies[0], cluster.nodes.map((n) => [
    n.node, n.host, n.role, n.epoch, seconds(n.heartbeat_age_ms) + " ago", when(n.since_unix_ms), n.reason,
  ]));
}

const rows = new Map();

function destinationRow(d) {
  let row = rows.get(d.name);
  if (row) return row;
  row = document.createElement("tr");
  row.dataset.name = d.name;
  for (const cls of ["name", "kind", "depth num", "consumers num", "enqueued num", "dequeued num",
                     "in num", "out num", "paged num", "oldest num"]) {
    cell(row, "", cls);
  }
  const actions = cell(row, "", "actions");
  if (d.kind === "queue") {
    const browse = document.createElement("button");
    browse.textContent = "Browse";
    browse.className = "browse";
    browse.addEventListener("click", () => browseQueue(d.name));
    const purge = document.createElement("button");
    purge.textContent = "Purge";
    purge.className = "purge";
    purge.addEventListener("click", () => purgeQueue(d.name, purge));
    actions.append(browse, " ", purge);
  }
  rows.set(d.name, row);
  return row;
}

function showDestinations(destinations, now) {
  const tbody = $("destinations").tBodies[0];
  const before = new Map((previous ? previous.destinations : []).map((d) => [d.name, d]));
  const elapsed = previous ? (now - previous.now_unix_ms) / 1000 : 0;
  const seen = new Set();
  for (const d of destinations) {
    const row = destinationRow(d);
    const last = before.get(d.name);
    const rate = (now, then) => (last && elapsed > 0 ? Math.max(0, (now - then) / elapsed).toFixed(1) : "");
    const set = (cls, value) => { row.querySelector("td." + cls.split(" ")[0]).textContent = String(value); };
    set("name", d.name);
    set("kind", d.kind);
    set("depth", d.depth);
    set("consumers", d.consumers);
    set("enqueued", d.enqueued);
    set("dequeued", d.dequeued);
    set("in", rate(d.enqueued, last && last.enqueued));
    set("out", rate(d.dequeued, last && last.dequeued));
    set("paged", d.paged_out);
    set("oldest", d.oldest_age_ms === null ? "" : seconds(d.oldest_age_ms));
    tbody.appendChild(row);
    seen.add(d.name);
  }
  for (const [name, row] of rows) {
    if (!seen.has(name)) {
      row.remove();
      rows.delete(name);
    }
  }
}

function showSchedules(overview) {
  const listing = overview.schedules;
  $("schedules-note").textContent = overview.schedules_error
    ? overview.schedules_error
    : listing.jobs.length === 0 ? "no pending jobs" : listing.cut ? "the first pending jobs" : "";
  fill($("schedules").tBodies[0], listing ? listing.jobs.map((j) => [
    j.id, j.destination, when(j.next_due_unix_ms), j.remaining, j.cron,
  ]) : []);
}

async function poll() {
  try {
    const overview = await call("GET", "/api/overview");
    showCluster(overview.cluster);
    $("broker").textContent = `${overview.connections} client connections; memory ${overview.memory_bytes} of ${overview.memory_limit_bytes} bytes`;
    showDestinations(overview.destinations, overview.now_unix_ms);
    showSchedules(overview);
    previous = overview;
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
    $("status").classList.remove("error");
  } catch (e) {
    $("status").textContent = "not updated: " + e.message;
    $("status").classList.add("error");
  }
}

async function browseQueue(queue) {
  $("browse").hidden = false;
  $("browse-queue").textContent = queue;
  $("browse-note").textContent = "reading…";
  try {
    const answer = await call("GET", "/api/browse?queue=" + encodeURIComponent(queue));
    const tbody = $("messages").tBodies[0];
    tbody.replaceChildren();
    for (const m of answer.messages) {
      const tr = document.createElement("tr");
      cell(tr, m.id, "id");
      cell(tr, when(m.timestamp_unix_ms));
      cell(tr, m.persistent ? "yes" : "no");
      cell(tr, String(m.priority), "num");
      cell(tr, String(m.redeliveries), "num");
      cell(tr, m.headers.map(([k, v]) => k + ":" + v).join("\n"));
      const body = document.createElement("pre");
      body.textContent = m.body + (m.truncated ? ` … (${m.body_bytes} bytes)` : "");
      cell(tr, "", "body").appendChild(body);
      tbody.appendChild(tr);
    }
    $("browse-note").textContent = answer.messages.length === 0
      ? "no messages waiting"
      : `${answer.messages.length} message(s)` + (answer.messages.length >= answer.limit ? ` (the first ${answer.limit})` : "");
  } catch (e) {
    $("browse-note").textContent = "browse failed: " + e.message;
  }
}

async function purgeQueue(queue, button) {
  if (!button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "Confirm purge";
    setTimeout(() => { button.classList.remove("armed"); button.textContent = "Purge"; }, 5000);
    return;
  }
  button.classList.remove("armed");
  button.textContent = "Purge";
  try {
    const answer = await call("POST", "/api/purge", { queue });
    $("status").textContent = `purged ${answer.removed} message(s) from ${queue}`;
  } catch (e) {
    $("status").textContent = "purge failed: " + e.message;
  }
  if (!$("browse").hidden && $("browse-queue").textContent === queue) browseQueue(queue);
  poll();
}

$("send").addEventListener("submit", async (event) => {
  event.preventDefault();
  const destination = $("send-destination").value;
  $("send-result").textContent = "sending…";
  try {
    await call("POST", "/api/send", { destination, body: $("send-body").value });
    $("send-result").textContent = "sent to " + destination;
  } catch (e) {
    $("send-result").textContent = "not sent: " + e.message;
  }
  poll();
});

$("logout").addEventListener("click", async () => {
  try {
    await call("POST", "/logout");
  } finally {
    window.location.assign("/login");
  }
});

poll();
setInterval(poll, POLL_MS);
