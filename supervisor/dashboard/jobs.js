// The jobs list: a page of jobs (filters, paging by the `before` cursor),
// kept current by the event stream.

import { api } from "./api.js";
import { renderJob } from "./job.js";
import { checkSession } from "./session.js";
import { state } from "./state.js";
import { $, badge, duration, el, elapsedMs, etaMs, LIVE, localTime, progressBar } from "./util.js";

const PAGE_SIZE = 25;
const RETRY_MS = 3000; // before opening a stream the server refused

function listQuery() {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.filters.status) q.set("status", state.filters.status);
  if (state.filters.type) q.set("type", state.filters.type);
  if (state.before) q.set("before", state.before);
  return q;
}

export async function loadJobs() {
  $("jobs-error").textContent = "";
  try {
    const { data, response } = await api("GET", `/admin/jobs?${listQuery()}`);
    state.nextBefore = response.headers.get("X-Next-Before");
    state.order = data.map((job) => job.id);
    state.jobs = new Map(data.map((job) => [job.id, job]));
    for (const job of data) noteStatus(job);
    rememberTypes(data.map((job) => job.type));
    renderJobs();
  } catch (error) {
    $("jobs-error").textContent = error.message;
  }
}

function matchesFilters(job) {
  const f = state.filters;
  return (!f.status || job.status === f.status) && (!f.type || job.type === f.type);
}

function renderJobs() {
  const body = $("jobs-body");
  body.replaceChildren(...state.order.map((id) => jobRow(state.jobs.get(id))));
  $("jobs-empty").hidden = state.order.length > 0;
  $("page-older").disabled = !state.nextBefore;
  $("page-newer").disabled = state.cursors.length === 0;
  $("page-newest").disabled = state.cursors.length === 0;
}

function jobRow(job) {
  return el(
    "tr",
    {
      "data-job-id": job.id,
      class: job.id === state.openJob ? "selected" : null,
      onclick: () => (location.hash = `#/job/${encodeURIComponent(job.id)}`),
    },
    el(
      "td",
      {},
      el("a", { href: `#/job/${encodeURIComponent(job.id)}`, class: "job-id" }, job.id),
      el("div", { class: "muted" }, job.type),
    ),
    el("td", {}, badge(job.status)),
    el("td", {}, progressBar(job)),
    el("td", {}, localTime(job.createdAt)),
    el("td", { class: "elapsed" }, duration(elapsedMs(job))),
    el("td", { class: "eta" }, duration(etaMs(job))),
  );
}

function updateRow(job) {
  const old = document.querySelector(`#jobs-body tr[data-job-id="${CSS.escape(job.id)}"]`);
  if (old) old.replaceWith(jobRow(job));
}

function rememberTypes(types) {
  const list = $("known-types");
  const known = new Set([...list.options].map((o) => o.value));
  for (const type of types) {
    if (!known.has(type)) {
      known.add(type);
      list.append(el("option", { value: type }));
    }
  }
}

export function noteStatus(job) {
  const seen = state.trail.get(job.id) || [];
  if (seen[seen.length - 1] !== job.status) seen.push(job.status);
  state.trail.set(job.id, seen);
}

function setJob(job) {
  if (state.deleted.has(job.id)) return; // an event or answer that left before the delete
  const known = jobOf(job.id);
  // A final state is final: an answer read before it arrived never undoes it.
  if (known && !LIVE.includes(known.status) && LIVE.includes(job.status)) return;
  noteStatus(job);
  if (state.jobs.has(job.id)) {
    state.jobs.set(job.id, job);
    updateRow(job);
  } else {
    maybeInsert(job); // it may have just come to pass the filters
  }
  if (job.id === state.openJob) {
    state.openDetail = job;
    renderJob(job);
  }
}

// A deleted job leaves the page.
export function forget(id) {
  state.deleted.add(id);
  state.jobs.delete(id);
  state.order = state.order.filter((other) => other !== id);
  renderJobs();
}

// The open job's whole object (with its result), else the list's (without).
function jobOf(id) {
  return (state.openJob === id && state.openDetail) || state.jobs.get(id) || null;
}

const refetching = new Set();

export async function refetch(id) {
  if (refetching.has(id)) return;
  refetching.add(id);
  try {
    const { data } = await api("GET", `/admin/jobs/${encodeURIComponent(id)}/status`);
    setJob(data);
  } catch {
    /* gone, or not ours to see: the next page load tells */
  } finally {
    refetching.delete(id);
  }
}

// A job the page does not show yet (created, or live when the stream began):
// it belongs on the newest page if it passes the filters and is newer than
// the page's oldest job.
function maybeInsert(job) {
  if (state.cursors.length > 0 || state.before || !matchesFilters(job)) return;
  const oldest = state.jobs.get(state.order[state.order.length - 1]);
  const full = state.order.length >= PAGE_SIZE;
  if (full && oldest && job.createdAt <= oldest.createdAt) return;
  state.jobs.set(job.id, job);
  state.order.push(job.id);
  state.order.sort((a, b) => {
    const x = state.jobs.get(a).createdAt;
    const y = state.jobs.get(b).createdAt;
    return x === y ? (a < b ? 1 : -1) : x < y ? 1 : -1;
  });
  while (state.order.length > PAGE_SIZE) {
    state.jobs.delete(state.order.pop());
    state.nextBefore = state.order[state.order.length - 1];
  }
  noteStatus(job);
  rememberTypes([job.type]);
  renderJobs();
}

function isJob(value) {
  return value && typeof value === "object" && "status" in value && "createdAt" in value;
}

// One event from either stream (see docs/api.md, "Event stream"): the job as
// the API shows it (snapshot, created, started, cancelling, pausing, paused,
// resumed, finished; without
// its result except in finished and one job's snapshot), or what changed
// (progress, partial).
function applyEvent(kind, data, eventId) {
  const id = data.jobId || data.id;
  if (!id || !isNews(id, kind, eventId)) return;
  const known = jobOf(id);
  // A final state is final: a late event never takes a job back from it.
  if (known && !LIVE.includes(known.status) && kind !== "finished" && kind !== "snapshot") return;
  if (isJob(data)) {
    if (!known) {
      maybeInsert(data);
      return;
    }
    const next = { ...known, ...data };
    delete next.resultOmitted;
    if (data.resultOmitted) refetch(id); // too large for an event: read it whole
    setJob(next);
    return;
  }
  if (!known) return;
  const next = { ...known };
  if (kind === "progress") {
    next.status = data.status || next.status;
    next.progress = {
      processed: data.processed ?? 0,
      total: data.total ?? null,
      message: data.message ?? null,
      phase: data.phase ?? null,
    };
  } else if (kind === "partial") {
    if (data.resultOmitted) refetch(id);
    else next.result = data.result;
  } else {
    return;
  }
  setJob(next);
}

// Both streams carry the open job's events, and a reconnect may repeat some:
// apply each event once, in order. Ids are "<epoch>-<seq>", the sequence
// rising within one server process (a snapshot carries the latest id).
const lastSeen = new Map(); // job id -> [epoch, seq]

function isNews(jobId, kind, eventId) {
  const [epoch, raw] = (eventId || "").split("-");
  const seq = Number(raw);
  if (!epoch || !Number.isFinite(seq)) return true;
  const last = lastSeen.get(jobId);
  if (last && last[0] === epoch && (seq < last[1] || (seq === last[1] && kind !== "snapshot"))) {
    return false;
  }
  lastSeen.set(jobId, [epoch, seq]);
  return true;
}

const KINDS = [
  "snapshot",
  "created",
  "started",
  "progress",
  "partial",
  "cancelling",
  "pausing",
  "paused",
  "resumed", // running again after a pause
  "requeued", // a resumable job back in the queue: it will resume
  "approved", // an approval step approved: pending now
  "released", // a waiting job its parent's end released: pending or awaiting approval
  "finished",
];

function listen(url, onFinished) {
  const source = new EventSource(url);
  for (const kind of KINDS) {
    source.addEventListener(kind, (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return;
      }
      applyEvent(kind, data, event.lastEventId);
      if (kind === "finished" && onFinished) onFinished(source);
    });
  }
  source.addEventListener("overflow", () => {
    // Dropped for falling behind: the browser reconnects by itself, with
    // Last-Event-ID; read the page again in case the buffer lost some.
    loadJobs();
    if (state.openJob) refetch(state.openJob);
  });
  return source;
}

export function startStreams() {
  stopStreams();
  let opened = false;
  const source = listen("/admin/jobs/events");
  source.addEventListener("open", () => {
    setConnection("live");
    if (opened) loadJobs(); // back after a break: what finished meanwhile
    opened = true;
  });
  source.addEventListener("error", async () => {
    if (source.readyState !== EventSource.CLOSED) {
      setConnection("reconnecting…");
      return;
    }
    // Refused, not merely cut: the session ended, or the server is restarting.
    setConnection("disconnected");
    if (await checkSession()) state.retryTimer = setTimeout(startStreams, RETRY_MS);
  });
  state.stream = source;
  watchOpenJob();
}

// The open job's own stream: its partial results as they come.
export function watchOpenJob() {
  if (state.jobStream) state.jobStream.close();
  state.jobStream = null;
  const job = state.openDetail;
  if (!job || !LIVE.includes(job.status) || !state.stream) return;
  const source = listen(`/admin/jobs/${encodeURIComponent(job.id)}/events`, (s) => s.close());
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) refetch(job.id);
  });
  state.jobStream = source;
}

export function stopStreams() {
  for (const source of [state.stream, state.jobStream]) if (source) source.close();
  state.stream = state.jobStream = null;
  clearTimeout(state.retryTimer);
}

function setConnection(text) {
  $("connection").textContent = `updates: ${text}`;
}
