// Edit: drop, paste or choose an image; prompt, strength (denoise), size kept or chosen.
import { submitJob, upload } from "./api.js";
import { jobCard } from "./gallery.js";
import { t } from "./i18n.js";

const WORKFLOW = "zimage-edit";
const $ = (id) => document.getElementById(id);
let chosen = null; // the upload: {id, width, height}

/** Upload `blob` as the image to edit and show it. */
export async function setImage(blob) {
  chosen = await upload(blob, blob.name || "image.png");
  const preview = $("edit-preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  preview.alt = t("edit.ready", chosen);
  preview.hidden = false;
  $("edit-drop").dataset.ready = "1";
  return chosen;
}

function sizing() {
  const choose = document.querySelector("input[name=sizing]:checked").value === "choose";
  $("edit-width").disabled = !choose;
  $("edit-height").disabled = !choose;
  return choose;
}

async function submit() {
  if (!chosen) throw new Error(t("edit.none"));
  const params = {
    image: chosen.id,
    prompt: $("edit-prompt").value.trim(),
    denoise: Number($("edit-strength").value),
  };
  if (sizing()) {
    params.width = Number($("edit-width").value);
    params.height = Number($("edit-height").value);
  }
  const job = await submitJob(WORKFLOW, params);
  $("edit-gallery").prepend(jobCard(job));
}

export function init(report) {
  const drop = $("edit-drop");
  const take = (file) => file && report(setImage(file));
  $("edit-file").addEventListener("change", (event) => take(event.target.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    take(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    if ($("edit").hidden) return;
    const item = [...event.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) take(item.getAsFile());
  });
  $("edit-strength").addEventListener("input", () => {
    $("edit-strength-out").value = $("edit-strength").value;
  });
  for (const radio of document.querySelectorAll("input[name=sizing]")) radio.addEventListener("change", sizing);
  $("edit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    report(submit());
  });
}
