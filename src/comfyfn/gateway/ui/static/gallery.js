// A job's card: its live state, progress and sampler previews, then the image with
// download, "same seed again", "more like this" and "edit this".
import { api, follow } from "./api.js";
import { t } from "./i18n.js";

const actions = { again: null, like: null, edit: null };

/** What the cards' buttons do (set once by the app): each gets the job. */
export function setActions(given) {
  Object.assign(actions, given);
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function stateText(kind, job) {
  if (kind === "queued" && job?.position) return t("job.queued.at", { position: job.position });
  if (kind === "progress" || kind === "running")
    return t("job.running", { percent: Math.round((job?.progress || 0) * 100) });
  if (kind === "failed") return t("job.failed", { message: job?.error?.message || "" });
  if (kind === "lost") return t("job.lost");
  return t(`job.${kind}`);
}

/** A file name for a job's image: `name` (a recipe's topic/output) or prompt words + seed. */
export function fileName(job, name, index = 0) {
  const suffix = index ? `_${index + 1}` : "";
  if (name) return `${name}${suffix}.png`;
  const words = (job.params.prompt || job.workflow).slice(0, 40).replace(/[\\/:*?"<>|\s]+/g, "_");
  return `${words}_${job.params.seed ?? ""}${suffix}.png`;
}

/** A card for `job`, following it until it is final (unless `live` is false). */
export function jobCard(job, { name = null, live = true, extra = [], onDone = null } = {}) {
  const image = el("img", { alt: "", hidden: true });
  const progress = el("progress", { max: "1", value: String(job.progress || 0) });
  const state = el("p", { class: "state" });
  const seed = job.params.seed ?? "";
  const size = job.params.width ? `${job.params.width}×${job.params.height}` : "";
  const meta = el("p", { class: "meta", text: [`#${seed}`, size, job.workflow].join(" · ") });
  const prompt = el("p", { class: "prompt", text: job.params.prompt || "", title: job.params.prompt || "" });
  const buttons = el("div", { class: "actions" });
  const card = el(
    "figure",
    { class: "card", "data-job": job.id },
    el("div", { class: "frame" }, image),
    progress,
    el("figcaption", {}, state, prompt, meta, buttons),
  );
  const show = (kind, data) => {
    const current = data && data.object === "job" ? data : job;
    card.dataset.state = kind === "progress" ? "running" : kind;
    state.textContent = stateText(kind, current);
    if (kind === "preview") {
      state.textContent = t("preview", { step: data.step });
      image.src = `data:${data.content_type};base64,${data.data}`;
      image.alt = state.textContent;
      image.hidden = false;
      return;
    }
    progress.value = kind === "succeeded" ? 1 : current.progress || 0;
    if (kind === "succeeded") finished(current);
  };
  const finished = (done) => {
    progress.hidden = true;
    const first = done.outputs[0];
    if (first) {
      image.src = first.url;
      image.alt = t("result", { index: 1, prompt: done.params.prompt || done.workflow });
      image.hidden = false;
    }
    buttons.replaceChildren(...resultButtons(done, name), ...extra);
  };
  show(job.state, job);
  const following = live && !["succeeded", "failed", "cancelled"].includes(job.state);
  if (following) {
    buttons.append(el("button", { type: "button", text: t("cancel"), onclick: () => cancel(job.id) }));
    follow(job.id, show).then((done) => {
      if (!done || done.state !== "succeeded") buttons.replaceChildren(...extra);
      if (onDone) onDone(done || job);
    });
  } else {
    if (job.state !== "succeeded") buttons.append(...extra);
    if (onDone) onDone(job);
  }
  return card;
}

function resultButtons(job, name) {
  const links = job.outputs.map((out, index) =>
    el("a", { href: out.url, download: fileName(job, name, index), class: "button", text: t("download") }),
  );
  const button = (text, act) =>
    el("button", { type: "button", text, onclick: () => actions[act] && actions[act](job) });
  const made = [button(t("same"), "again"), button(t("like"), "like")];
  if (job.outputs.length) made.push(button(t("editthis"), "edit"));
  return [...links, ...made];
}

function cancel(jobId) {
  api(`/ui/api/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" }).catch(() => {});
}
