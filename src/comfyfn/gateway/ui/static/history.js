// History: this key's jobs, newest first, with thumbnails, parameters, state and errors;
// filter by state or text; run one again.
import { api } from "./api.js";
import { el, jobCard } from "./gallery.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
let next = null;
let rerun = null;

function matches(job, text) {
  if (!text) return true;
  const haystack = `${job.id} ${job.workflow} ${JSON.stringify(job.params)}`.toLowerCase();
  return haystack.includes(text.toLowerCase());
}

function details(job) {
  const shown = Object.entries(job.params)
    .filter(([name]) => name !== "prompt")
    .map(([name, value]) => `${name}=${typeof value === "object" ? JSON.stringify(value) : value}`);
  const when = new Date(job.created_at * 1000).toLocaleString();
  return el("details", {}, el("summary", { text: when }), el("p", { class: "params", text: shown.join(" ") }));
}

async function load(more = false) {
  const state = $("history-state").value;
  const query = new URLSearchParams();
  if (state) query.set("state", state);
  if (more && next !== null) query.set("before", String(next));
  const page = await api(`/ui/api/jobs?${query}`);
  const list = $("history-list");
  if (!more) list.replaceChildren();
  const text = $("history-text").value.trim();
  for (const job of page.data.filter((j) => matches(j, text))) {
    const again = el("button", { type: "button", text: t("rerun"), onclick: () => rerun(job) });
    const card = jobCard(job, { extra: [again] });
    card.querySelector("figcaption").append(details(job));
    list.append(card);
  }
  if (!list.children.length) list.append(el("p", { class: "hint", text: t("history.empty") }));
  next = page.next;
  $("history-more").hidden = next === null;
}

export function show(report) {
  report(load());
}

export function init(report, onRerun) {
  rerun = onRerun;
  $("history-form").addEventListener("submit", (event) => {
    event.preventDefault();
    report(load());
  });
  $("history-state").addEventListener("change", () => report(load()));
  $("history-more").addEventListener("click", () => report(load(true)));
}
