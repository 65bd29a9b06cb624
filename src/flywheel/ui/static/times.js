// Times in the reader's own zone: every <time datetime="…UTC…"> the server wrote (its local time, with
// its zone, stays the text without script; the UTC time is the hover title). Parts of the page replaced
// later (the live run view) are rewritten as they arrive.
(() => {
  const format = new Intl.DateTimeFormat("en-CA", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hour12: false, timeZoneName: "short",
  });
  const localize = (root) => {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach((el) => {
      const moment = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(moment.getTime())) return;
      const p = Object.fromEntries(format.formatToParts(moment).map((part) => [part.type, part.value]));
      el.textContent = `${p.year}-${p.month}-${p.day} ${p.hour === "24" ? "00" : p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
      el.dataset.local = "1";
    });
  };
  localize(document);
  new MutationObserver((changes) => {
    for (const change of changes) {
      change.addedNodes.forEach((node) => { if (node.nodeType === 1) localize(node.parentNode || node); });
    }
  }).observe(document.body, { childList: true, subtree: true });
})();
