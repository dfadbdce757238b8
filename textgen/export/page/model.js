// textgen's LSTM in plain JavaScript: weights decoded from the page, one step per character.
// Mirrors textgen's numpy engine: layer 0's embedding, input kernel and bias are folded into
// one (vocab, 4*units) table; gates in Keras' order (input, forget, cell, output).
"use strict";

function decodeBase64(text) {
  const binary = atob(text.replace(/\s+/g, ""));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const HALF = (function () {  // float16 bit pattern -> value, all 65536 of them
  const table = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
    table[bits] = exponent === 0 ? sign * fraction * Math.pow(2, -24)
      : exponent === 31 ? (fraction ? NaN : sign * Infinity)
      : sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
  }
  return table;
})();

// One stored tensor as float32 values (float16 and int8 dequantised exactly as textgen does).
function readTensor(bytes, entry) {
  const count = entry.shape.reduce((a, b) => a * b, 1);
  const buffer = bytes.buffer, start = bytes.byteOffset + entry.offset;
  if (entry.dtype === "float32") return new Float32Array(buffer.slice(start, start + 4 * count));
  const out = new Float32Array(count);
  if (entry.dtype === "float16") {
    const bits = new Uint16Array(buffer.slice(start, start + 2 * count));
    for (let i = 0; i < count; i++) out[i] = HALF[bits[i]];
    return out;
  }
  const q = new Int8Array(buffer.slice(start, start + count));
  const scaleStart = bytes.byteOffset + entry.scales_offset, rows = entry.shape[0], cols = entry.shape[1];
  const scales = new Float32Array(buffer.slice(scaleStart, scaleStart + 4 * rows));
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = Math.fround(q[r * cols + c] * scales[r]);
  }
  return out;
}

class Model {
  constructor(meta, bytes) {
    const tensors = {};
    for (const entry of meta.tensors) tensors[entry.name] = readTensor(bytes, entry);
    const U = meta.units, L = meta.num_layers, V = meta.vocab.length, E = meta.embedding_dim;
    this.units = U; this.layers = L; this.vocabSize = V; this.vocab = meta.vocab;
    // Layer 0 input table, fused layout [v][j][gate]: embedding @ kernel_0 + bias_0 (float64, then float32).
    const emb = tensors.embedding, k0 = tensors.kernel_0, b0 = tensors.bias_0;
    this.table = new Float32Array(V * 4 * U);
    for (let v = 0; v < V; v++) {
      for (let g = 0; g < 4; g++) {
        for (let j = 0; j < U; j++) {
          const col = g * U + j;
          let sum = 0;
          for (let e = 0; e < E; e++) sum += emb[v * E + e] * k0[e * 4 * U + col];
          this.table[(v * U + j) * 4 + g] = sum + b0[col];
        }
      }
    }
    // Per layer, fused layout [j][k][gate] over inputs k = (layer below's h, then own h).
    this.weights = []; this.biases = []; this.widths = [];
    for (let l = 0; l < L; l++) {
      const below = l === 0 ? 0 : U, n = below + U;
      const kernel = tensors["kernel_" + l], recurrent = tensors["recurrent_" + l], bias = tensors["bias_" + l];
      const w = new Float32Array(U * n * 4), b = new Float64Array(U * 4);
      for (let j = 0; j < U; j++) {
        for (let k = 0; k < n; k++) {
          for (let g = 0; g < 4; g++) {
            const col = g * U + j;
            w[(j * n + k) * 4 + g] = k < below ? kernel[k * 4 * U + col] : recurrent[(k - below) * 4 * U + col];
          }
        }
        for (let g = 0; g < 4; g++) b[j * 4 + g] = l === 0 ? 0 : bias[g * U + j];
      }
      this.weights.push(w); this.biases.push(b); this.widths.push(n);
    }
    const outKernel = tensors.out_kernel;  // (U, V) -> transposed (V, U): one dot product per character
    this.outWeights = new Float32Array(V * U);
    for (let k = 0; k < U; k++) for (let v = 0; v < V; v++) this.outWeights[v * U + k] = outKernel[k * V + v];
    this.outBias = Float64Array.from(tensors.out_bias);
  }

  // Zero state: per layer its input buffer [h below, own h] and its cells; preallocated scratch.
  newState() {
    const U = this.units, inputs = [], cells = [];
    for (let l = 0; l < this.layers; l++) { inputs.push(new Float64Array(this.widths[l])); cells.push(new Float64Array(U)); }
    return { inputs, cells, next: new Float64Array(U), logits: new Float64Array(this.vocabSize) };
  }

  // Advance `state` by character `id`; returns the logits (the state's buffer, overwritten next step).
  step(state, id) {
    const U = this.units, L = this.layers;
    for (let l = 0; l < L; l++) {
      const x = state.inputs[l], c = state.cells[l], next = state.next, w = this.weights[l], n = this.widths[l];
      const base = l === 0 ? this.table : this.biases[l], baseAt = l === 0 ? id * U * 4 : 0;
      for (let j = 0; j < U; j++) {  // the fused gate loop: all four gates of unit j in one pass over x
        let s0 = base[baseAt + 4 * j], s1 = base[baseAt + 4 * j + 1], s2 = base[baseAt + 4 * j + 2], s3 = base[baseAt + 4 * j + 3];
        let p = j * n * 4;
        for (let k = 0; k < n; k++, p += 4) {
          const xk = x[k];
          s0 += w[p] * xk; s1 += w[p + 1] * xk; s2 += w[p + 2] * xk; s3 += w[p + 3] * xk;
        }
        const cell = c[j] / (1 + Math.exp(-s1)) + Math.tanh(s2) / (1 + Math.exp(-s0));
        c[j] = cell;
        next[j] = Math.tanh(cell) / (1 + Math.exp(-s3));
      }
      const own = n - U;
      for (let j = 0; j < U; j++) x[own + j] = next[j];
      if (l + 1 < L) { const up = state.inputs[l + 1]; for (let j = 0; j < U; j++) up[j] = next[j]; }
    }
    const top = state.inputs[L - 1], topAt = this.widths[L - 1] - U, wo = this.outWeights, logits = state.logits;
    for (let v = 0; v < this.vocabSize; v++) {
      let sum = this.outBias[v], p = v * U;
      for (let k = 0; k < U; k++) sum += wo[p + k] * top[topAt + k];
      logits[v] = sum;
    }
    return logits;
  }

  // Log-softmax after each character of `text` from a fresh state (teacher forcing).
  score(text) {
    const state = this.newState(), rows = [];
    for (const ch of text) rows.push(Array.from(logSoftmax(this.step(state, this.vocab.indexOf(ch)))));
    return rows;
  }
}

function logSoftmax(logits) {
  let top = -Infinity;
  for (const z of logits) top = Math.max(top, z);
  let total = 0;
  for (const z of logits) total += Math.exp(z - top);
  const norm = top + Math.log(total);
  return logits.map((z) => z - norm);
}

// mulberry32: a 32-bit seeded generator built from integer operations only, so every
// browser draws the same numbers for the same seed. Returns U[0, 1).
function seededRandom(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// One id from logits: temperature (0 = greedy), then top-k, then top-p, as textgen samples.
let probabilities = new Float64Array(0);  // reused from call to call
function sampleId(logits, temperature, topK, topP, random) {
  const V = logits.length;
  if (probabilities.length !== V) probabilities = new Float64Array(V);
  let kth = -Infinity;
  if (topK && topK < V) kth = Array.from(logits).sort((a, b) => b - a)[topK - 1];
  if (temperature === 0) {
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;
    return best;
  }
  let top = -Infinity;
  for (let v = 0; v < V; v++) if (logits[v] >= kth) top = Math.max(top, logits[v]);
  const p = probabilities;
  let total = 0;
  for (let v = 0; v < V; v++) { p[v] = logits[v] >= kth ? Math.exp((logits[v] - top) / temperature) : 0; total += p[v]; }
  for (let v = 0; v < V; v++) p[v] /= total;
  if (topP && topP < 1) {
    const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a] || a - b);
    let mass = 0, kept = 0;
    for (const v of order) { if (mass < topP) { mass += p[v]; kept += p[v]; } else p[v] = 0; }
    for (let v = 0; v < V; v++) p[v] /= kept;
  }
  let cdfTotal = 0;
  for (let v = 0; v < V; v++) cdfTotal += p[v];
  const u = random() * cdfTotal;
  let cumulative = 0, id = 0;
  for (let v = 0; v < V; v++) { cumulative += p[v]; if (cumulative <= u) id = v + 1; }
  return Math.min(id, V - 1);
}
