// Signing in: a token typed once is exchanged for an HttpOnly session cookie;
// the page never keeps the token.

import { stopStreams } from "./jobs.js";
import { $ } from "./util.js";

export async function checkSession() {
  let response;
  try {
    response = await fetch("/admin/session", { credentials: "same-origin" });
  } catch {
    $("connection").textContent = "cannot reach the server";
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
  if (!response.ok) {
    $("connection").textContent = `the server answered ${response.status}; reload to retry`;
    return false;
  }
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
  const token = input.value;
  input.value = ""; // the cookie is the credential from here on
  let response;
  try {
    response = await fetch("/admin/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch {
    $("sign-in-error").textContent = "cannot reach the server";
    return false;
  }
  if (!response.ok) {
    let message = "sign-in refused";
    try {
      message = (await response.json()).error.message;
    } catch {
      /* keep the generic message */
    }
    $("sign-in-error").textContent = message;
    return false;
  }
  return checkSession();
}

export async function signOut() {
  await fetch("/admin/session", { method: "DELETE", credentials: "same-origin" });
  showSignIn();
}
