// The dashboard: one page over the API, no build step, no other host.
// Navigation (#/job/<id>, #/group/<id>, #/start), wiring and start-up.

import { whenUnauthorized } from "./api.js";
import { loadGroupList, openGroup } from "./groups.js";
import { openJob } from "./job.js";
import { loadJobs, startStreams } from "./jobs.js";
import { checkSession, showSignIn, signIn, signOut } from "./session.js";
import { loadJobTypes, renderStartForm, submitStart } from "./start.js";
import { state } from "./state.js";
import { $, duration, elapsedMs, etaMs } from "./util.js";
import { showView } from "./views.js";

function route() {
  const [, section, arg] = location.hash.split("/");
  const value = arg ? decodeURIComponent(arg) : "";
  if (section === "job" && value) openJob(value);
  else if (section === "group" && value) openGroup(value);
  else if (section === "group") {
    showView("view-group");
    loadGroupList();
  } else {
    showView("view-start");
    renderStartForm();
  }
}

function wire() {
  whenUnauthorized(showSignIn);
  $("sign-in-form").addEventListener("submit", async (event) => {
    if (await signIn(event)) boot();
  });
  $("sign-out").addEventListener("click", signOut);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.filters = { status: $("filter-status").value, type: $("filter-type").value.trim() };
    state.cursors = [];
    state.before = null;
    loadJobs();
  });
  $("filter-status").addEventListener("change", () => $("filters").requestSubmit());
  $("page-older").addEventListener("click", () => {
    state.cursors.push(state.before);
    state.before = state.nextBefore;
    loadJobs();
  });
  $("page-newer").addEventListener("click", () => {
    state.before = state.cursors.pop() ?? null;
    loadJobs();
  });
  $("page-newest").addEventListener("click", () => {
    state.cursors = [];
    state.before = null;
    loadJobs();
  });
  $("start-form").addEventListener("submit", submitStart);
  $("group-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("group-id").value.trim();
    if (id) {
      const target = `#/group/${encodeURIComponent(id)}`;
      if (location.hash === target) openGroup(id);
      else location.hash = target;
    }
  });
  window.addEventListener("hashchange", route);
  // Elapsed time and ETA move on between events.
  setInterval(() => {
    for (const row of document.querySelectorAll("#jobs-body tr")) {
      const job = state.jobs.get(row.dataset.jobId);
      if (job && job.status === "running") {
        row.querySelector(".elapsed").textContent = duration(elapsedMs(job));
        row.querySelector(".eta").textContent = duration(etaMs(job));
      }
    }
  }, 1000);
}

async function boot() {
  await loadJobTypes();
  await loadJobs();
  startStreams();
  route();
}

async function main() {
  wire();
  if (await checkSession()) boot();
}

main();
