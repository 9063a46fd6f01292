// Calls to the API with the browser's session cookie; errors carry the API's
// code, field and message.

let unauthorized = () => {};

/** What to do when the API answers 401 (the session ended): ask to sign in. */
export function whenUnauthorized(fn) {
  unauthorized = fn;
}

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code;
    this.field = err.field;
  }
}

export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { accept: "application/json" } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.status === 401) unauthorized();
  if (!response.ok) throw new ApiError(response.status, data);
  return { data, response };
}
