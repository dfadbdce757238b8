// The API reference: /openapi.json (sent with the playground's stored key) drawn as plain text.
// No Swagger UI, no CDN: every string of the description enters the page through textContent.

const box = document.getElementById("docs");

function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children.flat()) if (child != null) node.append(child instanceof Node ? child : String(child));
  return node;
}

function paragraphs(text) {
  return String(text || "").split(/\n\s*\n/).filter((p) => p.trim()).map((p) => el("p", null, p.replace(/\s*\n\s*/g, " ")));
}

// A schema's type in a few words: `integer | null`, `array of string`, a component's name.
function typeOf(schema) {
  if (!schema || typeof schema !== "object") return "";
  if (schema.$ref) return String(schema.$ref).split("/").pop();
  if (schema.anyOf || schema.oneOf) return (schema.anyOf || schema.oneOf).map(typeOf).join(" | ");
  if (schema.type === "array") return `array of ${typeOf(schema.items)}`;
  return schema.enum ? schema.enum.map((v) => JSON.stringify(v)).join(" | ") : String(schema.type || "any");
}

function schemaTable(spec, ref) {
  const name = String(ref || "").split("/").pop();
  const schema = ((spec.components || {}).schemas || {})[name];
  if (!schema || !schema.properties) return null;
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties).map(([field, s]) => el("tr", null,
    el("td", null, el("code", null, field), required.has(field) ? " (required)" : ""), el("td", "muted", typeOf(s)),
    el("td", null, s.default !== undefined ? JSON.stringify(s.default) : ""), el("td", null, s.description || "")));
  return el("table", "config", el("tr", null, ["field", "type", "default", "meaning"].map((h) => el("th", null, h))), rows);
}

function operation(spec, path, method, op) {
  const body = (((op.requestBody || {}).content || {})["application/json"] || {}).schema || {};
  const statuses = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description || ""}`.trim());
  return el("article", "run",
    el("h2", null, el("code", null, `${method.toUpperCase()} ${path}`)), el("p", "muted", op.summary || ""),
    paragraphs(op.description), body.$ref ? schemaTable(spec, body.$ref) : null,
    el("p", "muted", "Answers: ", statuses.join(" · ")));
}

async function main() {
  const key = localStorage.getItem("textgen-key") || "";
  const answer = await fetch("/openapi.json", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  if (!answer.ok) {
    const error = await answer.json().catch(() => ({}));
    const message = error.error ? error.error.message : `HTTP ${answer.status}`;
    const hint = answer.status === 401 ? " Set the key with the Key button of the playground; this page uses it too." : "";
    box.replaceChildren(el("p", "status error", message + hint));
    return;
  }
  const spec = await answer.json();
  const info = spec.info || {};
  const ops = [];
  for (const [path, methods] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(methods || {})) ops.push(operation(spec, path, method, op || {}));
  }
  box.replaceChildren(el("section", "docs-intro", el("h1", null, `${info.title || "API"} ${info.version || ""}`),
    paragraphs(info.description)), el("div", "runs", ops));
}

main().catch((error) => box.replaceChildren(el("p", "status error", error.message)));
