// The page: read the settings (form or URL fragment), stream text into #output, Stop / Continue.
"use strict";

const $ = (id) => document.getElementById(id);
const meta = JSON.parse($("model-meta").textContent);
const model = new Model(meta, decodeBase64($("model-weights").textContent));
const SLICE_MS = 25;  // compute this long, then let the page paint and answer input
const MAX_LENGTH = 2000000;  // characters per Generate: a link cannot ask for more
const FIELDS = ["prime", "length", "temperature", "top_k", "top_p", "seed", "stop"];
const VOCAB = new Map(meta.vocab.map((ch, id) => [ch, id]));
// The prompt is fed in slices too (`feed`, `fed`), so a link with a huge prompt never freezes the tab.
const run = { state: null, random: null, logits: null, id: 0, left: 0, shown: "", pending: "", running: false,
              options: null, token: 0, generated: 0, seconds: 0, feed: [], fed: 0 };
window.textgen = { model, meta, run, stats: { chars: 0, seconds: 0, charsPerSecond: 0 } };

function unescapeText(text) {
  return text.replace(/\\(\\|n|t)/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
}

function setState(name, message) {
  document.body.dataset.state = name;
  $("status").textContent = message || "";
  $("generate").disabled = name === "running";
  $("stop-button").disabled = name !== "running";
  $("continue").disabled = name === "running" || !run.state;
}

function readOptions() {
  const number = (id) => ($(id).value.trim() === "" ? null : Number($(id).value));
  const o = { prime: $("prime").value, length: number("length"), temperature: number("temperature"),
              topK: number("top_k"), topP: number("top_p"), seed: number("seed"),
              stop: unescapeText($("stop").value) };
  if (!Number.isInteger(o.length) || o.length < 1 || o.length > MAX_LENGTH) throw new Error(`Length must be an integer from 1 to ${MAX_LENGTH.toLocaleString("en")}. Received: ${$("length").value.slice(0, 40)}`);
  if (o.temperature === null || !(o.temperature >= 0) || !isFinite(o.temperature)) throw new Error(`Temperature must be a number >= 0 (0 = greedy). Received: ${$("temperature").value}`);
  if (o.topK !== null && (!Number.isInteger(o.topK) || o.topK < 1)) throw new Error(`Top-k must be an integer >= 1. Received: ${$("top_k").value}`);
  if (o.topP !== null && !(o.topP > 0 && o.topP <= 1)) throw new Error(`Top-p must be in (0, 1]. Received: ${$("top_p").value}`);
  if (!Number.isInteger(o.seed)) throw new Error(`Seed must be an integer. Received: ${$("seed").value}`);
  const unknown = [...new Set([...o.prime].filter((ch) => !VOCAB.has(ch)))];
  if (unknown.length) throw new Error("The prompt has characters that are not in the model's vocabulary: " + unknown.slice(0, 20).map((c) => JSON.stringify(c)).join(", "));
  return o;
}

function linkFor(o) {
  const params = new URLSearchParams();
  params.set("prime", o.prime); params.set("temperature", o.temperature); params.set("length", o.length);
  params.set("seed", o.seed);
  if (o.topK !== null) params.set("top_k", o.topK);
  if (o.topP !== null) params.set("top_p", o.topP);
  if (o.stop) params.set("stop", $("stop").value);
  return "#" + params.toString().replace(/\+/g, "%20");
}

// Text safe to show: hold back what might still begin the stop string; cut at the stop string.
function pushText(text) {
  const stop = run.options.stop;
  if (!stop) return text;
  run.pending += text;
  const at = run.pending.indexOf(stop);
  if (at >= 0) { const shown = run.pending.slice(0, at); run.pending = ""; run.left = 0; run.stopped = true; return shown; }
  const cut = run.pending.length - (stop.length - 1);
  if (cut <= 0) return "";
  const shown = run.pending.slice(0, cut); run.pending = run.pending.slice(cut);
  return shown;
}

function generate() {
  let o;
  try { o = readOptions(); } catch (e) { setState("error", e.message); return; }
  history.replaceState(null, "", linkFor(o));
  run.options = o; run.state = model.newState(); run.random = seededRandom(o.seed);
  run.pending = ""; run.stopped = false;
  run.feed = o.prime ? Array.from(o.prime, (ch) => VOCAB.get(ch)) : [meta.start_id];
  run.fed = 0;
  const out = $("output");
  out.textContent = "";
  const primeSpan = document.createElement("span");
  primeSpan.className = "prime"; primeSpan.textContent = o.prime;
  out.append(primeSpan);
  run.text = document.createTextNode(""); out.append(run.text);
  start(o.length);
}

function continueRun() {
  if (!run.state) return;
  let o;
  try { o = readOptions(); } catch (e) { setState("error", e.message); return; }
  run.options = { ...o, prime: run.options.prime };
  run.stopped = false;
  start(o.length);
}

function start(length) {
  run.left = length; run.generated = 0; run.seconds = 0; run.running = true;
  run.token += 1;
  setState("running", "Generating…");
  scheduleSlice(run.token);
}

const channel = new MessageChannel();  // a zero-delay yield (setTimeout would wait >= 4 ms)
channel.port1.onmessage = (event) => slice(event.data);
function scheduleSlice(token) { channel.port2.postMessage(token); }

// Feed the prompt for one slice; false once it is all in.
function feedSlice(began) {
  if (run.fed >= run.feed.length) return false;
  while (run.fed < run.feed.length && performance.now() - began < SLICE_MS) {
    const end = Math.min(run.feed.length, run.fed + 8);
    for (; run.fed < end; run.fed++) run.logits = model.step(run.state, run.feed[run.fed]);
  }
  if (run.fed < run.feed.length) {
    $("status").textContent = `Reading the prompt: ${run.fed.toLocaleString("en")} of ` +
      `${run.feed.length.toLocaleString("en")} characters…`;
  } else {
    $("status").textContent = "Generating…";
  }
  return true;
}

function slice(token) {
  if (token !== run.token || !run.running) return;
  const o = run.options, vocab = meta.vocab, began = performance.now();
  if (feedSlice(began)) { scheduleSlice(token); return; }
  let text = "";
  while (run.left > 0 && performance.now() - began < SLICE_MS) {
    for (let i = 0; i < 8 && run.left > 0; i++) {
      const id = sampleId(run.logits, o.temperature, o.topK, o.topP, run.random);
      text += vocab[id];
      run.logits = model.step(run.state, id);
      run.left -= 1; run.generated += 1;
    }
  }
  run.seconds += (performance.now() - began) / 1000;
  const shown = pushText(text);
  if (shown) run.text.appendData(shown);
  if (run.left > 0 && !run.stopped) { scheduleSlice(token); return; }
  if (!run.stopped && run.pending) { run.text.appendData(run.pending); run.pending = ""; }
  finish(run.stopped ? "stop string" : "length");
}

function finish(reason) {
  run.running = false;
  const speed = run.seconds > 0 ? run.generated / run.seconds : 0;
  Object.assign(window.textgen.stats, { chars: run.generated, seconds: run.seconds, charsPerSecond: speed });
  setState("done", `${run.generated.toLocaleString("en")} characters in ${run.seconds.toFixed(2)} s ` +
           `(${Math.round(speed).toLocaleString("en")} chars/s) · ended by ${reason}`);
}

function stopRun() {
  if (!run.running) return;
  run.token += 1;
  if (run.fed < run.feed.length) run.state = null;  // the prompt was not read whole: nothing to continue
  if (run.pending) { run.text.appendData(run.pending); run.pending = ""; }
  finish("Stop");
}

function applyFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const field of FIELDS) if (params.has(field)) $(field).value = params.get(field);
  return params.get("autorun") === "1";
}

function describe() {
  const kb = (meta.weights_bytes / 1024).toFixed(0);
  $("model-info").textContent = `${meta.num_layers} × ${meta.units} LSTM · ${meta.vocab.length} characters · ` +
    `${meta.precision} weights (${kb} KiB) · run ${meta.run}, step ${meta.step.toLocaleString("en")} · textgen ${meta.textgen_version}`;
}

$("controls").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
$("stop-button").addEventListener("click", stopRun);
$("continue").addEventListener("click", continueRun);
window.addEventListener("hashchange", () => { if (applyFragment()) generate(); });
describe();
setState("ready", "Ready.");
if (applyFragment()) generate();
