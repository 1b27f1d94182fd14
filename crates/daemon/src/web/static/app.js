// The reviewer's page: live output from the event stream, keyboard
// shortcuts. Served by cloched as a file of its own (the page's CSP allows
// no inline script). Text from the daemon is only ever set with
// textContent (never innerHTML): an agent's output stays text.
"use strict";

// The most live output kept on the page per entry: older text is dropped
// (the whole stays downloadable once the entry ended).
const LIVE_MAX = 64 * 1024;

// Control characters (but newline and tab) and bidirectional controls made
// visible, as the server does.
function visible(s) {
  return s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const n = c.charCodeAt(0);
    if (n < 0x20) return String.fromCharCode(0x2400 + n);
    if (n === 0x7f) return "\u2421";
    return "\\u{" + n.toString(16) + "}";
  });
}

function b64bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function live(batch) {
  const status = document.getElementById("live-status");
  const decoders = new Map();
  const pres = new Map();
  for (const p of document.querySelectorAll("pre.live")) pres.set(p.dataset.entry, p);
  const pending = new Map();
  let scheduled = false;
  // Appends are batched per animation frame: a fast stream costs one DOM
  // change per entry and frame.
  function flush() {
    scheduled = false;
    for (const [entry, text] of pending) {
      const pre = pres.get(entry);
      if (!pre) continue;
      pre.hidden = false;
      let all = pre.textContent + text;
      if (all.length > LIVE_MAX) {
        all = "[… earlier output not shown …]\n" + all.slice(all.length - LIVE_MAX);
      }
      pre.textContent = all;
      pre.scrollTop = pre.scrollHeight;
    }
    pending.clear();
  }
  // since=0: what the daemon still holds of this batch first (a run that
  // started before the page loaded), then the live events.
  const es = new EventSource("/events?since=0&batch=" + encodeURIComponent(batch));
  es.addEventListener("output", (ev) => {
    const d = JSON.parse(ev.data).data;
    const key = d.entry + "/" + d.stream;
    if (!decoders.has(key)) decoders.set(key, new TextDecoder("utf-8"));
    const text = visible(decoders.get(key).decode(b64bytes(d.data_b64), { stream: true }));
    pending.set(d.entry, (pending.get(d.entry) || "") + text);
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(flush);
    }
  });
  for (const kind of ["approved", "rejected", "world_started", "entry_started", "entry_finished", "cancelled"]) {
    es.addEventListener(kind, () => {
      if (status) status.textContent = kind.replace("_", " ");
    });
  }
  es.addEventListener("run_ended", () => {
    es.close();
    if (status) status.textContent = "run ended: reloading";
    flush();
    setTimeout(() => location.reload(), 300);
  });
}

// Keyboard: a approves the whole batch, r goes to the reject reason,
// j / k move between entries. Not while typing in a field.
function keys() {
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
    const entries = Array.from(document.querySelectorAll("li.entry"));
    if (ev.key === "a") {
      const f = document.getElementById("approve-all");
      if (f) { ev.preventDefault(); f.requestSubmit(); }
    } else if (ev.key === "r") {
      const r = document.getElementById("reason");
      if (r) { ev.preventDefault(); r.focus(); }
    } else if ((ev.key === "j" || ev.key === "k") && entries.length) {
      ev.preventDefault();
      const at = entries.indexOf(document.activeElement.closest ? document.activeElement.closest("li.entry") : null);
      const next = ev.key === "j" ? Math.min(at + 1, entries.length - 1) : Math.max(at - 1, 0);
      entries[next].focus();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  keys();
  const b = document.getElementById("batch");
  if (b && b.dataset.live === "1") live(b.dataset.batch);
});
