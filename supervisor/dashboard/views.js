// Which view the panel shows; leaving a job closes its stream.

import { state } from "./state.js";
import { $ } from "./util.js";

export function showView(id) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== id;
  // A group gets the whole width; jobs keep their list beside them.
  $("main").classList.toggle("wide", id === "view-group");
  if (id !== "view-job") {
    state.openJob = null;
    state.openDetail = null;
    if (state.jobStream) state.jobStream.close();
    state.jobStream = null;
  }
}
