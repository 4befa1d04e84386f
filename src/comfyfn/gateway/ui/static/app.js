// The web app: sign in, then the sections (#make, #edit, #recipes, #history, #workflows).
import { api, randomSeed, submitJob } from "./api.js";
import * as edit from "./edit.js";
import * as forms from "./forms.js";
import { jobCard, setActions } from "./gallery.js";
import * as history from "./history.js";
import { apply, choose, language, t } from "./i18n.js";
import * as make from "./make.js";
import * as recipes from "./recipes.js";

const $ = (id) => document.getElementById(id);
const SECTIONS = ["make", "edit", "recipes", "history", "workflows"];
let signedIn = false;

/** Show what `promise` ends with in the status line: its text, or its error's message. */
function report(promise) {
  const status = $("status");
  status.classList.remove("error");
  Promise.resolve(promise).then(
    (text) => {
      status.textContent = typeof text === "string" ? text : "";
    },
    (error) => {
      status.textContent = error.message;
      status.classList.add("error");
    },
  );
}

function route() {
  const wanted = location.hash.slice(1);
  const section = !signedIn ? "signin" : SECTIONS.includes(wanted) ? wanted : "make";
  for (const id of ["signin", ...SECTIONS]) $(id).hidden = id !== section;
  for (const link of document.querySelectorAll("#tabs a")) {
    if (link.hash === `#${section}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (section === "history") history.show(report);
}

async function start(name) {
  signedIn = true;
  $("who").textContent = name;
  $("tabs").hidden = false;
  $("sign-out").hidden = false;
  route();
  const [found, flows] = await Promise.all([api("/ui/api/recipes"), api("/ui/api/workflows")]);
  make.setPresets(found.data, found.max_pixels);
  recipes.setRecipes(found.data);
  forms.setWorkflows(flows.data);
}

function signedOut() {
  signedIn = false;
  $("who").textContent = "";
  $("tabs").hidden = true;
  $("sign-out").hidden = true;
  for (const id of ["make-gallery", "edit-gallery", "recipe-sheet", "history-list", "workflow-gallery"])
    $(id).replaceChildren();
  route();
  $("signin-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const key = $("signin-key").value.trim();
  try {
    const me = await api("/ui/session", { method: "POST", body: { key } });
    $("signin-key").value = "";
    await start(me.name);
    return t("signin.as", { name: me.name });
  } catch (error) {
    $("signin-key").setAttribute("aria-invalid", "true");
    throw new Error(t("signin.bad", { message: error.message }));
  }
}

async function editThis(job) {
  const response = await fetch(job.outputs[0].url);
  const blob = await response.blob();
  location.hash = "#edit";
  await edit.setImage(blob);
  $("edit-prompt").focus();
}

function again(job, seed) {
  return submitJob(job.workflow, { ...job.params, seed }).then((made) => {
    const gallery = job.workflow === "zimage-edit" ? $("edit-gallery") : $("make-gallery");
    gallery.prepend(jobCard(made));
    location.hash = job.workflow === "zimage-edit" ? "#edit" : "#make";
  });
}

function rerun(job) {
  if (job.workflow === "zimage-turbo") {
    make.fill(job.params);
    location.hash = "#make";
    $("make-prompt").focus();
  } else report(again(job, job.params.seed));
}

function relabel() {
  apply();
  make.labelPresets();
  recipes.label();
}

async function boot() {
  $("lang").value = language();
  relabel();
  $("lang").addEventListener("change", () => {
    choose($("lang").value);
    relabel();
  });
  setActions({
    again: (job) => report(again(job, job.params.seed)),
    like: (job) => report(again(job, randomSeed())),
    edit: (job) => report(editThis(job)),
  });
  make.init(report);
  edit.init(report);
  recipes.init(report);
  history.init(report, rerun);
  forms.init(report);
  $("signin-form").addEventListener("submit", (event) => report(signIn(event)));
  $("sign-out").addEventListener("click", () => {
    report(api("/ui/session", { method: "DELETE" }).then(signedOut));
  });
  window.addEventListener("hashchange", route);
  try {
    await start((await api("/ui/api/me")).name);
  } catch {
    signedOut();
  }
}

boot();
