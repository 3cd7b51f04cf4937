// Deploy history: one Deployment's versions, the live marker, promote and roll back.
//
// Plain JavaScript, no build step, no third-party code.  It only talks to this server's
// /api/v1 endpoints with the pasted Kubernetes token as a Bearer header: no cookies, so no
// CSRF; the token lives in sessionStorage (this tab only).  Everything from the API is put
// on the page with textContent, never as HTML.  Buttons that change what is live appear
// only when the API says the caller has the write scope (deployment.permissions.promote),
// and always ask for confirmation.  The page polls the deployment every few seconds and
// reloads the list when the live version or the history changes.
"use strict";

const POLL_MS = 3000;
const PAGE = 50;
const store = window.sessionStorage;
const $ = (id) => document.getElementById(id);

const state = { deploymentId: "", view: null, cursor: null, workspace: "", signature: "", timer: null };

function token() {
  return store.getItem("miosa.token") || "";
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token()}`, Accept: "application/json", ...(options.headers || {}) },
  });
  const body = await response.json().catch(() => ({ code: "invalid_response", message: response.statusText }));
  if (!response.ok) {
    const error = new Error(body.message || response.statusText);
    error.status = response.status;
    error.code = body.code;
    throw error;
  }
  return { status: response.status, body };
}

function showError(error) {
  const box = $("error");
  if (!error) {
    box.hidden = true;
    return;
  }
  box.textContent = error.code ? `${error.message} (${error.code})` : String(error.message || error);
  box.hidden = false;
  if (error.status === 401) signOut(false);
}

function notice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = !text;
}

function when(value) {
  if (!value) return "—";
  const date = new Date(value);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function cell(row, text, label, className) {
  const td = document.createElement("td");
  td.textContent = text == null || text === "" ? "—" : String(text);
  td.dataset.label = label;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function container(row, label, className) {
  const td = document.createElement("td");
  td.dataset.label = label;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function signature(view) {
  const live = view.live_version;
  return [live && live.id, view.history.length, view.rollout && view.rollout.version].join("|");
}

// ---------------------------------------------------------------------------- rendering

function renderDeployment(view) {
  $("dep-name").textContent = view.name;
  $("dep-tenant").textContent = view.tenant_id;
  $("dep-kind").textContent = view.kind || "";
  $("dep-policy").textContent = view.promotion_policy || "Manual";
  const live = view.live_version;
  $("dep-live").textContent = live ? `#${live.version_number} ${live.name}` : "nothing live";
  const ready = view.ready;
  $("dep-ready").textContent = view.rollout
    ? `rolling out ${view.rollout.version}`
    : ready && ready.status !== "True" ? ready.message || ready.reason || "" : "";
  $("rollback").hidden = !view.permissions.promote;
}

function renderVersions(versions, append) {
  const body = $("versions").querySelector("tbody");
  if (!append) body.textContent = "";
  const live = state.view && state.view.live_version ? state.view.live_version.id : null;
  for (const version of versions) {
    const row = document.createElement("tr");
    row.dataset.versionId = version.id || "";
    row.dataset.number = version.version_number;
    if (version.id && version.id === live) row.classList.add("is-live");
    cell(row, version.version_number, "#", "number");
    const stateCell = container(row, "State", "state");
    const badge = document.createElement("span");
    badge.className = `badge state-${version.state}`;
    badge.textContent = version.state || "new";
    stateCell.appendChild(badge);
    if (version.id && version.id === live) {
      const marker = document.createElement("span");
      marker.className = "badge live-marker";
      marker.textContent = "live";
      stateCell.appendChild(marker);
    }
    cell(row, version.created_by, "Who", "who");
    cell(row, version.external_workspace_id, "Workspace");
    cell(row, when(version.created_at), "Created");
    cell(row, when(version.promoted_at), "Promoted");
    const actions = container(row, "", "row-actions");
    const promotable = ["ready", "archived", "building", "created"].includes(version.state);
    if (state.view && state.view.permissions.promote && promotable && version.id !== live) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "promote";
      button.textContent = "Promote";
      button.addEventListener("click", () => promote(version));
      actions.appendChild(button);
    }
    body.appendChild(row);
  }
  $("empty").hidden = body.children.length > 0;
  $("more").hidden = !state.cursor;
}

// ---------------------------------------------------------------------------- loading

async function loadDeployment() {
  const { body } = await api(`/api/v1/deployments/${encodeURIComponent(state.deploymentId)}`);
  state.view = body;
  state.signature = signature(body);
  renderDeployment(body);
}

async function loadVersions(append = false) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (state.workspace) params.set("external_workspace_id", state.workspace);
  if (append && state.cursor) params.set("cursor", state.cursor);
  const { body } = await api(`/api/v1/deployments/${encodeURIComponent(state.deploymentId)}/versions?${params}`);
  state.cursor = body.next_cursor;
  renderVersions(body.data, append);
}

async function refresh() {
  try {
    await loadDeployment();
    await loadVersions(false);
    showError(null);
  } catch (error) {
    showError(error);
  }
}

async function poll() {
  if (!token() || !state.deploymentId) return;
  try {
    const { body } = await api(`/api/v1/deployments/${encodeURIComponent(state.deploymentId)}`);
    if (signature(body) !== state.signature) {
      state.view = body;
      state.signature = signature(body);
      renderDeployment(body);
      await loadVersions(false);
      const live = body.live_version;
      notice(live ? `Now live: #${live.version_number} ${live.name}` : "Nothing is live");
    }
  } catch (error) {
    showError(error);
  }
}

// ---------------------------------------------------------------------------- actions

function confirmDialog(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

async function promote(version) {
  const ok = await confirmDialog(`Promote version #${version.version_number} (${version.name}) to live?`);
  if (!ok) return;
  await act(`/api/v1/deployments/${encodeURIComponent(state.deploymentId)}/versions/${encodeURIComponent(version.id)}/promote`, {});
}

async function rollback() {
  const ok = await confirmDialog("Roll back to the previous live version?");
  if (!ok) return;
  await act(`/api/v1/deployments/${encodeURIComponent(state.deploymentId)}/rollback`, {});
}

async function act(path, body) {
  try {
    const { status, body: result } = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const target = result.version;
    notice(status === 202 ? `Accepted: #${target.version_number} goes live when it is ready` : `Rolling out #${target.version_number}…`);
    showError(null);
    await poll();
  } catch (error) {
    showError(error);
  }
}

// ---------------------------------------------------------------------------- session

function signOut(clearToken = true) {
  if (clearToken) store.removeItem("miosa.token");
  clearInterval(state.timer);
  $("deployment").hidden = true;
  $("sign-in").hidden = false;
  $("sign-out").hidden = true;
}

function start() {
  $("sign-in").hidden = true;
  $("deployment").hidden = false;
  $("sign-out").hidden = false;
  const url = new URL(window.location.href);
  url.searchParams.set("deployment", state.deploymentId);
  window.history.replaceState(null, "", url);
  refresh();
  clearInterval(state.timer);
  state.timer = setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const fromUrl = new URL(window.location.href).searchParams.get("deployment");
  state.deploymentId = fromUrl || store.getItem("miosa.deployment") || "";
  $("deployment-id").value = state.deploymentId;

  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    store.setItem("miosa.token", $("token").value.trim());
    state.deploymentId = $("deployment-id").value.trim();
    store.setItem("miosa.deployment", state.deploymentId);
    $("token").value = "";
    start();
  });
  $("sign-out").addEventListener("click", () => signOut(true));
  $("filter").addEventListener("submit", (event) => {
    event.preventDefault();
    state.workspace = $("workspace").value.trim();
    loadVersions(false).catch(showError);
  });
  $("clear-filter").addEventListener("click", () => {
    $("workspace").value = "";
    state.workspace = "";
    loadVersions(false).catch(showError);
  });
  $("more").addEventListener("click", () => loadVersions(true).catch(showError));
  $("rollback").addEventListener("click", rollback);

  if (token() && state.deploymentId) start();
  else signOut(false);
});
