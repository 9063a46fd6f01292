// Signing in: a token typed once is exchanged for an HttpOnly session cookie;
// the page never keeps the token.

import { stopStreams } from "./jobs.js";
import { $ } from "./util.js";

export async function checkSession() {
  let response;
  try {
    response = await fetch("/admin/session", { credentials: "same-origin" });
  } catch {
    return false;
  }
  if (response.status === 404) {
    // No authentication on this server: the API is open.
    $("session").hidden = true;
    return true;
  }
  if (response.status === 401) {
    showSignIn();
    return false;
  }
  if (!response.ok) return false;
  const who = await response.json();
  $("session-who").textContent = `${who.name} (${who.role})`;
  // With authentication off everyone is "anonymous": there is nothing to sign out of.
  $("sign-out").hidden = who.name === "anonymous";
  $("session").hidden = false;
  $("sign-in").hidden = true;
  $("main").hidden = false;
  return true;
}

export function showSignIn() {
  $("sign-in").hidden = false;
  $("main").hidden = true;
  $("session").hidden = true;
  stopStreams();
  $("sign-in-token").focus();
}

export async function signIn(event) {
  event.preventDefault();
  const input = $("sign-in-token");
  $("sign-in-error").textContent = "";
  const response = await fetch("/admin/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: input.value }),
  });
  input.value = ""; // the cookie is the credential from here on
  if (!response.ok) {
    let message = "sign-in refused";
    try {
      message = (await response.json()).error.message;
    } catch {
      /* keep the generic message */
    }
    $("sign-in-error").textContent = message;
    return;
  }
  return checkSession();
}

export async function signOut() {
  await fetch("/admin/session", { method: "DELETE", credentials: "same-origin" });
  showSignIn();
}
