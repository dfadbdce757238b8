// textgen playground: plain JavaScript, no build step, no network beyond this server.
// Streams /v1/completions (SSE) with logprobs, shades each character by its probability,
// and draws each run's validation curve as SVG from /v1/textgen/runs.
// Every string that comes from the server enters the page as text (dom.js).
import { el, figure } from "./dom.js";
import { runCard } from "./runs.js";

const $ = (id) => document.getElementById(id);
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
  if ($("regex").value) body.regex = $("regex").value;
  if (!$("label-field").hidden && $("label").value) {
    body.label = $("label").value;
    // One record of that label: it ends where the next record would begin (U+001E), as
    // `textgen sample --label X --stop $'\x1e'`; a pattern decides the end itself.
    if (!body.regex && stops.length < 4) body.stop = [...stops, RECORD_END];
  }
  return body;
}

const RECORD_END = "\u001e";  // what begins a record of a labelled table (textgen/tables.py)

// The extension fields (not in OpenAI's API): the Python snippet passes them in extra_body.
const EXTRA = ["top_k", "regex", "label"];

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
    const extra = Object.fromEntries(EXTRA.filter((k) => body[k] !== undefined).map((k) => [k, body[k]]));
    if (Object.keys(extra).length) args.push(`extra_body=${JSON.stringify(extra)}`);
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

// The labels of a run trained on a labelled table (its corpus.documents.labels: label -> records).
async function showLabels(model) {
  let labels = [];
  try {
    const run = (await getJSON("/v1/textgen/runs")).data.find((r) => r.id === model);
    const known = run && run.config.corpus && run.config.corpus.documents && run.config.corpus.documents.labels;
    if (known && typeof known === "object" && !Array.isArray(known)) labels = Object.keys(known);
  } catch (error) {
    labels = [];  // the runs view is optional here: no labels to offer
  }
  if (model !== $("model").value) return;  // the pick changed while the runs were fetched
  const picked = $("label").value;  // a label picked meanwhile stays picked (the same run asked twice)
  $("label").replaceChildren(el("option", { value: "" }, "(none)"),
    ...labels.map((label) => el("option", { value: label }, label)));
  if (labels.includes(picked)) $("label").value = picked;
  $("label-field").hidden = labels.length === 0;
}

async function loadModels() {
  try {
    const { data } = await getJSON("/v1/models");
    $("model").replaceChildren(...data.map((m) => el("option", { value: m.id }, String(m.id))));
    const pick = () => {
      const m = data.find((d) => d.id === $("model").value);
      if (m) $("step").textContent = figure(m.checkpoint_step);
      showLabels($("model").value);
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
