// Make: prompt, negative, a platform size from the recipes or a free size, seed, count.
import { randomSeed, submitJob } from "./api.js";
import { el, jobCard } from "./gallery.js";
import { t, tOr } from "./i18n.js";

const WORKFLOW = "zimage-turbo";
const $ = (id) => document.getElementById(id);
let presets = [];

/** `size` brought within `maxPixels` (same aspect ratio, multiples of 16). */
export function within([width, height], maxPixels) {
  if (width * height <= maxPixels) return [width, height];
  const scale = Math.sqrt(maxPixels / (width * height));
  const down = (v) => Math.max(16, Math.floor((v * scale) / 16) * 16);
  return [down(width), down(height)];
}

/** The presets: each recipe output's size, once per size (recipes give them by platform). */
export function setPresets(recipes, maxPixels) {
  const seen = new Set();
  presets = [];
  for (const recipe of recipes) {
    for (const out of recipe.outputs) {
      const key = out.deliver.join("x");
      if (seen.has(key)) continue;
      seen.add(key);
      presets.push({ name: out.name, deliver: out.deliver, size: within(out.generate, maxPixels) });
    }
  }
  labelPresets();
}

export function labelPresets() {
  const select = $("make-preset");
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "", text: t("preset.free") }),
    ...presets.map((p, i) =>
      el("option", { value: String(i), text: `${tOr(`p.${p.name}`, p.name)} ${p.deliver[0]}×${p.deliver[1]}` }),
    ),
  );
  select.value = chosen;
}

function onPreset() {
  const preset = presets[Number($("make-preset").value)];
  if (!preset || $("make-preset").value === "") return;
  [$("make-width").value, $("make-height").value] = preset.size;
}

function params() {
  const values = {
    prompt: $("make-prompt").value.trim(),
    width: Number($("make-width").value),
    height: Number($("make-height").value),
  };
  const negative = $("make-negative").value.trim();
  if (negative) values.negative = negative;
  return values;
}

/** Queue `count` jobs of `values` (seeds: `seed`, seed+1, … or random) into the gallery. */
export async function run(values, count = 1, seed = null) {
  const gallery = $("make-gallery");
  for (let i = 0; i < count; i += 1) {
    const job = await submitJob(WORKFLOW, { ...values, seed: seed === null ? randomSeed() : seed + i });
    gallery.prepend(jobCard(job));
  }
}

/** Put a job's parameters into the form (re-run from history). */
export function fill(values) {
  $("make-prompt").value = values.prompt || "";
  $("make-negative").value = values.negative || "";
  $("make-width").value = values.width || 1024;
  $("make-height").value = values.height || 1024;
  $("make-seed").value = values.seed ?? "";
  $("make-preset").value = "";
}

export function init(report) {
  $("make-preset").addEventListener("change", onPreset);
  $("make-vary").addEventListener("click", () => {
    $("make-seed").value = String(randomSeed());
  });
  $("make-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const seedText = $("make-seed").value.trim();
    const count = Math.max(1, Number($("make-count").value) || 1);
    report(run(params(), count, seedText === "" ? null : Number(seedText)));
  });
}
