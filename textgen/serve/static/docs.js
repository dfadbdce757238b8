// The API reference: /openapi.json (sent with the playground's stored key) drawn as plain text.
// No Swagger UI, nothing from another origin; every string of the description enters as text (dom.js).
import { el } from "./dom.js";

const box = document.getElementById("docs");
const cls = (name) => ({ class: name });

function paragraphs(text) {
  return String(text || "").split(/\n\s*\n/).filter((p) => p.trim()).map((p) => el("p", {}, p.replace(/\s*\n\s*/g, " ")));
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
  const rows = Object.entries(schema.properties).map(([field, s]) => el("tr", {},
    el("td", {}, el("code", {}, field), required.has(field) ? " (required)" : ""), el("td", cls("muted"), typeOf(s)),
    el("td", {}, s.default !== undefined ? JSON.stringify(s.default) : ""), el("td", {}, s.description || "")));
  return el("table", cls("config"), el("tr", {}, ["field", "type", "default", "meaning"].map((h) => el("th", {}, h))), rows);
}

function operation(spec, path, method, op) {
  const body = (((op.requestBody || {}).content || {})["application/json"] || {}).schema || {};
  const statuses = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description || ""}`.trim());
  return el("article", cls("run"),
    el("h2", {}, el("code", {}, `${method.toUpperCase()} ${path}`)), el("p", cls("muted"), op.summary || ""),
    paragraphs(op.description), body.$ref ? schemaTable(spec, body.$ref) : null,
    el("p", cls("muted"), "Answers: ", statuses.join(" · ")));
}

async function main() {
  const key = localStorage.getItem("textgen-key") || "";
  const answer = await fetch("/openapi.json", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  if (!answer.ok) {
    const error = await answer.json().catch(() => ({}));
    const message = error.error ? error.error.message : `HTTP ${answer.status}`;
    const hint = answer.status === 401 ? " Set the key with the Key button of the playground; this page uses it too." : "";
    box.replaceChildren(el("p", cls("status error"), message + hint));
    return;
  }
  const spec = await answer.json();
  const info = spec.info || {};
  const ops = [];
  for (const [path, methods] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(methods || {})) ops.push(operation(spec, path, method, op || {}));
  }
  box.replaceChildren(el("section", cls("docs-intro"), el("h1", {}, `${info.title || "API"} ${info.version || ""}`),
    paragraphs(info.description)), el("div", cls("runs"), ops));
}

main().catch((error) => box.replaceChildren(el("p", cls("status error"), error.message)));
