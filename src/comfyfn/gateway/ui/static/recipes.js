// Recipes: pick one, paste topics (or read a TXT/CSV file), run them as gateway jobs and
// watch the sheet fill, grouped by topic; download everything as one ZIP.
import { api } from "./api.js";
import { el, fileName, jobCard } from "./gallery.js";
import { t, tOr } from "./i18n.js";
import { zip } from "./zip.js";

const $ = (id) => document.getElementById(id);
let recipes = [];
let finished = new Map(); // job id → {job, name}

export function setRecipes(found) {
  recipes = found;
  label();
}

export function label() {
  const select = $("recipe-name");
  const chosen = select.value;
  select.replaceChildren(
    ...recipes.map((r) => el("option", { value: r.name, text: tOr(`r.${r.name}`, r.name) })),
  );
  if (chosen) select.value = chosen;
  about();
}

function about() {
  const recipe = recipes.find((r) => r.name === $("recipe-name").value);
  $("recipe-about").textContent = recipe
    ? `${recipe.description} · ${t("recipe.per", { count: recipe.images_per_topic })}`
    : "";
}

/** Topic lines of a TXT file, or the first column of a CSV file (a "topic" header skipped). */
export function topicsOf(text, isCsv) {
  const lines = text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  if (!isCsv) return lines;
  const first = lines.map((line) => line.split(",")[0].replace(/^"|"$/g, "").trim());
  return first[0] && first[0].toLowerCase() === "topic" ? first.slice(1) : first;
}

async function run() {
  const topics = topicsOf($("recipe-topics").value, false);
  const name = $("recipe-name").value;
  const answer = await api(`/ui/api/recipes/${encodeURIComponent(name)}/jobs`, {
    method: "POST",
    body: { topics },
  });
  finished = new Map();
  const sheet = $("recipe-sheet");
  sheet.replaceChildren();
  let count = 0;
  for (const group of answer.groups) {
    const cards = group.items.map((item) => {
      count += 1;
      const label = tOr(`p.${item.output}`, item.output);
      return el(
        "div",
        { class: "cell" },
        el("h4", { text: `${label} ${item.deliver.width}×${item.deliver.height}` }),
        jobCard(item.job, { name: item.name, onDone: (job) => done(job, item.name) }),
      );
    });
    sheet.append(
      el("section", { class: "group", "data-topic": group.topic }, el("h3", { text: group.topic }), el("div", { class: "gallery" }, ...cards)),
    );
  }
  $("recipe-zip").disabled = true;
  return t("recipe.queued", { count }) + (answer.notes.length ? ` — ${answer.notes.join("; ")}` : "");
}

function done(job, name) {
  if (job.state === "succeeded") finished.set(job.id, { job, name });
  $("recipe-zip").disabled = finished.size === 0;
}

async function download() {
  const entries = [...finished.values()];
  const files = [];
  for (const { job, name } of entries) {
    for (const [index, out] of job.outputs.entries()) {
      const response = await fetch(out.url);
      if (response.ok) files.push({ name: fileName(job, name, index), bytes: new Uint8Array(await response.arrayBuffer()) });
    }
  }
  const link = el("a", { href: URL.createObjectURL(zip(files)), download: `${$("recipe-name").value}.zip` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return t("zipping", { count: files.length });
}

export function init(report) {
  $("recipe-name").addEventListener("change", about);
  $("recipe-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (!file) return;
    const isCsv = file.name.toLowerCase().endsWith(".csv");
    $("recipe-topics").value = topicsOf(await file.text(), isCsv).join("\n");
  });
  $("recipe-form").addEventListener("submit", (event) => {
    event.preventDefault();
    report(run());
  });
  $("recipe-zip").addEventListener("click", () => report(download()));
}
