// textgen playground: plain JavaScript, no build step, no network beyond this server.
// Streams /v1/completions (SSE) with logprobs, shades each character by its probability,
// and draws each run's validation curve as SVG from /v1/textgen/runs.
// Every string that comes from the server (runs, models, errors, generated text) enters the page
// as text: nodes are built by el() and filled with text nodes; nothing here parses HTML.

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const SVG_TAGS = new Set(["svg", "line", "text", "path", "circle", "title"]);

// el("td", { class: "muted" }, "text", child...): an element; strings become text nodes, null is skipped.
// `style` takes an object (set through the CSSOM, which the Content-Security-Policy allows).
function el(tag, attrs = {}, ...children) {
  const node = SVG_TAGS.has(tag) ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// A figure from the server as text: numbers formatted, anything else shown as it is.
function figure(value, digits) {
  if (typeof value !== "number" || !Number.isFinite(value)) return value == null ? "–" : String(value);
  return digits === undefined ? value.toLocaleString() : value.toFixed(digits);
}
const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
const state = { controller: null, samples: [], started: 0, chars: 0, lastPrompts: null, pending: [], frame: 0 };

// ---------------------------------------------------------------------------- settings and HTTP

function apiKey() { return localStorage.getItem("textgen-key") || ""; }

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey()) h.Authorization = `Bearer ${apiKey()}`;
  return h;
}

async function getJSON(path) {
  const answer = await fetch(path, { headers: headers() });
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.error ? body.error.message : answer.statusText);
  return body;
}

function settings() {
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const stops = $("stops").value.split("\n").map(unescape).filter((s) => s.length).slice(0, 4);
  const body = {
    model: $("model").value,
    prompt: $("prompt").value,
    max_tokens: number("length") || 16,
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    n: number("n") || 1,
  };
  if (number("top-k")) body.top_k = number("top-k");
  if (number("seed") !== null) body.seed = number("seed");
  if (stops.length) body.stop = stops;
  return body;
}

function unescape(text) { return text.replace(/\\n/g, "\n").replace(/\\t/g, "\t"); }

// ---------------------------------------------------------------------------- output columns

function makeColumns(count, prefixes) {
  const box = $("outputs");
  box.textContent = "";
  box.style.setProperty("--columns", Math.min(count, 4));
  state.samples = [];
  for (let i = 0; i < count; i++) {
    const card = el("article", { class: "sample" },
      el("header", {}, el("span", {}, `Sample ${i + 1}`), el("span", { class: "finish muted" })));
    const text = document.createElement("div");
    text.className = "text";
    text.dataset.index = i;
    const prefix = document.createElement("span");
    prefix.className = "prefix";
    prefix.textContent = prefixes[i] || "";
    card.appendChild(text);
    box.appendChild(card);
    const sample = { card, text, generated: "", shaded: 0, ended: [], following: true, finish: null };
    newChunk(sample);
    sample.chunk.appendChild(prefix);
    // Follow the text as it grows until the reader scrolls up; scrolling back down follows again.
    text.addEventListener("scroll", () => {
      sample.following = text.scrollHeight - text.scrollTop - text.clientHeight < 24;
    }, { passive: true });
    state.samples.push(sample);
  }
}

// Shade by surprise in bits (-log2 p): level 0 (certain, clear) to 8 (8+ bits, p < 0.4%, darkest).
function shade(logprob) {
  return Math.min(8, Math.round(-logprob / Math.LN2));
}

// A sample's text lives in block "chunks" that end at a newline (or at CHUNK_MAX characters on
// a line that never ends), so a new character re-lays out only the last chunk, and chunks out of
// view are skipped (content-visibility in the CSS). Past SHADED_LIMIT characters the oldest
// chunks fold into plain text: the page stays responsive however long a sample grows.
const CHUNK_MIN = 200;
const CHUNK_MAX = 4000;
const SHADED_LIMIT = 20000;

// Events only queue their text; one animation frame renders everything queued since the last.
function queueText(index, text, logprobs) {
  const sample = state.samples[index];
  if (!sample) return;
  sample.generated += text;
  state.chars += Array.from(text).length;
  state.pending.push([index, text, logprobs]);
  if (!state.frame) state.frame = requestAnimationFrame(render);
}

function newChunk(sample) {
  const chunk = document.createElement("div");
  chunk.className = "chunk";
  sample.text.appendChild(chunk);
  sample.chunk = chunk;
  sample.chunkChars = 0;
}

function render() {
  state.frame = 0;
  const pending = state.pending;
  state.pending = [];
  const touched = new Set();
  for (const [index, text, logprobs] of pending) {
    const sample = state.samples[index];
    touched.add(sample);
    Array.from(text).forEach((char, k) => {
      const span = document.createElement("span");
      span.textContent = char;
      const logprob = logprobs ? logprobs.token_logprobs[k] : null;
      if (logprob != null) {
        span.className = `s${shade(logprob)}`;
        span.dataset.p = logprob;
        span.dataset.top = JSON.stringify(logprobs.top_logprobs[k] || {});
      }
      sample.chunk.appendChild(span);
      sample.chunkChars += 1;
      sample.shaded += 1;
      if ((char === "\n" && sample.chunkChars >= CHUNK_MIN) || sample.chunkChars >= CHUNK_MAX) {
        sample.ended.push(sample.chunk);
        newChunk(sample);
      }
    });
  }
  for (const sample of touched) {
    fold(sample);
    if (sample.following) sample.text.scrollTop = sample.text.scrollHeight;
  }
  const seconds = (performance.now() - state.started) / 1000;
  if (seconds > 0.2) $("rate").textContent = Math.round(state.chars / seconds).toLocaleString();
}

function fold(sample) {
  while (sample.shaded > SHADED_LIMIT && sample.ended.length) {
    const chunk = sample.ended.shift();
    const prefix = chunk.querySelector(".prefix");
    sample.shaded -= chunk.childElementCount - (prefix ? 1 : 0);
    chunk.textContent = chunk.textContent.slice(prefix ? prefix.textContent.length : 0);
    if (prefix) chunk.prepend(prefix);
  }
}

function flush() {
  if (state.frame) cancelAnimationFrame(state.frame);
  render();
}

// Hand the main thread back to input and rendering (the Stop button) between bursts of events.
function pause() {
  if (globalThis.scheduler && scheduler.yield) return scheduler.yield();
  return new Promise((resolve) => setTimeout(resolve, 0));
}

// ---------------------------------------------------------------------------- streaming

async function generate(prompts) {
  stop();
  const body = settings();
  body.stream = true;
  body.logprobs = 5;
  if (prompts) { body.prompt = prompts; body.n = 1; } else { prompts = Array(body.n).fill(body.prompt); }
  state.lastPrompts = prompts;
  state.pending = [];
  makeColumns(prompts.length, prompts);
  state.controller = new AbortController();
  state.started = performance.now();
  state.chars = 0;
  setRunning(true);
  status("Generating…");
  try {
    const answer = await fetch("/v1/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!answer.ok) {
      const error = await answer.json().catch(() => ({}));
      throw new Error(error.error ? error.error.message : `HTTP ${answer.status}`);
    }
    await readEvents(answer.body.getReader());
    status(`Done: ${state.chars.toLocaleString()} characters.`);
  } catch (error) {
    if (error.name === "AbortError") status("Stopped.");
    else status(error.message, true);
  } finally {
    flush();
    state.controller = null;
    setRunning(false);
  }
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  let worked = performance.now();
  for (;;) {
    // A stream that outpaces the page would otherwise keep this loop in microtasks for good.
    if (performance.now() - worked > 8) { await pause(); worked = performance.now(); }
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!block.startsWith("data: ")) continue;
      const data = block.slice(6);
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) throw new Error(event.error.message);
      if (event.seed !== undefined) $("seed-used").textContent = event.seed;
      for (const choice of event.choices || []) {
        if (choice.text) queueText(choice.index, choice.text, choice.logprobs);
        if (choice.finish_reason) finish(choice.index, choice.finish_reason);
      }
    }
  }
}

function finish(index, reason) {
  const sample = state.samples[index];
  if (!sample) return;
  sample.finish = reason;
  sample.card.querySelector(".finish").textContent = reason === "stop" ? "stopped at a stop string" : reason;
}

function stop() {
  if (state.controller) state.controller.abort();
}

function setRunning(running) {
  $("generate").disabled = running;
  $("stop").disabled = !running;
  $("continue").disabled = running || !state.samples.length;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function continueSamples() {
  if (!state.lastPrompts) return;
  const prompts = state.samples.map((s, i) => state.lastPrompts[i] + s.generated);
  $("seed").value = "";
  generate(prompts);
}

// ---------------------------------------------------------------------------- tooltip

function showTip(event) {
  const span = event.target;
  if (span.tagName !== "SPAN" || span.dataset.p === undefined) { $("tip").hidden = true; return; }
  const shown = (c) => (c === "\n" ? "↵" : c === " " ? "␣" : c === "\t" ? "⇥" : c);
  const top = Object.entries(JSON.parse(span.dataset.top));
  const percent = (lp) => `${(Math.exp(Number(lp)) * 100).toFixed(1)}%`;
  const rows = top.map(([c, lp]) => el("tr", { class: c === span.textContent ? "mine" : null },
    el("td", {}, el("code", {}, shown(c))), el("td", {}, el("i", { style: { width: percent(lp) } })),
    el("td", {}, percent(lp))));
  $("tip").replaceChildren(el("div", {}, el("code", {}, shown(span.textContent)), ` had p = ${percent(span.dataset.p)}`),
    el("table", {}, rows));
  $("tip").hidden = false;
  const box = span.getBoundingClientRect();
  const tip = $("tip").getBoundingClientRect();
  const left = Math.min(window.innerWidth - tip.width - 8, Math.max(8, box.left));
  const above = box.top - tip.height - 6;
  $("tip").style.left = `${left}px`;
  $("tip").style.top = `${above > 8 ? above : box.bottom + 6}px`;
}

// ---------------------------------------------------------------------------- copy as curl / Python

function snippet(kind) {
  const body = settings();
  const url = `${location.origin}/v1/completions`;
  let text;
  if (kind === "curl") {
    const auth = apiKey() ? ` \\\n  -H "Authorization: Bearer $TEXTGEN_API_KEY"` : "";
    const json = JSON.stringify({ ...body, stream: true }).replace(/'/g, "'\\''");
    text = `curl -N ${url} \\\n  -H "Content-Type: application/json"${auth} \\\n  -d '${json}'`;
  } else {
    const args = [`model=${JSON.stringify(body.model)}`, `prompt=${JSON.stringify(body.prompt)}`,
      `max_tokens=${body.max_tokens}`, `temperature=${body.temperature}`, `top_p=${body.top_p}`, `n=${body.n}`];
    if (body.seed !== undefined) args.push(`seed=${body.seed}`);
    if (body.stop) args.push(`stop=${JSON.stringify(body.stop)}`);
    if (body.top_k) args.push(`extra_body={"top_k": ${body.top_k}}`);
    const key = apiKey() ? `os.environ["TEXTGEN_API_KEY"]` : `"unused"`;
    text = `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${location.origin}/v1", api_key=${key})\n` +
      `for chunk in client.completions.create(${args.join(", ")}, stream=True):\n` +
      `    print(chunk.choices[0].text, end="", flush=True)\n`;
  }
  $("snippet").textContent = text;
  $("snippet").hidden = false;
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => status(`Copied as ${kind === "curl" ? "curl" : "Python"}.`));
  } else {
    status("Select the snippet below to copy it.");
  }
}

// ---------------------------------------------------------------------------- runs view

function curve(history) {
  const rows = Array.isArray(history) ? history.filter((r) => r && isNumber(r.step)) : [];
  const points = rows.filter((r) => isNumber(r.val_bpc) || isNumber(r.val_loss))
    .map((r) => [r.step, isNumber(r.val_bpc) ? r.val_bpc : r.val_loss / Math.LN2]);
  const train = rows.filter((r) => isNumber(r.train_loss)).map((r) => [r.step, r.train_loss / Math.LN2]);
  const all = points.concat(train);
  if (!all.length) return el("p", { class: "muted" }, "No evaluation yet.");
  const W = 560, H = 220, L = 46, R = 12, T = 12, B = 28;
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => L + (x1 === x0 ? (W - L - R) / 2 : ((x - x0) / (x1 - x0)) * (W - L - R));
  const sy = (y) => T + (y1 === y0 ? (H - T - B) / 2 : ((y1 - y) / (y1 - y0)) * (H - T - B));
  const path = (pts) => pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
  const dots = points.map((p) => el("circle", { cx: sx(p[0]).toFixed(1), cy: sy(p[1]).toFixed(1), r: 3 },
    el("title", {}, `step ${figure(p[0])}: ${p[1].toFixed(3)} bpc`)));
  const svg = el("svg", { class: "curve", viewBox: `0 0 ${W} ${H}`, role: "img",
                          "aria-label": "validation bits per character by step" },
    el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    el("text", { x: L - 6, y: T + 4, "text-anchor": "end" }, y1.toFixed(2)),
    el("text", { x: L - 6, y: H - B, "text-anchor": "end" }, y0.toFixed(2)),
    el("text", { x: L, y: H - 8 }, x0.toLocaleString()),
    el("text", { x: W - R, y: H - 8, "text-anchor": "end" }, `step ${x1.toLocaleString()}`),
    train.length ? el("path", { class: "train", d: path(train) }) : null,
    el("path", { class: "val", d: path(points) }), dots);
  const key = el("div", { class: "key" }, el("i", { class: "val" }), " validation bpc ", el("i", { class: "train" }),
    " training bpc");
  return [svg, key];
}

const HISTORY_COLUMNS = [["step", "step"], ["epoch", "epoch"], ["train_loss", "train loss"], ["val_loss", "val loss"],
  ["val_bpc", "val bpc"], ["learning_rate", "learning rate"], ["chars_seen", "characters seen"]];

function historyTable(history) {
  const rows = (Array.isArray(history) ? history : []).filter((r) => r && typeof r === "object");
  if (!rows.length) return null;
  const cell = (v, k) => figure(v, isNumber(v) && !Number.isInteger(v) && k !== "epoch" ? 4 : undefined);
  return el("details", {}, el("summary", {}, "Evaluations"), el("table", { class: "config history" },
    el("tr", {}, HISTORY_COLUMNS.map(([, label]) => el("th", {}, label))),
    rows.map((r) => el("tr", {}, HISTORY_COLUMNS.map(([k]) => el("td", {}, cell(r[k], k)))))));
}

function configTable(config) {
  const rows = [];
  for (const [group, values] of Object.entries(config || {})) {
    for (const [k, v] of Object.entries(values || {})) {
      if (v === null || typeof v === "object") continue;
      rows.push(el("tr", {}, el("td", { class: "muted" }, group), el("td", {}, k), el("td", {}, String(v))));
    }
  }
  return el("details", {}, el("summary", {}, "Configuration"), el("table", { class: "config" }, rows));
}

function runCard(run) {
  const fact = (value, label, digits) => el("span", {}, el("b", {}, figure(value, digits)), label);
  return el("article", { class: "run" },
    el("header", {}, el("h2", {}, String(run.id)), el("span", { class: "muted" }, figure(run.checkpoint))),
    el("div", { class: "facts" },
      el("span", {}, el("b", {}, `${figure(run.layers)}×${figure(run.units)}`), " LSTM"),
      fact(run.parameters || 0, " parameters"), fact(run.vocab_size, " characters"),
      el("span", {}, "step ", el("b", {}, figure(run.checkpoint_step))),
      el("span", {}, "val ", el("b", {}, figure(run.validation_bpc, 3)), " bpc")),
    curve(run.history), historyTable(run.history), configTable(run.config));
}

async function showRuns() {
  const box = $("runs");
  try {
    const { data } = await getJSON("/v1/textgen/runs");
    box.replaceChildren(...data.map(runCard));
  } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, error.message));
  }
}

// ---------------------------------------------------------------------------- start

async function loadModels() {
  try {
    const { data } = await getJSON("/v1/models");
    $("model").replaceChildren(...data.map((m) => el("option", { value: m.id }, String(m.id))));
    const pick = () => {
      const m = data.find((d) => d.id === $("model").value);
      if (m) $("step").textContent = figure(m.checkpoint_step);
    };
    $("model").onchange = pick;
    pick();
    status(data.length ? "" : "No model is loaded yet.");
  } catch (error) {
    status(`${error.message} ${/API key/.test(error.message) ? "Set it with the Key button." : ""}`, true);
  }
}

function switchView(view) {
  for (const tab of document.querySelectorAll(".tab")) {
    const on = tab.dataset.view === view;
    tab.classList.toggle("active", on);
    tab.setAttribute("aria-selected", on);
  }
  $("view-play").hidden = view !== "play";
  $("view-runs").hidden = view !== "runs";
  if (view === "runs") showRuns();
}

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("textgen-theme", theme);
}

function start() {
  const saved = localStorage.getItem("textgen-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  $("theme").onclick = () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : matchMedia("(prefers-color-scheme: dark)").matches;
    setTheme(dark ? "light" : "dark");
  };
  for (const id of ["temperature", "top-p"]) {
    const show = () => { $(`${id}-out`).textContent = Number($(id).value).toFixed(2); };
    $(id).oninput = show;
    show();
  }
  for (const tab of document.querySelectorAll(".tab")) tab.onclick = () => switchView(tab.dataset.view);
  $("generate").onclick = () => generate(null);
  $("stop").onclick = stop;
  $("continue").onclick = continueSamples;
  $("copy-curl").onclick = () => snippet("curl");
  $("copy-python").onclick = () => snippet("python");
  $("key-button").onclick = () => { $("key-panel").hidden = !$("key-panel").hidden; $("api-key").value = apiKey(); };
  $("key-save").onclick = () => {
    localStorage.setItem("textgen-key", $("api-key").value.trim());
    $("key-panel").hidden = true;
    loadModels();
  };
  $("prompt").onkeydown = (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(null); };
  $("outputs").addEventListener("mouseover", showTip);
  $("outputs").addEventListener("mouseleave", () => { $("tip").hidden = true; });
  loadModels();
}

start();
