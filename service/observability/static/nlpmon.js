// nlpmon pages: refresh <main id="content"> every data-refresh seconds without a full reload (fetch the
// same URL, parse it, swap the element), keep open <details> open, announce drift changes politely,
// let the user pause, and let a click on a recent point of the projection select that example.
(function () {
  "use strict";
  var body = document.body;
  var seconds = Number(body.getAttribute("data-refresh")) || 0;
  var status = document.getElementById("refresh-status");
  var toggle = document.getElementById("refresh-toggle");
  var announce = document.getElementById("announce");
  var paused = false;
  var timer = null;

  function text(id, root) {
    var el = (root || document).getElementById(id);
    return el ? el.textContent : "";
  }

  function refresh() {
    timer = null;
    fetch(window.location.href, { headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("content");
        var old = document.getElementById("content");
        if (!fresh || !old) { throw new Error("no content in the response"); }
        var open = Array.prototype.map.call(document.querySelectorAll("details[open][id]"),
                                            function (d) { return d.id; });
        var before = text("drift-summary");
        old.replaceWith(document.importNode(fresh, true));
        open.forEach(function (id) { var d = document.getElementById(id); if (d) { d.open = true; } });
        document.title = doc.title;
        var after = text("drift-summary");
        if (announce && after !== before) { announce.textContent = after; }
        body.setAttribute("data-refreshed", String(Number(body.getAttribute("data-refreshed")) + 1));
        if (status) { status.textContent = "Updated " + new Date().toLocaleTimeString() + "."; }
      })
      .catch(function (err) {
        if (status) { status.textContent = "Refresh failed (" + err.message + "); retrying."; }
      })
      .then(schedule);
  }

  function schedule() {
    if (!paused && seconds > 0 && timer === null) { timer = window.setTimeout(refresh, seconds * 1000); }
  }

  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", String(paused));
      toggle.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
      if (paused && timer !== null) { window.clearTimeout(timer); timer = null; }
      if (status) { status.textContent = paused ? "Paused." : "Refreshes every " + seconds + " s."; }
      schedule();
    });
  }

  document.addEventListener("click", function (ev) {
    var target = ev.target;
    var point = target && target.closest ? target.closest("[data-example]") : null;
    if (!point) { return; }
    var params = new URLSearchParams(window.location.search);
    params.set("example", point.getAttribute("data-example"));
    window.location.search = params.toString();
  });

  schedule();
})();
