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

  // ==== issue 17 (run page): ticking elapsed times, the step panel ===========================
  // Ticking: every element with data-tick-start (an epoch in seconds) shows the time since then, and a
  // running Gantt bar (an SVG rect with it) grows, once a second between the server's events. The
  // server's clock is the reference (data-now on the page), so a browser clock that is off does not show.
  const serverOffset = page && page.dataset.now ? Number(page.dataset.now) - Date.now() / 1000 : 0;

  function dur(seconds) {  // as flywheel.durations.duration
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const total = Math.round(seconds);
    const minutes = Math.floor(total / 60);
    if (minutes < 60) return minutes + " min " + String(total % 60).padStart(2, "0") + " s";
    return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  function tick() {
    const now = Date.now() / 1000 + serverOffset;
    document.querySelectorAll("[data-tick-start]").forEach((el) => {
      const elapsed = Math.max(0, now - Number(el.dataset.tickStart));
      const chart = el.closest("svg#timeline");
      if (el.tagName.toLowerCase() === "rect" && chart) {
        const x = Number(el.getAttribute("x"));
        const room = Number(chart.dataset.plotEnd) - x;
        el.setAttribute("width", Math.max(2, Math.min(room, elapsed * Number(chart.dataset.scale))).toFixed(1));
      } else {
        el.textContent = dur(elapsed);
      }
    });
  }

  if (page && page.dataset.live === "1") {
    tick();
    const ticker = setInterval(() => {
      if (page.dataset.live !== "1") { clearInterval(ticker); return; }
      if (!document.hidden) tick();
    }, 1000);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  }

  // The step panel: a node of the graph (click, Enter or Space) opens its state, attempts, log tail and
  // the command that reruns just that key, read from the server; Escape closes it and focus returns to
  // the node. The graph is delegated to, because live updates replace its nodes.
  const stepPanel = (() => {
    const box = byId("step-panel");
    const graph = byId("graph-box");
    const none = { reselect() {}, refresh() {} };
    if (!box || !graph) return none;
    let current = null;
    const nodeOf = (key) => graph.querySelector('g.node[data-key="' + CSS.escape(key) + '"]');

    async function open(key) {
      current = key;
      const response = await fetch("/runs/" + box.dataset.run + "/step?key=" + encodeURIComponent(key), { credentials: "same-origin" });
      const text = await response.text();
      if (current !== key) return;  // another node was chosen meanwhile
      box.innerHTML = response.ok || text.startsWith("<div") ? text : "<p class=\"error-text\"></p>";
      if (!response.ok && !text.startsWith("<div")) box.querySelector("p").textContent = text;
      box.dataset.key = key;
      box.hidden = false;
      reselect();
      tick();
    }

    function close() {
      if (box.hidden) return;
      box.hidden = true;
      const key = current;
      current = null;
      delete box.dataset.key;
      reselect();
      const node = key && nodeOf(key);
      if (node) node.focus();
    }

    function reselect() {
      graph.querySelectorAll("g.node").forEach((node) => {
        const chosen = node.dataset.key === current;
        node.classList.toggle("selected", chosen);
        node.setAttribute("aria-expanded", chosen ? "true" : "false");
      });
    }

    async function openAndFocus(key) {
      await open(key);
      if (!box.hidden) box.focus();
    }

    graph.addEventListener("click", (event) => {
      const node = event.target.closest("g.node");
      if (node) openAndFocus(node.dataset.key);
    });
    graph.addEventListener("keydown", (event) => {
      const node = event.target.closest("g.node");
      if (!node || (event.key !== "Enter" && event.key !== " ")) return;
      event.preventDefault();
      openAndFocus(node.dataset.key);
    });
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") close(); });
    box.addEventListener("click", async (event) => {
      if (event.target.closest("#panel-close")) { close(); return; }
      const button = event.target.closest("button.copy");
      if (!button) return;
      const text = box.querySelector(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (e) {  // no clipboard permission: select it, so Ctrl+C copies it
        const range = document.createRange();
        range.selectNodeContents(box.querySelector(button.dataset.copy));
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
      }
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
    return { reselect, refresh() { if (current && !box.hidden) open(current); } };
  })();
  // ==== end of issue 17 (run page) ============================================================

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
      const took = byId("run-took");
      if (took && data.status !== "running") {  // while it runs the header ticks (see "ticking" below)
        delete took.dataset.tickStart;
        took.textContent = data.took_text || "";
      }
      if (data.graph) stepPanel.reselect();
      if (data.graph) stepPanel.refresh();
      tick();
      (data.attempts || []).forEach((a) => { logBox(a).querySelector(".outcome").innerHTML = a.badge; });
    });
    source.addEventListener("log", (event) => appendLog(JSON.parse(event.data)));
    source.addEventListener("done", (event) => {
      source.close();
      const data = JSON.parse(event.data);
      page.dataset.live = "0";
      stepPanel.refresh();
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
    const viewer = document.createElement("a");  // the same viewer the server-rendered boxes link to
    viewer.className = "log-viewer";
    viewer.href = "/runs/" + byId("run-page").dataset.run + "/logs/" + encodeURIComponent(data.name) + "/view";
    viewer.textContent = data.name;
    summary.append(data.key + " · attempt " + data.attempt + " · ", outcome, " · ", viewer);
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
