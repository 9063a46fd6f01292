// Small helpers: building elements (text from the API goes in as text nodes,
// never as HTML), times and durations, a job's badge and progress bar.

// Statuses a job can still leave ("scheduled": waiting for its time;
// "waiting": for the job it runs after; "awaiting_approval": for a person).
export const LIVE = [
  "scheduled", "waiting", "awaiting_approval", "pending", "running", "cancelling", "pausing", "paused",
];

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const $ = (id) => document.getElementById(id);

export function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

// Times arrive in UTC; they are shown in the browser's own zone.
const TIME_FORMAT = { dateStyle: "short", timeStyle: "medium" };

export function localTime(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, TIME_FORMAT) : "—";
}

export function duration(ms) {
  if (ms === null || ms === undefined || !isFinite(ms) || ms < 0) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function elapsedMs(job) {
  if (!job.startedAt) return null;
  const end = job.completedAt ? Date.parse(job.completedAt) : Date.now();
  return end - Date.parse(job.startedAt);
}

export function etaMs(job) {
  const p = job.progress || {};
  const elapsed = elapsedMs(job);
  if (job.status !== "running" || !p.total || !p.processed || elapsed === null) return null;
  return (elapsed * (p.total - p.processed)) / p.processed;
}

export function badge(status) {
  return el("span", { class: `badge ${status}`, "data-status": status }, status);
}

export function progressBar(job) {
  const p = job.progress || {};
  const label = p.total ? `${p.processed} / ${p.total}` : String(p.processed ?? 0);
  const bar = p.total
    ? el("progress", { max: p.total, value: p.processed, "aria-label": `progress ${label}` })
    : el("progress", { "aria-label": "progress unknown" });
  if (!LIVE.includes(job.status) && !p.total) bar.removeAttribute("aria-label");
  return el("span", { class: "bar" }, bar, el("span", { class: "progress-text" }, label));
}

export function facts(pairs) {
  return el(
    "dl",
    { class: "facts" },
    pairs
      .filter(([, value]) => value !== undefined)
      .map(([name, value]) => [el("dt", {}, name), el("dd", {}, value ?? "—")]),
  );
}

export function valueText(value) {
  return typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
}
