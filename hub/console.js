// Canopy status page: refresh in place, and admin buttons. Served by the
// hub itself (embedded); no other script runs on the page.
"use strict";
(function () {
  const live = document.getElementById("live");
  const msg = document.getElementById("msg");
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const q = new URLSearchParams(location.search);
      q.set("fragment", "1");
      const r = await fetch(location.pathname + "?" + q.toString(), { credentials: "same-origin" });
      if (r.ok) live.innerHTML = await r.text();
    } catch (e) {
      msg.textContent = "refresh failed: " + e.message;
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, 5000);
  live.addEventListener("click", async function (ev) {
    const b = ev.target.closest("button[data-act]");
    if (!b) return;
    const a = b.dataset.action;
    let url;
    if (b.dataset.act === "site") url = "/api/v1/sites/" + encodeURIComponent(b.dataset.site) + "/" + a;
    else url = "/api/v1/vms/" + encodeURIComponent(b.dataset.vm) + "/" + a;
    const what = b.dataset.act === "site" ? "site " + b.dataset.site : "VM " + b.dataset.vm;
    if ((a === "drain" || a === "retire" || a === "disable") && !confirm(a + " " + what + "?")) return;
    b.disabled = true;
    try {
      const r = await fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-Canopy-Action": "1" } });
      msg.textContent = r.ok ? a + " " + what + ": done" : a + " " + what + " refused: " + (await r.text());
    } catch (e) {
      msg.textContent = a + " " + what + " failed: " + e.message;
    }
    await refresh();
  });
})();
