// Workflows: a form for each served workflow, made from its typed schema (the JSON Schema
// its /v1/workflows/{name}/jobs route takes, as the OpenAPI document shows it).
import { submitJob, upload } from "./api.js";
import { el, jobCard } from "./gallery.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
let workflows = [];

/** The schema of a property without its "or null". */
export function plain(property) {
  const kinds = (property.anyOf || [property]).filter((k) => k.type !== "null");
  return { ...property, ...kinds[0] };
}

function field(name, property, isImage) {
  const id = `wf-${name}`;
  const spec = plain(property);
  const label = el("label", { for: id, text: spec.title || name });
  const hint = spec.description ? el("small", { class: "hint", id: `${id}-hint`, text: spec.description }) : null;
  const common = { id, name, "aria-describedby": hint ? `${id}-hint` : null };
  let input;
  if (isImage) input = el("input", { ...common, type: "file", accept: "image/png,image/jpeg,image/webp", required: true });
  else if (spec.enum) {
    input = el("select", common, ...spec.enum.map((v) => el("option", { value: String(v), text: String(v) })));
    if (spec.default !== undefined && spec.default !== null) input.value = String(spec.default);
  } else if (spec.type === "boolean") input = el("input", { ...common, type: "checkbox", checked: spec.default === true });
  else if (spec.type === "integer" || spec.type === "number") {
    input = el("input", {
      ...common,
      type: "number",
      min: spec.minimum ?? null,
      max: spec.maximum ?? null,
      step: spec.multipleOf ?? (spec.type === "integer" ? 1 : "any"),
      value: spec.default ?? null,
      placeholder: name === "seed" ? t("random") : null,
    });
  } else if (name === "prompt" || name === "negative") input = el("textarea", { ...common, rows: "3" }, spec.default || "");
  else input = el("input", { ...common, type: "text", value: spec.default ?? null });
  input.dataset.kind = isImage ? "image" : spec.type || "string";
  return el("div", { class: "field" }, label, input, hint);
}

function build() {
  const workflow = workflows.find((w) => w.name === $("workflow-name").value);
  const form = $("workflow-form");
  form.replaceChildren();
  if (!workflow) return;
  for (const [name, property] of Object.entries(workflow.schema.properties)) {
    form.append(field(name, property, workflow.images.includes(name)));
  }
  form.append(el("button", { type: "submit", class: "primary", text: t("run") }));
}

async function values(form) {
  const params = {};
  for (const input of form.querySelectorAll("[name]")) {
    const kind = input.dataset.kind;
    if (kind === "image") params[input.name] = (await upload(input.files[0], input.files[0].name)).id;
    else if (kind === "boolean") params[input.name] = input.checked;
    else if (input.value === "") continue;
    else if (kind === "integer" || kind === "number") params[input.name] = Number(input.value);
    else params[input.name] = input.value;
  }
  return params;
}

async function submit() {
  const form = $("workflow-form");
  const job = await submitJob($("workflow-name").value, await values(form));
  $("workflow-gallery").prepend(jobCard(job));
}

export function setWorkflows(found) {
  workflows = found;
  const select = $("workflow-name");
  select.replaceChildren(...found.map((w) => el("option", { value: w.name, text: w.name })));
  build();
}

export function init(report) {
  $("workflow-name").addEventListener("change", build);
  $("workflow-form").addEventListener("submit", (event) => {
    event.preventDefault();
    report(submit());
  });
}
