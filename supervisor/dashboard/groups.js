// A group: counts, members with their state, whitelist, removal history.

import { api } from "./api.js";
import { $, el, facts, fill, localTime } from "./util.js";
import { showView } from "./views.js";

function groupPath(id, rest = "") {
  return `/admin/groups/${encodeURIComponent(id)}${rest}`;
}

export async function loadGroupList() {
  const box = $("group-list");
  try {
    const { data } = await api("GET", "/admin/groups?limit=50");
    const groups = Array.isArray(data) ? data : data.groups || data.items || [];
    fill(
      box,
      groups.length ? el("h3", {}, "Groups") : null,
      el(
        "ul",
        {},
        groups.map((g) =>
          el("li", {}, el("a", { href: `#/group/${encodeURIComponent(g.groupWaId)}` }, g.name || g.groupWaId)),
        ),
      ),
    );
  } catch {
    box.replaceChildren(); // no list on this server: type the group's id
  }
}

function isInactive(member, windowMs) {
  if (member.removedAt || member.isAdmin || member.whitelisted) return false;
  const last = Date.parse(member.lastActiveAt || member.joinedAt);
  return Date.now() - last > windowMs;
}

const GROUP_PAGE = 200;

export async function openGroup(id, days) {
  showView("view-group");
  loadGroupList();
  $("group-id").value = id;
  const windowMs = Math.max(1, Number(days || $("group-days").value || 30)) * 86400000;
  const detail = $("group-detail");
  $("group-error").textContent = "";
  detail.replaceChildren(el("p", { class: "muted" }, "loading…"));
  try {
    const [summary, whitelist] = await Promise.all([
      api("GET", groupPath(id, `?inactivityWindowMs=${windowMs}`)),
      api("GET", groupPath(id, "/whitelist")).then(
        (answer) => answer.data.whatsappIds,
        () => null, // no whitelist route: read it from the members' flags
      ),
    ]);
    renderGroup(id, summary.data, whitelist, windowMs);
  } catch (error) {
    detail.replaceChildren();
    $("group-error").textContent = error.message;
  }
}

function memberFlags(member, windowMs) {
  const flags = [];
  if (member.removedAt) flags.push(`removed ${localTime(member.removedAt)}`);
  if (member.isAdmin) flags.push("admin");
  if (member.whitelisted) flags.push("whitelisted");
  if (member.queued) flags.push("queued");
  if (isInactive(member, windowMs)) flags.push("inactive");
  return flags;
}

function memberRow(m, windowMs) {
  return el(
    "tr",
    { "data-member": m.whatsappId },
    el("td", { class: "job-id" }, m.whatsappId),
    el("td", {}, localTime(m.joinedAt)),
    el("td", {}, m.lastActiveAt ? localTime(m.lastActiveAt) : "never"),
    el("td", { class: "flags" }, memberFlags(m, windowMs).join(", ") || "active"),
  );
}

function removalRow(r) {
  return el(
    "tr",
    {},
    el("td", {}, localTime(r.at)),
    el("td", { class: "job-id" }, r.whatsappId),
    el("td", {}, r.outcome),
    el("td", {}, r.reason || ""),
    el("td", {}, el("a", { href: `#/job/${encodeURIComponent(r.jobId)}`, class: "job-id" }, r.jobId)),
  );
}

// A table read page by page (X-Next-Before), with a button for the next page.
function pagedTable(id, headers, path, row, onItems) {
  const body = el("tbody", {});
  const more = el("button", { type: "button", hidden: true }, "More");
  const note = el("p", { class: "muted" });
  let before = null;
  async function next() {
    more.disabled = true;
    const sep = path.includes("?") ? "&" : "?";
    const cursor = before ? `&before=${encodeURIComponent(before)}` : "";
    const { data, response } = await api("GET", `${path}${sep}limit=${GROUP_PAGE}${cursor}`);
    body.append(...data.map(row));
    if (onItems) onItems(data);
    before = response.headers.get("X-Next-Before");
    more.hidden = !before;
    more.disabled = false;
    note.textContent = body.children.length ? "" : "none";
  }
  more.addEventListener("click", () => next().catch((e) => (note.textContent = e.message)));
  const table = el(
    "table",
    { class: "table", id },
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    body,
  );
  return { node: el("div", {}, table, note, more), next };
}

function renderGroup(id, summary, whitelist, windowMs) {
  const whitelistBox = el("div", {});
  const fromMembers = [];
  const members = pagedTable(
    "group-members",
    ["Member", "Joined", "Last active", "State"],
    groupPath(id, "/members?includeRemoved=true"),
    (m) => memberRow(m, windowMs),
    (items) => {
      if (whitelist) return;
      fromMembers.push(...items.filter((m) => m.whitelisted).map((m) => m.whatsappId));
      showWhitelist(whitelistBox, fromMembers);
    },
  );
  const removals = pagedTable(
    "group-removals",
    ["When", "Member", "Outcome", "Reason", "Job"],
    groupPath(id, "/removals"),
    removalRow,
  );
  showWhitelist(whitelistBox, whitelist || fromMembers);
  fill(
    $("group-detail"),
    el("h3", {}, summary.name, " ", el("span", { class: "muted job-id" }, summary.groupWaId)),
    facts([
      ["members", summary.memberCount],
      ["admins", summary.adminCount],
      ["inactive", summary.inactiveCount],
      ["queued", summary.queuedCount],
      ["whitelisted", summary.whitelistCount],
      ["removed", summary.removedCount],
      ["updated", localTime(summary.updatedAt)],
    ]),
    el("h3", {}, "Members"),
    members.node,
    whitelistBox,
    el("h3", {}, "Removal history"),
    removals.node,
  );
  return Promise.all([members.next(), removals.next()]).catch((error) => {
    $("group-error").textContent = error.message;
  });
}

function showWhitelist(box, ids) {
  fill(
    box,
    el("h3", {}, `Whitelist (${ids.length})`),
    ids.length
      ? el("ul", { class: "ids", id: "group-whitelist" }, ids.map((w) => el("li", {}, w)))
      : el("p", { class: "muted" }, "empty"),
  );
}
