// Starting a job: a form per job type (from its JSON Schema when the server
// describes its types), the API's own messages under the fields they name.

import { api, ApiError } from "./api.js";
import { refetch } from "./jobs.js";
import { state } from "./state.js";
import { $, el } from "./util.js";

export async function loadJobTypes() {
  try {
    const { data } = await api("GET", "/admin/job-types");
    const list = Array.isArray(data) ? data : data.jobTypes || data.types || data.items || [];
    state.jobTypes = list.map((t) => ({
      name: t.name || t.type,
      description: t.description || "",
      schema: t.schema || t.configSchema || t.config || null,
    }));
  } catch {
    state.jobTypes = null; // not offered: the config is typed as JSON
  }
}

export function renderStartForm() {
  const previous = $("start-type") ? $("start-type").value : "";
  let control;
  if (state.jobTypes) {
    const names = state.jobTypes.map((t) => t.name);
    control = el("select", {}, names.map((name) => el("option", { value: name }, name)));
    if (names.includes(previous)) control.value = previous;
  } else {
    // No list of types on this server: type the name (the ones seen are offered).
    control = el("input", { type: "text", list: "known-types", value: previous, autocomplete: "off" });
  }
  Object.assign(control, { id: "start-type", name: "type" });
  control.dataset.field = "type";
  control.setAttribute("aria-describedby", "start-type-error");
  control.addEventListener("change", renderStartFields);
  $("start-type-box").replaceChildren(control);
  renderStartFields();
}

function schemaOf(name) {
  const type = (state.jobTypes || []).find((t) => t.name === name);
  if (!type || !type.schema) return null;
  let schema = type.schema;
  // msgspec puts the struct under $defs and refers to it.
  if (schema.$ref && schema.$defs) schema = schema.$defs[schema.$ref.split("/").pop()];
  return schema && schema.properties ? schema : null;
}

function fieldInput(name, spec, required) {
  const id = `start-field-${name}`;
  const kind = Array.isArray(spec.type) ? spec.type.find((t) => t !== "null") : spec.type;
  const common = { id, name, "data-field": name, "aria-describedby": `${id}-error` };
  let input;
  if (spec.enum) {
    input = el("select", common, spec.enum.map((v) => el("option", { value: v }, String(v))));
  } else if (kind === "boolean") {
    input = el("input", { ...common, type: "checkbox", checked: spec.default === true });
  } else if (kind === "integer" || kind === "number") {
    input = el("input", {
      ...common,
      type: "number",
      min: spec.minimum,
      max: spec.maximum,
      step: kind === "integer" ? "1" : "any",
      value: spec.default ?? "",
      "data-kind": kind,
    });
  } else if (kind === "object" || kind === "array") {
    input = el("textarea", { ...common, "data-kind": "json" }, spec.default ? JSON.stringify(spec.default) : "");
  } else {
    input = el("input", { ...common, type: "text", value: spec.default ?? "" });
  }
  // A checkbox always sends a value: "required" would only confuse.
  const hint = spec.description || (required && kind !== "boolean" ? "required" : null);
  return el(
    "div",
    { class: "field" },
    el("label", { for: id }, name),
    input,
    hint ? el("p", { class: "hint" }, hint) : null,
    el("p", { id: `${id}-error`, class: "field-error", "data-error-for": name }),
  );
}

function renderStartFields() {
  const box = $("start-fields");
  const typeName = $("start-type").value;
  const type = (state.jobTypes || []).find((t) => t.name === typeName);
  // The first paragraph of the type's description.
  $("start-type-hint").textContent = ((type && type.description) || "").split("\n\n")[0];
  const schema = schemaOf(typeName);
  if (schema) {
    const required = new Set(schema.required || []);
    box.replaceChildren(
      ...Object.entries(schema.properties)
        .filter(([name]) => name !== "type")
        .map(([name, spec]) => fieldInput(name, spec, required.has(name))),
    );
    return;
  }
  if ($("start-config")) return; // keep what was typed
  box.replaceChildren(
    el(
      "div",
      { class: "field" },
      el("label", { for: "start-config" }, "Config (JSON object)"),
      el(
        "textarea",
        { id: "start-config", name: "config", "data-field": "config", "aria-describedby": "start-config-error" },
        "{}",
      ),
      el("p", { id: "start-config-error", class: "field-error", "data-error-for": "config" }),
    ),
  );
}

function clearErrors(form) {
  for (const slot of form.querySelectorAll("[data-error-for]")) {
    if (slot.dataset.extra) slot.remove();
    else slot.textContent = "";
  }
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  $("start-error").textContent = "";
}

// The API names the field at fault: put its message right under that field,
// or under the JSON config when the form has no input of that name.
function showFieldError(form, field, message) {
  const top = field ? field.split(/[.[]/)[0] : null;
  let slot = top && form.querySelector(`[data-error-for="${CSS.escape(top)}"]`);
  const input = top && form.querySelector(`[data-field="${CSS.escape(top)}"]`);
  if (!slot && top && $("start-config")) {
    slot = el("p", { class: "field-error", "data-error-for": top, "data-extra": "1", role: "alert" });
    $("start-config-error").after(slot);
  }
  if (!slot) {
    $("start-error").textContent = message;
    return;
  }
  slot.textContent = message;
  const target = input || $("start-config");
  if (target) {
    target.setAttribute("aria-invalid", "true");
    target.focus();
  }
}

function collectConfig(form) {
  const type = $("start-type").value.trim();
  if ($("start-config")) {
    let config;
    try {
      config = JSON.parse($("start-config").value || "{}");
    } catch (error) {
      throw new ApiError(400, { error: { message: `not JSON: ${error.message}`, field: "config" } });
    }
    return { ...config, type };
  }
  const body = { type };
  for (const input of form.querySelectorAll("#start-fields [data-field]")) {
    const name = input.dataset.field;
    if (input.type === "checkbox") body[name] = input.checked;
    else if (input.value === "") continue; // absent: the default, or the API says it is required
    else if (input.dataset.kind === "integer" || input.dataset.kind === "number") {
      body[name] = Number(input.value);
    } else if (input.dataset.kind === "json") {
      try {
        body[name] = JSON.parse(input.value);
      } catch {
        body[name] = input.value; // the API names what is wrong with it
      }
    } else body[name] = input.value;
  }
  return body;
}

export async function submitStart(event) {
  event.preventDefault();
  const form = event.target;
  clearErrors(form);
  try {
    const { data } = await api("POST", "/admin/jobs/start", collectConfig(form));
    location.hash = `#/job/${encodeURIComponent(data.jobId)}`;
    refetch(data.jobId);
  } catch (error) {
    showFieldError(form, error.field, error.message);
  }
}
