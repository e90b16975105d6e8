// The povss teach page: polls the state and the live overlay, lets a person freeze a frame,
// mark the object (a dragged box or a tapped point) and send a teach, a correction or a
// "not this one"; lists and forgets concepts; edits the vocabulary. No build step.
"use strict";

const TOKEN = document.querySelector('meta[name="povss-token"]').content;
const $ = (id) => document.getElementById(id);
const page = { frozen: null, mark: null, state: null, reviews: -1, busy: false };

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}

async function post(path, body) {
  // Every change: the token header and a JSON body (the server refuses anything else).
  let response;
  try {
    response = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Povss-Token": TOKEN },
      body: JSON.stringify(body || {}),
    });
  } catch (err) {
    throw new Error("the teach UI is not answering (is povss_teach_ui running?)");
  }
  let data = {};
  try { data = await response.json(); } catch (err) { /* not JSON: status below */ }
  if (!response.ok) throw new Error(data.error || `refused (HTTP ${response.status})`);
  return data;
}

// ------------------------------------------------------------------ node state
function showStatus(state, reachable) {
  const s = $("status");
  if (!reachable) {
    s.textContent = "the teach UI is not answering; retrying…";
    s.className = "status down";
  } else if (!state.connected) {
    s.textContent = `the povss node (${state.target}) is not there; waiting for it to come back…`;
    s.className = "status down";
  } else if (!state.frames) {
    s.textContent = `connected to ${state.target}, but no frames are arriving` +
      (state.overlay_age_s !== null ? ` (last one ${state.overlay_age_s} s ago)` : "");
    s.className = "status waiting";
  } else {
    s.textContent = `connected to ${state.target}: frames arriving` +
      (state.teaching ? `; teaching ${JSON.stringify(state.teaching)}…` : "");
    s.className = "status ok";
  }
  s.dataset.connected = reachable && state.connected ? "yes" : "no";
}

function showVocabulary(words) {
  const select = $("base");
  const current = select.value;
  const known = Array.from(select.options).map((o) => o.value).join("\n");
  if (known !== words.join("\n")) {
    select.replaceChildren(...words.map((w) => new Option(w, w)));
    if (words.includes(current)) select.value = current;
  }
  const box = $("vocabulary");
  if (document.activeElement !== box && !box.dataset.edited) box.value = words.join(", ");
}

function showConcepts(concepts) {
  const body = $("concepts").tBodies[0];
  const rows = concepts.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.conceptId = c.concept_id;
    const mask = c.mask === null ? "—" : `${c.mask.pixels} px`;
    for (const text of [c.name, c.base_class, String(c.shots), mask]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    tr.cells[3].className = "mask";
    if (c.mask !== null && c.mask.pixels > 0) {
      const img = new Image();
      img.src = `/api/mask/${encodeURIComponent(c.concept_id)}.jpg?s=${c.mask.stamp}`;
      img.alt = `${c.name}'s mask`;
      tr.cells[3].append(" ", img);
    }
    const act = document.createElement("td");
    const pick = document.createElement("button");
    pick.type = "button"; pick.textContent = "Select"; pick.className = "select";
    pick.onclick = () => {
      $("name").value = c.name;
      $("base").value = c.base_class;
      say(`selected ${c.name}: mark a frame and press "This one too" or "Not this one"`, "ok");
    };
    const forget = document.createElement("button");
    forget.type = "button"; forget.textContent = "Forget"; forget.className = "forget warn";
    forget.onclick = () => forgetConcept(c, forget);
    act.append(pick, forget);
    tr.append(act);
    return tr;
  });
  body.replaceChildren(...rows);
  $("no-concepts").hidden = concepts.length > 0;
}

async function poll() {
  let state = null;
  try {
    const response = await fetch("/api/state", { credentials: "same-origin" });
    if (!response.ok) throw new Error((await response.json()).error);
    state = await response.json();
  } catch (err) {
    showStatus(null, false);
    setTimeout(poll, 1500);
    return;
  }
  page.state = state;
  showStatus(state, true);
  showVocabulary(state.vocabulary);
  showConcepts(state.concepts);
  if (state.reviews !== page.reviews && state.reviews > 0) {
    page.reviews = state.reviews;
    $("review").src = `/api/review.jpg?n=${state.reviews}`;
  }
  setTimeout(poll, 1000);
}

function refreshLive() {
  // The next picture is asked once the last one is in: no pile-up on a slow link.
  const live = $("live");
  const next = () => setTimeout(refreshLive, 250);
  live.onload = next;
  live.onerror = () => setTimeout(refreshLive, 1000);
  live.src = `/api/live.jpg?t=${Date.now()}`;
}

// ------------------------------------------------------------------ freezing and marking
async function freeze() {
  try {
    const frozen = await post("/api/freeze");
    page.frozen = frozen;
    page.mark = null;
    $("frozen").src = `/api/frozen/${frozen.frame}.jpg`;
    $("frame-stamp").textContent = `(stamp ${frozen.frame} s, ${frozen.width}x${frozen.height})`;
    $("frozen-section").hidden = false;
    $("frozen").dataset.frame = frozen.frame;
    drawMark();
    say("frame frozen: mark the object on it", "ok");
  } catch (err) {
    say(err.message, "error");
  }
}

function framePoint(event) {
  // A pointer position -> pixels of the camera frame (the picture may be scaled).
  const rect = $("frozen").getBoundingClientRect();
  const x = (event.clientX - rect.left) / rect.width * page.frozen.width;
  const y = (event.clientY - rect.top) / rect.height * page.frozen.height;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
}

function drawMark() {
  const box = $("box"), dot = $("dot"), text = $("mark-text");
  box.hidden = dot.hidden = true;
  const m = page.mark;
  if (!m || !page.frozen) { text.textContent = "nothing marked yet"; return; }
  const sx = 100 / page.frozen.width, sy = 100 / page.frozen.height;
  if (m.kind === "box") {
    const [x0, y0, x1, y1] = m.values;
    Object.assign(box.style, { left: `${x0 * sx}%`, top: `${y0 * sy}%`,
      width: `${(x1 - x0) * sx}%`, height: `${(y1 - y0) * sy}%` });
    box.hidden = false;
    text.textContent = `box ${m.values.join(", ")} (pixels)`;
  } else {
    Object.assign(dot.style, { left: `${m.values[0] * sx}%`, top: `${m.values[1] * sy}%` });
    dot.hidden = false;
    text.textContent = `point ${m.values.join(", ")} (pixels)`;
  }
}

function setUpMarking() {
  const wrap = $("canvas-wrap");
  let start = null;
  wrap.addEventListener("pointerdown", (e) => {
    if (!page.frozen) return;
    e.preventDefault();
    wrap.setPointerCapture(e.pointerId);
    start = { p: framePoint(e), x: e.clientX, y: e.clientY };
    page.mark = { kind: "point", values: start.p };
    drawMark();
  });
  wrap.addEventListener("pointermove", (e) => {
    if (!start) return;
    if (Math.hypot(e.clientX - start.x, e.clientY - start.y) < 6) return;  // a tap, so far
    const [ax, ay] = start.p, [bx, by] = framePoint(e);
    page.mark = { kind: "box", values: [Math.min(ax, bx), Math.min(ay, by),
                                        Math.max(ax, bx), Math.max(ay, by)] };
    drawMark();
  });
  const end = () => { start = null; };
  wrap.addEventListener("pointerup", end);
  wrap.addEventListener("pointercancel", end);
}

// ------------------------------------------------------------------ teaching
function showAnswer(answer) {
  $("answer-section").hidden = false;
  $("answer").textContent = answer.summary;
  $("answer").dataset.success = answer.success ? "yes" : "no";
  $("rejected").replaceChildren(...answer.rejected_frames.map((why) => {
    const li = document.createElement("li");
    li.textContent = `rejected: ${why}`;
    return li;
  }));
}

async function teach(kind) {
  if (page.busy) return;
  if (!page.frozen) { say("freeze a frame first", "error"); return; }
  if (!page.mark) { say("draw a box around the object or tap a point on it", "error"); return; }
  const body = {
    name: $("name").value, base_class: $("base").value, frame: page.frozen.frame,
    mark: page.mark, overwrite: kind === "teach" && $("overwrite").checked,
    category: $("category").checked, correct: kind !== "teach", negative: kind === "not-this",
  };
  page.busy = true;
  for (const id of ["teach", "correct", "not-this"]) $(id).disabled = true;
  say(kind === "not-this" ? "correcting: not this one… (the node answers when training ends)"
    : "teaching… (the node answers when training ends)", "");
  try {
    const answer = await post("/api/teach", body);
    showAnswer(answer);
    say(answer.success ? `done: ${answer.message}` : `the node refused: ${answer.message}`,
      answer.success ? "ok" : "error");
  } catch (err) {
    say(err.message, "error");
  } finally {
    page.busy = false;
    for (const id of ["teach", "correct", "not-this"]) $(id).disabled = false;
  }
}

async function forgetConcept(concept, button) {
  if (button.dataset.armed !== "yes") {  // two taps: no concept is lost to a stray one
    button.dataset.armed = "yes";
    button.textContent = "Really forget?";
    return;
  }
  try {
    const answer = await post("/api/forget", { name: concept.concept_id });
    say(answer.success ? answer.message : `the node refused: ${answer.message}`,
      answer.success ? "ok" : "error");
  } catch (err) {
    say(err.message, "error");
  }
}

async function setVocabulary() {
  try {
    const answer = await post("/api/vocabulary", { words: $("vocabulary").value });
    delete $("vocabulary").dataset.edited;
    say(answer.success ? answer.message : `the node refused: ${answer.message}`,
      answer.success ? "ok" : "error");
  } catch (err) {
    say(err.message, "error");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("freeze").onclick = freeze;
  $("teach").onclick = () => teach("teach");
  $("correct").onclick = () => teach("correct");
  $("not-this").onclick = () => teach("not-this");
  $("set-vocabulary").onclick = setVocabulary;
  $("vocabulary").addEventListener("input", () => { $("vocabulary").dataset.edited = "yes"; });
  setUpMarking();
  refreshLive();
  poll();
});
