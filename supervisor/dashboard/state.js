// What the page holds: the jobs on the current page, the open job, the streams.

export const state = {
  jobs: new Map(), // id -> job, for the rows on the current page
  order: [], // ids on the current page, newest first
  cursors: [], // the `before` of each page we came through; [] is the newest page
  before: null,
  nextBefore: null,
  filters: { status: "", type: "" },
  openJob: null, // id of the job in the panel
  openDetail: null, // that job, whole (with its result)
  trail: new Map(), // id -> statuses seen, in order
  deleted: new Set(), // ids deleted here: a late event or answer never brings one back
  jobTypes: null, // [{name, description, schema}] when the API offers them
  stream: null,
  jobStream: null,
  retryTimer: null,
};
