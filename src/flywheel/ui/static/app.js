// flywheel dashboard: live updates of a running run (server-sent events), the Resume dialog, incident notes.
// Everything shown is rendered by the server; this script only swaps in what the server sent.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // A POST from our own page: the CSRF token goes in a header (the server refuses a POST without it).
  async function post(url, fields) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf() },
      body: new URLSearchParams(fields),
    });
    const text = await response.text();
    let body;
    try { body = JSON.parse(text); } catch (e) { body = { error: text }; }
    return { ok: response.ok, status: response.status, body };
  }

  function explain(body) {
    return (body.error || "the server refused") + (body.fix ? "\n" + body.fix : "");
  }

  // ---- filters: submit on change, without empty fields in the address
  document.querySelectorAll("form[data-autosubmit]").forEach((form) => {
    form.addEventListener("submit", () => {
      form.querySelectorAll("select").forEach((s) => { s.disabled = !s.value; });
    });
    form.querySelectorAll("select, input[type=checkbox]").forEach((s) => s.addEventListener("change", () => form.requestSubmit()));
  });

  // ---- a running run follows its journal
  const page = byId("run-page");
  if (page && page.dataset.live === "1") follow(page);

  function follow(page) {
    const source = new EventSource("/runs/" + page.dataset.run + "/live");
    let updates = 0;
    source.addEventListener("state", (event) => {
      const data = JSON.parse(event.data);
      updates += 1;
      byId("live-events").textContent = String(updates);
      if (data.graph) byId("graph-box").innerHTML = data.graph;
      if (data.steps) byId("steps-box").innerHTML = data.steps;
      if (data.timeline) byId("timeline-box").innerHTML = data.timeline;
      const status = byId("run-status");
      status.dataset.status = data.status;
      status.innerHTML = data.badge;
      if (byId("run-took")) byId("run-took").textContent = data.took_text || "";
      (data.attempts || []).forEach((a) => { logBox(a).querySelector(".outcome").innerHTML = a.badge; });
    });
    source.addEventListener("log", (event) => appendLog(JSON.parse(event.data)));
    source.addEventListener("done", (event) => {
      source.close();
      const data = JSON.parse(event.data);
      page.dataset.live = "0";
      page.dataset.finished = data.status;
      byId("live-banner").hidden = true;
      const done = byId("done-banner");
      const reload = document.createElement("a");
      reload.href = window.location.pathname;
      reload.textContent = "reload";
      const next = data.status === "succeeded" ? " for the closed incident and the time saved" : " for the failure and the resume plan";
      done.replaceChildren("run " + data.status + " · ", reload, next);
      done.className = "banner " + (data.status === "succeeded" ? "ok" : "bad");
      done.hidden = false;
    });
  }

  // The log of one attempt; an attempt that started after the page was rendered gets a new box.
  function logBox(data) {
    let box = document.querySelector('details.log[data-log="' + CSS.escape(data.name) + '"]');
    if (box) return box;
    const empty = byId("no-logs");
    if (empty) empty.remove();
    box = document.createElement("details");
    box.className = "log";
    box.dataset.log = data.name;
    box.dataset.key = data.key;
    box.open = true;
    const summary = document.createElement("summary");
    const outcome = document.createElement("span");
    outcome.className = "outcome";
    summary.append(data.key + " · attempt " + data.attempt + " · ", outcome, " · " + data.name);
    const pre = document.createElement("pre");
    pre.className = "log-text";
    box.append(summary, pre);
    byId("logs").append(box);
    return box;
  }

  function appendLog(data) {
    const pre = logBox(data).querySelector("pre");
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const text = data.lines.length ? data.lines.join("\n") + "\n" : "";
    if (data.reset) pre.textContent = text; else pre.append(text);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  // ---- sections that take a moment (the resume plan verifies outputs; the incident reads every run)
  // are fragments rendered by the server and loaded after the page
  document.querySelectorAll("[data-src]").forEach(load);

  async function load(box) {
    const response = await fetch(box.dataset.src, { credentials: "same-origin" });
    const text = await response.text();
    if (!response.ok) {
      box.textContent = "could not be read: " + text;
      return;
    }
    box.innerHTML = text;
    box.dataset.loaded = "1";
    if (box.id === "resume") wireResume();
  }

  // A dialog that shows the plan's counts and asks for the env's name where it is protected.
  function wireResume() {
    const dialog = byId("resume-dialog");
    if (!dialog) return;
    const confirm = byId("resume-confirm");
    const error = byId("resume-error");
    const typed = byId("confirm-env");
    byId("resume-button").addEventListener("click", () => { error.hidden = true; dialog.showModal(); });
    byId("resume-cancel").addEventListener("click", () => dialog.close());
    if (typed) typed.addEventListener("input", () => { confirm.disabled = typed.value.trim() !== typed.dataset.expected; });
    byId("resume-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      confirm.disabled = true;
      confirm.textContent = "Starting…";
      const answer = await post("/runs/" + dialog.dataset.run + "/resume", { confirm_env: typed ? typed.value.trim() : "" });
      if (!answer.ok) return fail(explain(answer.body));
      watch(answer.body.status_url);
    });

    function fail(text) {
      error.textContent = text;
      error.hidden = false;
      confirm.textContent = "Resume";
      confirm.disabled = Boolean(typed) && typed.value.trim() !== typed.dataset.expected;
    }

    // The resume process journals a new run; once it has, the page of that run takes over.
    async function watch(url) {
      const job = await (await fetch(url, { credentials: "same-origin" })).json();
      if (job.url) { window.location.assign(job.url); return; }
      if (job.state === "exited") return fail("the resume ended (exit code " + job.exit_code + ") before it started a run:\n" + job.output);
      setTimeout(() => watch(url), 200);
    }
  }

  // ---- incident notes
  const noteForm = byId("note-form");
  if (noteForm) {
    noteForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fields = Object.fromEntries(new FormData(noteForm).entries());
      const answer = await post("/incidents/" + noteForm.dataset.incident + "/notes", fields);
      if (answer.ok) { window.location.reload(); return; }
      const error = byId("note-error");
      error.textContent = explain(answer.body);
      error.hidden = false;
    });
  }
})();
