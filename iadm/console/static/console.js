// The console's progressive part: the pages work without it; with it, new alerts appear without a
// reload (the store's version is polled every second) and dangerous buttons ask first.
"use strict";
(function () {
  const body = document.body;
  const csrf = document.querySelector('meta[name="csrf"]');
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });
  if (!body.dataset.version || !csrf) return;
  let version = body.dataset.version;
  let busy = false;
  async function refresh() {
    const page = await fetch(window.location.href, {credentials: "same-origin"});
    if (!page.ok) return;
    const doc = new DOMParser().parseFromString(await page.text(), "text/html");
    for (const id of ["live", "inbox-count"]) {
      const now = document.getElementById(id), fresh = doc.getElementById(id);
      if (now && fresh) now.replaceWith(document.adoptNode(fresh));
    }
  }
  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch("/console/api/version", {credentials: "same-origin"});
      if (r.status === 401) { window.location = "/console/login"; return; }
      const doc = await r.json();
      if (String(doc.version) !== version) {
        version = String(doc.version);
        body.dataset.version = version;
        await refresh();
      }
    } catch (e) { /* the monitor restarts: try again next tick */ }
    finally { busy = false; }
  }
  setInterval(poll, 1000);
})();
