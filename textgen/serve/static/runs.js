// The runs view: each served run's facts, validation curve (SVG), evaluations and configuration.
import { el, figure, isNumber } from "./dom.js";

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

export function runCard(run) {
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
