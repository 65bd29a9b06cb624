// flywheel log viewer: search that narrows the lines as you type, and live follow while the step runs.
// The page works without it: ?q= filters on the server, a reload shows new lines.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  const page = byId("log-page");
  if (!page) return;
  const pre = byId("log-lines");
  const input = byId("log-search");
  const count = byId("log-count");
  const summary = byId("log-summary");
  const numbered = pre.dataset.numbered === "1";
  const lessMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

  // ---- search: hide the lines without the text, mark it in the others (case-insensitive, plain text)
  function lineText(line) { return line.querySelector(".t").textContent; }

  function mark(line, query) {
    const cell = line.querySelector(".t");
    const text = cell.textContent;
    cell.textContent = "";
    if (!query) { cell.textContent = text; return; }
    const folded = text.toLowerCase();
    const wanted = query.toLowerCase();
    let at = 0;
    let found;
    while (wanted && (found = folded.indexOf(wanted, at)) >= 0) {
      if (found > at) cell.append(text.slice(at, found));
      const hit = document.createElement("mark");
      hit.textContent = text.slice(found, found + wanted.length);
      cell.append(hit);
      at = found + wanted.length;
    }
    if (at < text.length) cell.append(text.slice(at));
  }

  function apply(line, query) {
    const keep = !query || lineText(line).toLowerCase().includes(query.toLowerCase());
    line.hidden = !keep;
    mark(line, keep ? query : "");
    return keep;
  }

  function search() {
    const query = input.value;
    let kept = 0;
    const lines = pre.querySelectorAll(".line");
    lines.forEach((line) => { if (apply(line, query)) kept += 1; });
    count.textContent = query ? kept + " of " + lines.length + " lines match" : "";
    const firstError = pre.querySelector(".line.err:not([hidden])");
    const link = byId("log-first-error");
    link.hidden = !firstError;
    if (firstError) link.href = "#" + firstError.id;
  }

  let pending = null;
  input.addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(search, 120); });
  byId("log-search-form").addEventListener("submit", (event) => {
    if (!summary || summary.dataset.total === summary.dataset.kept) { event.preventDefault(); search(); }
  });
  if (input.value) search();
  else { const first = pre.querySelector(".line.err"); if (first) { const l = byId("log-first-error"); l.href = "#" + first.id; l.hidden = false; } }

  // ---- follow: poll for the lines written since the page was read, until the step ends
  if (page.dataset.follow !== "1" || !summary) return;
  let next = summary.dataset.next;
  let lineNo = summary.dataset.line;
  const atBottom = () => window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 60;

  function append(item) {
    const anchor = (numbered ? "L" : "W") + item.n;
    const line = document.createElement("span");
    line.className = "line fresh" + (item.error ? " err" : "");
    line.id = anchor;
    line.dataset.n = item.n;
    if (item.error) line.dataset.error = "1";
    const n = document.createElement("a");
    n.className = "n";
    n.href = "#" + anchor;
    n.textContent = item.n;
    const flag = document.createElement("span");
    flag.className = "flag";
    flag.textContent = item.error ? "ERR" : "";
    const text = document.createElement("span");
    text.className = "t";
    text.textContent = item.text;
    line.append(n, flag, text);
    pre.append(line);
    apply(line, input.value);
  }

  async function poll() {
    let body;
    try {
      const url = page.dataset.followSrc + "?from=" + encodeURIComponent(next) + "&line=" + encodeURIComponent(lineNo);
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      body = await response.json();
    } catch (e) {
      setTimeout(poll, 3000);  // the dashboard restarted or the network blinked: try again, slower
      return;
    }
    const follow = atBottom();
    body.lines.forEach(append);
    next = body.next;
    lineNo = body.line;
    if (body.lines.length) {
      const empty = byId("log-empty");
      if (empty) empty.remove();
      const total = byId("log-total");
      if (total) total.textContent = pre.querySelectorAll(".line").length;
      if (input.value) search();
      if (follow) window.scrollTo({ top: document.documentElement.scrollHeight, behavior: lessMotion.matches ? "auto" : "smooth" });
    }
    if (body.running) { setTimeout(poll, 1000); return; }
    byId("log-follow").hidden = true;
    const ended = byId("log-ended");
    ended.textContent = "the step ended: " + body.outcome;
    ended.hidden = false;
    page.dataset.follow = "0";
    page.dataset.finished = body.outcome;
    const outcome = byId("log-outcome");
    outcome.dataset.outcome = body.outcome;
    outcome.innerHTML = body.badge;  // rendered by the server, as every badge
  }
  setTimeout(poll, 1000);
})();
