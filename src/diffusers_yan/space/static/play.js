// The Yan Space game page: held keys go up a WebSocket, JPEG frames come down and are drawn on a canvas.
// Protocol: see diffusers_yan/space/server.py. Every tab has its own session (id kept in sessionStorage, so a
// reload resumes the same world while it is alive); custom key bindings are kept in localStorage per model.
// Yan-Gen models (info.kind === "yan-gen") also get a prompt box: a changed prompt is sent up and the server's
// world follows it from its next block.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  config: null, model: null, info: null, ws: null, sessionId: null,
  heldKeys: new Set(), heldButtons: new Set(), bindings: {}, status: "connecting",
  expected: 0, pendingMeta: null, queue: [], lastFrameAt: 0, gap: 0, burst: 1, startIndex: 0, listeningFor: null,
  framesDrawn: 0, sentPrompt: null,
};
window.yan = state; // for debugging and the browser test

// ------------------------------------------------------------------ helpers
function message(text, isError = false) {
  const el = $("message");
  el.textContent = text || "";
  el.classList.toggle("error", !!isError);
}
function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}
function prettyKey(code) {
  const arrows = { ArrowUp: "↑", ArrowDown: "↓", ArrowLeft: "←", ArrowRight: "→" };
  return arrows[code] || code.replace(/^Key/, "").replace(/^Digit/, "");
}
function bindingsKey() { return "yan-bindings-" + state.model; }
function isGen() { return state.info && state.info.kind === "yan-gen"; }

// ------------------------------------------------------------------ setup
async function init() {
  const response = await fetch("api/config");
  state.config = await response.json();
  const select = $("model");
  for (const m of state.config.models) select.add(new Option(`${m.name} (${m.kind})`, m.name));
  const saved = sessionStorage.getItem("yan-model");
  state.model = state.config.models.some((m) => m.name === saved) ? saved : state.config.default_model;
  select.value = state.model;
  select.onchange = () => {
    sessionStorage.setItem("yan-model", select.value);
    sessionStorage.removeItem("yan-session");
    location.reload();
  };
  $("max-sessions").textContent = state.config.max_sessions;
  $("idle-timeout").textContent = Math.round(state.config.idle_timeout);
  if (!state.config.clip_path) $("clip-link").style.display = "none";
  state.info = state.config.models.find((m) => m.name === state.model);
  const custom = localStorage.getItem(bindingsKey());
  state.bindings = custom ? JSON.parse(custom) : { ...state.info.key_bindings };
  const canvas = $("screen");
  canvas.width = state.info.width;
  canvas.height = state.info.height;
  canvas.parentElement.style.aspectRatio = `${state.info.width} / ${state.info.height}`;
  setupKind();
  buildStarts();
  buildPad();
  buildBindings();
  connect();
}

function setupKind() {
  const gen = isGen();
  $("brand").textContent = gen ? "Yan-Gen" : "Yan-Sim";
  $("tagline").textContent = gen
    ? "a world generated block by block from your prompt and your keys"
    : "a game world dreamed frame by frame by a diffusion model";
  document.title = `${gen ? "Yan-Gen" : "Yan-Sim"} · play a neural game world`;
  $("prompt-box").hidden = !gen;
  $("prompt").maxLength = state.config.max_prompt_chars;
  $("upload-label").hidden = !state.info.takes_image;
  $("start-note").hidden = state.info.takes_image;
}

function buildStarts() {
  const box = $("starts");
  box.innerHTML = "";
  for (let i = 0; i < state.info.num_start_frames; i++) {
    const img = new Image();
    img.src = `api/models/${encodeURIComponent(state.model)}/start-frames/${i}.png`;
    img.title = `start frame ${i + 1}`;
    img.onclick = () => {
      chooseStart(i);
      flushPrompt();
      send({ type: "reset", start: { kind: "bundled", index: i }, seed: seed() });
    };
    box.appendChild(img);
  }
  chooseStart(0);
  if (state.info.takes_image && state.info.num_start_frames === 0) {
    message("This model has no bundled start frames: upload an image to start.");
  }
}
function chooseStart(i) {
  state.startIndex = i;
  [...$("starts").children].forEach((el, j) => {
    el.classList.toggle("chosen", j === i);
    // before the first frame arrives, show the chosen start frame instead of a black screen
    if (j === i && state.framesDrawn === 0) {
      const draw = () => { if (state.framesDrawn === 0) paint(el); };
      if (el.complete) draw(); else el.addEventListener("load", draw, { once: true });
    }
  });
}
function paint(image) {
  const canvas = $("screen");
  canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
}
function seed() {
  const v = $("seed").value.trim();
  return v === "" ? null : Number(v);
}

function buildPad() {
  const pad = $("pad");
  pad.innerHTML = "";
  for (const name of state.info.buttons) {
    const b = document.createElement("button");
    b.textContent = name.replace(/_/g, " ");
    b.dataset.button = name;
    const press = (e) => { e.preventDefault(); state.heldButtons.add(name); b.classList.add("held"); sendKeys(); };
    const release = (e) => {
      e.preventDefault();
      if (state.heldButtons.delete(name)) { b.classList.remove("held"); sendKeys(); }
    };
    b.addEventListener("pointerdown", press);
    b.addEventListener("pointerup", release);
    b.addEventListener("pointerleave", release);
    b.addEventListener("pointercancel", release);
    b.addEventListener("contextmenu", (e) => e.preventDefault());
    pad.appendChild(b);
  }
}

function buildBindings() {
  const table = $("bindings");
  table.innerHTML = "";
  for (const name of state.info.buttons) {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    const cell = row.insertCell();
    for (const [code, button] of Object.entries(state.bindings)) {
      if (button !== name) continue;
      const k = document.createElement("kbd");
      k.textContent = prettyKey(code);
      k.title = `${code} (click to remove)`;
      k.dataset.code = code;
      k.onclick = () => { delete state.bindings[code]; saveBindings(); };
      cell.appendChild(k);
    }
    const add = document.createElement("button");
    add.textContent = state.listeningFor === name ? "press a key…" : "+";
    add.classList.toggle("listening", state.listeningFor === name);
    add.onclick = () => { state.listeningFor = name; buildBindings(); };
    cell.appendChild(add);
  }
}
function saveBindings() {
  localStorage.setItem(bindingsKey(), JSON.stringify(state.bindings));
  buildBindings();
  send({ type: "bindings", bindings: state.bindings });
}
$("bindings-reset").onclick = () => {
  localStorage.removeItem(bindingsKey());
  state.bindings = { ...state.info.key_bindings };
  buildBindings();
  send({ type: "bindings", bindings: {} });
};

// ------------------------------------------------------------------ the WebSocket
function connect() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.binaryType = "blob";
  state.ws = ws;
  ws.onopen = () => {
    const custom = localStorage.getItem(bindingsKey());
    send({ type: "hello", session: sessionStorage.getItem("yan-session"), model: state.model,
           bindings: custom ? JSON.parse(custom) : null });
  };
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") { onFrame(event.data); return; }
    const msg = JSON.parse(event.data);
    if (msg.type === "hello") {
      state.sessionId = msg.session;
      sessionStorage.setItem("yan-session", msg.session);
      onStatus(msg);
    } else if (msg.type === "status") {
      onStatus(msg);
      if (msg.message) message(msg.message);
    } else if (msg.type === "frame") {
      onMeta(msg);
    } else if (msg.type === "error") {
      message(msg.message, true);
    }
  };
  ws.onclose = () => {
    setStatus("disconnected");
    if (state.status !== "closed") setTimeout(connect, 1500);
  };
}

function setStatus(status, position) {
  state.status = status;
  const label = status === "queued" && position ? `queued · #${position} in line` : status;
  $("status").textContent = label;
  const playing = status === "playing" || status === "queued";
  $("play").textContent = playing ? "Pause" : "Start";
  const overlay = $("overlay");
  if (status === "queued") {
    overlay.innerHTML = `<div class="big">Waiting for a free seat</div><div class="small">You are #${position || "?"}`
      + ` in line · ${state.config.max_sessions} playing at a time</div>`;
    overlay.classList.remove("hidden");
  } else if (status === "closed") {
    overlay.innerHTML = '<div class="big">This world was freed</div><div class="small">Reload the page for a new one</div>';
    overlay.classList.remove("hidden");
  } else if (status === "playing" || state.framesDrawn > 0) {
    overlay.classList.add("hidden");
  }
}
function onStatus(msg) {
  setStatus(msg.status, msg.queue_position);
  // the session's prompt (a resumed world's, or the one just applied), unless the visitor is typing a new one
  if (msg.prompt !== undefined && document.activeElement !== $("prompt")) $("prompt").value = msg.prompt;
  if (msg.prompt !== undefined) state.sentPrompt = msg.prompt;
  $("record").checked = !!msg.record;
  if (msg.frame_index !== undefined) $("frame-counter").textContent = msg.frame_index;
  if (msg.status === "closed") { sessionStorage.removeItem("yan-session"); }
}

function onMeta(msg) {
  state.pendingMeta = msg;
  state.expected = msg.n || 0;
  state.burst = Math.max(1, msg.n || 1);
  const now = performance.now();
  // spread the frames of one model call over the time between calls (a Yan-Sim action makes 2 video frames by
  // default, a Yan-Gen block 4 per latent frame)
  if (state.lastFrameAt) state.gap = Math.min(150, (now - state.lastFrameAt) / state.burst);
  state.lastFrameAt = now;
  $("frame-counter").textContent = msg.frame_index;
  if (msg.fps !== undefined) $("fps").textContent = msg.fps.toFixed(1);
  if (msg.latency_ms !== undefined) $("latency").textContent = `${Math.round(msg.latency_ms)} ms`;
  if (msg.action) $("action").textContent = msg.action.length ? msg.action.join(" + ") : "NOOP";
  if (msg.status && msg.status !== state.status && msg.status !== "ready") setStatus(msg.status);
}

async function onFrame(blob) {
  const bitmap = await createImageBitmap(blob);
  state.queue.push(bitmap);
  // never fall behind: keep the frames of about two model calls (the one playing and the next); if more pile up
  // (a slow tab), drop the oldest
  while (state.queue.length > 2 * state.burst + 2) state.queue.shift().close();
  if (state.queue.length === 1) pump();
}
function pump() {
  const bitmap = state.queue[0];
  if (!bitmap) return;
  const canvas = $("screen");
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width; canvas.height = bitmap.height;
  }
  state.framesDrawn++;
  paint(bitmap);
  if (state.framesDrawn === 1 && state.status !== "queued") $("overlay").classList.add("hidden");
  const behind = state.queue.length > state.burst + 1; // a whole call's frames waiting behind this one: catch up
  setTimeout(() => { state.queue.shift(); bitmap.close(); pump(); }, behind ? 0 : state.gap);
}

// ------------------------------------------------------------------ keys
function sendKeys() {
  send({ type: "keys", keys: [...state.heldKeys], buttons: [...state.heldButtons] });
  for (const k of document.querySelectorAll("#bindings kbd")) k.classList.toggle("held", state.heldKeys.has(k.dataset.code));
  for (const b of document.querySelectorAll("#pad button")) {
    const viaKey = [...state.heldKeys].some((code) => state.bindings[code] === b.dataset.button);
    b.classList.toggle("held", viaKey || state.heldButtons.has(b.dataset.button));
  }
}
function typing(e) {
  const t = e.target;
  return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
}
window.addEventListener("keydown", (e) => {
  if (state.listeningFor) {
    e.preventDefault();
    if (e.code !== "Escape") state.bindings[e.code] = state.listeningFor;
    state.listeningFor = null;
    saveBindings();
    return;
  }
  if (typing(e)) return;
  if (!(e.code in state.bindings)) return;
  e.preventDefault(); // arrows and space must not scroll the page
  if (e.repeat || state.heldKeys.has(e.code)) return; // auto-repeat: the key is already held, nothing to send
  state.heldKeys.add(e.code);
  sendKeys();
});
window.addEventListener("keyup", (e) => {
  if (state.heldKeys.delete(e.code)) { e.preventDefault(); sendKeys(); }
});
function releaseAll() {
  if (state.heldKeys.size || state.heldButtons.size) {
    state.heldKeys.clear(); state.heldButtons.clear(); sendKeys();
  }
}
window.addEventListener("blur", releaseAll); // a key released in another window never sends keyup here
document.addEventListener("visibilitychange", () => { if (document.hidden) releaseAll(); });

// ------------------------------------------------------------------ the prompt (Yan-Gen)
function sendPrompt() {
  state.sentPrompt = $("prompt").value;
  send({ type: "prompt", prompt: state.sentPrompt });
}
function flushPrompt() { // a prompt typed but not applied yet goes with the next command
  if (isGen() && $("prompt").value !== state.sentPrompt) sendPrompt();
}
$("prompt-box").onsubmit = (e) => { e.preventDefault(); sendPrompt(); $("screen").focus(); };
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); sendPrompt(); $("screen").focus(); }
});

// ------------------------------------------------------------------ buttons
$("play").onclick = () => {
  const playing = state.status === "playing" || state.status === "queued";
  if (!playing) flushPrompt();
  send({ type: playing ? "pause" : "play" });
  $("screen").focus();
};
$("step").onclick = () => { flushPrompt(); send({ type: "step" }); };
$("reset").onclick = () => { flushPrompt(); send({ type: "reset", seed: seed() }); };
$("record").onchange = (e) => send({ type: "record", on: e.target.checked });
$("download").onclick = async () => {
  if (!state.sessionId) return;
  message("Encoding the recording…");
  const r = await fetch(`api/sessions/${state.sessionId}/recording.mp4`);
  if (!r.ok) { message((await r.json()).error, true); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url; a.download = "yan-session.mp4"; a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  message("Recording downloaded.");
};
$("upload").onchange = async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file || !state.sessionId) return;
  if (file.size > state.config.max_upload_bytes) { message("That file is too large.", true); return; }
  message("Uploading…");
  const r = await fetch(`api/sessions/${state.sessionId}/start-image`, { method: "POST", body: file,
    headers: { "Content-Type": "application/octet-stream" } });
  const body = await r.json().catch(() => ({ error: `upload failed (HTTP ${r.status})` }));
  if (!r.ok) { message(body.error, true); return; }
  chooseStart(-1);
  message(`New world from ${file.name}.`);
  flushPrompt();
  send({ type: "reset", start: { kind: "upload" }, seed: seed() });
};

init().catch((e) => message(`Could not load the page's configuration: ${e}`, true));
