// ppz console: live tail, live presence and the send box. Messages are untrusted: this script
// only ever sets textContent, never HTML.
"use strict";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function messageItem(m) {
  const li = el("li", m.receipt ? "msg receipt" : "msg");
  li.dataset.seq = String(m.seq);
  const time = el("time", "", m.time);
  time.title = m.created_at;
  li.append(time, " ", el("span", "sender", m.sender), " ");
  if (m.receipt) {
    li.append(el("span", "receipt-text", m.receipt));
    return li;
  }
  if (m.badge) li.append(el("span", "badge " + m.badge, m.badge), " ");
  if (m.subject) li.append(el("span", "subject", "[" + m.subject + "]"), " ");
  li.append(el("span", "payload", m.payload));
  return li;
}

function startTail(list) {
  const state = document.getElementById("live-state");
  let last = 0;
  for (const li of list.querySelectorAll("li[data-seq]")) last = Math.max(last, Number(li.dataset.seq));
  const source = new EventSource(list.dataset.events);
  source.addEventListener("open", () => { if (state) state.textContent = "live"; });
  source.addEventListener("error", () => { if (state) state.textContent = "reconnecting…"; });
  source.addEventListener("msg", (event) => {
    const m = JSON.parse(event.data);
    if (m.seq <= last) return;
    last = m.seq;
    const item = messageItem(m);
    list.append(item);
    item.scrollIntoView({block: "nearest"});
  });
}

function startPresence(table) {
  const body = table.tBodies[0];
  const source = new EventSource(table.dataset.events);
  const pipes = document.getElementById("pipes");
  source.addEventListener("pipes", (event) => { if (pipes) updatePipes(pipes, JSON.parse(event.data)); });
  source.addEventListener("presence", (event) => {
    const rows = JSON.parse(event.data);
    body.replaceChildren();
    for (const r of rows) {
      const tr = el("tr");
      const status = el("span", "status " + r.status, r.status);
      const cells = [r.handle, status, r.state, r.harness, r.model, r.host, r.last];
      for (const c of cells) {
        const td = el("td");
        td.append(c);
        tr.append(td);
      }
      body.append(tr);
    }
    if (!rows.length) {
      const tr = el("tr", "empty");
      const td = el("td", "", "no pty sources");
      td.colSpan = 7;
      tr.append(td);
      body.append(tr);
    }
  });
}

function updatePipes(table, rows) {
  const body = table.tBodies[0];
  for (const r of rows) {
    let tr = body.querySelector('tr[data-pipe="' + CSS.escape(r.name) + '"]');
    if (!tr) {
      for (const empty of body.querySelectorAll("tr.empty")) empty.remove();
      tr = el("tr");
      tr.dataset.pipe = r.name;
      const link = el("a", "", r.name);
      link.href = "/ui/pipes/" + encodeURIComponent(r.name);
      const first = el("td");
      first.append(link);
      tr.append(first, el("td"), el("td"), el("td"), el("td", "preview"));
      body.append(tr);
    }
    const cells = tr.cells;
    cells[1].textContent = String(r.total);
    cells[2].textContent = r.last || "";
    cells[3].textContent = r.sender || "";
    cells[4].textContent = r.preview || "";
  }
}

function startSendBox(form) {
  const status = document.getElementById("send-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "sending…";
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: {"Accept": "application/json"},
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
      });
      const reply = await response.json();
      if (!response.ok) {
        status.textContent = "not sent: " + ((reply.error && (reply.error.message || reply.error.code)) || response.status);
        return;
      }
      status.textContent = "sent to " + reply.to + " (seq " + reply.seq + ")";
      form.elements.message.value = "";
    } catch (err) {
      status.textContent = "not sent: " + err;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const list = document.querySelector("#messages[data-events]");
  if (list) startTail(list);
  const presence = document.querySelector("#presence[data-events]");
  if (presence) startPresence(presence);
  const form = document.getElementById("send-form");
  if (form) startSendBox(form);
});
