// One job in the panel: progress, times, partial result, cancel, error, config.

import { api } from "./api.js";
import { forget, noteStatus, refetch, watchOpenJob } from "./jobs.js";
import { state } from "./state.js";
import {
  $,
  badge,
  duration,
  el,
  elapsedMs,
  etaMs,
  facts,
  fill,
  LIVE,
  localTime,
  progressBar,
  valueText,
} from "./util.js";
import { showView } from "./views.js";

export async function openJob(id) {
  state.openJob = id;
  state.openDetail = null;
  showView("view-job");
  $("view-job").replaceChildren(el("p", { class: "muted" }, "loading…"));
  for (const row of document.querySelectorAll("#jobs-body tr")) {
    row.classList.toggle("selected", row.dataset.jobId === id);
  }
  try {
    const { data } = await api("GET", `/admin/jobs/${encodeURIComponent(id)}/status`);
    if (state.openJob !== id) return;
    state.openDetail = data;
    noteStatus(data);
    logBox = newLogBox(id);
    renderJob(data);
    watchOpenJob();
    followLogs(id, logBox);
  } catch (error) {
    $("view-job").replaceChildren(el("p", { class: "field-error", role: "alert" }, error.message));
  }
}

function resultView(result) {
  if (result === null || result === undefined) return el("p", { class: "muted" }, "none yet");
  if (typeof result !== "object" || Array.isArray(result)) {
    return el("pre", {}, JSON.stringify(result, null, 2));
  }
  const scalars = [];
  const lists = [];
  for (const [name, value] of Object.entries(result)) {
    if (Array.isArray(value)) lists.push([name, value]);
    else scalars.push([name, valueText(value)]);
  }
  return el(
    "div",
    { class: "result" },
    facts(scalars),
    lists.map(([name, items]) =>
      el(
        "div",
        { "data-list": name },
        el("h4", {}, `${name} (${items.length})`),
        items.length
          ? el("ul", { class: "ids" }, items.slice(0, 200).map((item) => el("li", {}, valueText(item))))
          : null,
        items.length > 200 ? el("p", { class: "muted" }, `…and ${items.length - 200} more`) : null,
      ),
    ),
  );
}

function cancelView(cancel) {
  if (!cancel) return null;
  const took =
    cancel.requestedAt && cancel.exitedAt
      ? `${Date.parse(cancel.exitedAt) - Date.parse(cancel.requestedAt)} ms`
      : "—";
  return [
    el("h3", {}, "Cancel"),
    facts([
      ["requested", localTime(cancel.requestedAt)],
      ["reason", cancel.reason],
      ["mode", cancel.mode],
      ["stopped", localTime(cancel.exitedAt)],
      ["took", took],
    ]),
  ];
}

function errorView(error) {
  if (!error) return null;
  return [
    el("h3", {}, "Error"),
    facts([
      ["reason", error.reason],
      ["type", error.type],
      ["message", error.message],
      ["exit code", error.exitCode],
      ["signal", error.signal],
    ]),
    error.traceback ? el("pre", { class: "traceback" }, error.traceback) : null,
  ];
}

function resourcesView(r) {
  if (!r) return null;
  const cpu =
    r.userCpuS === null || r.systemCpuS === null
      ? null
      : `${r.userCpuS.toFixed(2)} s user, ${r.systemCpuS.toFixed(2)} s system`;
  return [
    el("h3", {}, "How it ended"),
    facts([
      ["ended", r.limit ? `${r.ended} (${r.limit})` : r.ended],
      ["exit code", r.exitCode],
      ["signal", r.signal],
      ["peak memory", r.peakRssKiB === null ? null : `${(r.peakRssKiB / 1024).toFixed(1)} MiB`],
      ["CPU", cpu],
      ["wall", r.wallS === null ? null : `${r.wallS.toFixed(2)} s`],
    ]),
    r.stderrTail ? el("pre", { class: "traceback", "data-stderr-tail": "" }, r.stderrTail) : null,
  ];
}

// The job's log: its own box, kept across the panel's re-renders, filled by
// reading GET …/logs page after page, every few seconds while the panel is open.
const LOG_POLL_MS = 2000;
const LOG_LINES_SHOWN = 2000;
let logBox = null;

function newLogBox(id) {
  return el(
    "div",
    { id: "job-logs", "data-job-id": id },
    el("h3", {}, "Log"),
    el("pre", { class: "log", id: "job-log-lines", "aria-live": "off" }),
    el("p", { class: "muted", id: "job-log-note" }, "no lines yet"),
  );
}

async function followLogs(id, box) {
  let after = 0;
  let quietAfterEnd = 0;
  const lines = box.querySelector("#job-log-lines");
  const note = box.querySelector("#job-log-note");
  while (state.openJob === id && logBox === box) {
    try {
      const { data } = await api("GET", `/admin/jobs/${encodeURIComponent(id)}/logs?after=${after}&limit=1000`);
      if (state.openJob !== id || logBox !== box) return;
      for (const line of data.lines) {
        const stream = line.level ? `${line.stream}/${line.level}` : line.stream;
        lines.append(el("span", { class: `log-${line.stream}` }, `${line.line} ${stream} ${line.text}\n`));
      }
      while (lines.childNodes.length > LOG_LINES_SHOWN) lines.firstChild.remove();
      if (data.lines.length) {
        after = data.nextAfter;
        note.textContent = data.droppedLines ? `${data.droppedLines} older lines dropped` : "";
        continue; // more may follow at once
      }
    } catch (error) {
      note.textContent = error.message;
    }
    const job = state.openDetail;
    if (job && job.id === id && !LIVE.includes(job.status)) {
      // Its resources come once its child is gone, a moment after its final state.
      if (!job.resources) refetch(id);
      else if (++quietAfterEnd > 1) return;
    }
    await new Promise((resolve) => setTimeout(resolve, LOG_POLL_MS));
  }
}

// The head (status, cancel button) is rebuilt only when the status changes,
// so a click on the button is never lost to a progress update.
export function renderJob(job) {
  const view = $("view-job");
  const trail = (state.trail.get(job.id) || [job.status]).join(" → ");
  const key = `${job.id} ${trail}`;
  if (view.dataset.shown !== key || !$("job-head")) {
    view.dataset.shown = key;
    fill(view, el("div", { id: "job-head" }, jobHead(job, trail)), el("div", { id: "job-body" }), logBox);
  }
  fill($("job-body"), jobBody(job));
}

function jobHead(job, trail) {
  const live = LIVE.includes(job.status);
  const group = job.config && job.config.groupWaId;
  return [
    el("h2", {}, "Job ", el("span", { class: "job-id" }, job.id)),
    el(
      "p",
      {},
      badge(job.status),
      " ",
      job.type,
      el("span", { class: "muted" }, " · seen here: "),
      el("span", { class: "trail" }, trail),
    ),
    el(
      "div",
      { class: "actions" },
      job.status === "awaiting_approval"
        ? el("button", { type: "button", onclick: () => answerJob(job.id, "approve") }, "Approve")
        : null,
      job.status === "awaiting_approval"
        ? el("button", { type: "button", class: "danger", onclick: () => answerJob(job.id, "reject") }, "Reject")
        : null,
      job.status === "running"
        ? el("button", { type: "button", onclick: () => pauseJob(job.id) }, "Pause")
        : null,
      job.status === "paused"
        ? el("button", { type: "button", onclick: () => resumeJob(job.id) }, "Resume")
        : null,
      live && job.status !== "cancelling"
        ? el("button", { type: "button", class: "danger", onclick: () => cancelJob(job.id) }, "Cancel job")
        : null,
      el("button", { type: "button", onclick: () => rerunJob(job.id) }, "Run again"),
      live ? null : el("button", { type: "button", onclick: () => deleteJob(job.id) }, "Delete"),
      group ? el("a", { href: `#/group/${encodeURIComponent(group)}` }, `Group ${group}`) : null,
    ),
    el("p", { id: "job-action-error", class: "field-error", role: "alert" }),
  ];
}

function jobBody(job) {
  const p = job.progress || {};
  return [
    el("h3", {}, "Progress"),
    progressBar(job),
    facts([
      ["phase", p.phase],
      ["message", p.message],
      ["created", localTime(job.createdAt)],
      ["started", localTime(job.startedAt)],
      ["ended", localTime(job.completedAt)],
      ["elapsed", duration(elapsedMs(job))],
      ["ETA", duration(etaMs(job))],
      ["owner", job.owner],
      ["attempts", job.attempts],
      // Shown only for chained jobs and approval steps (undefined: no row).
      ["runs after", job.after ? `${job.after.jobId} (${job.after.when})` : undefined],
      ["chain", job.chainId ? `${job.chainId} step ${job.chainIndex + 1}` : undefined],
      ["approval expires", job.approval ? localTime(job.approval.expiresAt) : undefined],
      ["approved", approvalText(job.approval, "approved")],
      ["rejected", approvalText(job.approval, "rejected")],
    ]),
    el("h3", {}, job.status === "completed" ? "Result" : "Partial result"),
    resultView(job.result),
    cancelView(job.cancel),
    errorView(job.error),
    resourcesView(job.resources),
    el("h3", {}, "Config"),
    facts(Object.entries(job.config || {}).map(([k, v]) => [k, valueText(v)])),
  ];
}

function actionFailed(error) {
  const slot = $("job-action-error");
  if (slot) slot.textContent = error.message;
}

function approvalText(approval, what) {
  const by = approval && approval[`${what}By`];
  return by ? `by ${by.name} at ${localTime(approval[`${what}At`])}` : undefined;
}

// An approval step: approve (it becomes pending) or reject (it ends cancelled).
async function answerJob(id, answer) {
  if (!confirm(`${answer === "approve" ? "Approve" : "Reject"} job ${id}?`)) return;
  try {
    await api("POST", `/admin/jobs/${encodeURIComponent(id)}/${answer}`);
    refetch(id);
  } catch (error) {
    actionFailed(error);
  }
}

async function cancelJob(id) {
  if (!confirm(`Cancel job ${id}?`)) return;
  try {
    await api("POST", `/admin/jobs/${encodeURIComponent(id)}/cancel`);
    // The stream brings cancelling, then the final state; without it, read it.
    if (!state.stream || state.stream.readyState !== EventSource.OPEN) refetch(id);
  } catch (error) {
    actionFailed(error);
  }
}

// Pause holds the job at its next context call (pausing, then paused); the
// stream brings each state. Resume lets it go on from where it held.
async function pauseJob(id) {
  await stateChange(id, "pause");
}

async function resumeJob(id) {
  await stateChange(id, "resume");
}

async function stateChange(id, action) {
  try {
    await api("POST", `/admin/jobs/${encodeURIComponent(id)}/${action}`);
    if (!state.stream || state.stream.readyState !== EventSource.OPEN) refetch(id);
  } catch (error) {
    actionFailed(error);
  }
}

// A new job with the same config; the API checks it again, as for a start.
async function rerunJob(id) {
  try {
    const { data } = await api("POST", `/admin/jobs/${encodeURIComponent(id)}/rerun`);
    location.hash = `#/job/${encodeURIComponent(data.jobId)}`;
    refetch(data.jobId);
  } catch (error) {
    actionFailed(error);
  }
}

async function deleteJob(id) {
  if (!confirm(`Delete job ${id}? Its removal history stays.`)) return;
  try {
    await api("DELETE", `/admin/jobs/${encodeURIComponent(id)}`);
    forget(id);
    location.hash = "#/";
  } catch (error) {
    actionFailed(error);
  }
}
