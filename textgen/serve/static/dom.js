// Building the page's nodes. Every string that comes from the server (runs, models, errors,
// generated text) enters the page as text: el() makes elements and fills them with text nodes;
// nothing in the playground or /docs parses HTML.

const SVG = "http://www.w3.org/2000/svg";
const SVG_TAGS = new Set(["svg", "line", "text", "path", "circle", "title"]);

// el("td", { class: "muted" }, "text", child...): an element; strings become text nodes, null is skipped.
// `style` takes an object (set through the CSSOM, which the Content-Security-Policy allows).
export function el(tag, attrs = {}, ...children) {
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
export function figure(value, digits) {
  if (typeof value !== "number" || !Number.isFinite(value)) return value == null ? "–" : String(value);
  return digits === undefined ? value.toLocaleString() : value.toFixed(digits);
}
export const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
