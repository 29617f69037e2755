// Live numbers without a reload: poll the page's JSON endpoint, write each value into the elements that show it
// ([data-job=ID] [data-live=KEY]), and swap the charts in when results arrive. Polls less often while nothing
// changes; stops once every job shown is final.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-live-url");
  if (!url) return;
  var every = parseInt(body.getAttribute("data-poll-ms") || "1000", 10);
  var chartsUrl = body.getAttribute("data-charts-url");
  var dot = document.getElementById("live-status");
  var lastDone = {};
  var wait = every;  // doubles while nothing moves (a batch can take hours), back to `every` when something does
  var lastSeen = "";
  // An action started from this page (resume) may not have moved the job out of its final state yet: poll until the
  // state changes once.
  var keep = body.hasAttribute("data-keep-polling");
  var firstStates = null;
  var FINAL = ["completed", "canceled", "stopped"];

  function fmt(value, kind) {
    if (kind === "money") return value === null ? "unknown" : "$" + Number(value).toLocaleString("en-US", {minimumFractionDigits: 4, maximumFractionDigits: 4});
    if (kind === "pct") return value === null ? "–" : Math.round(value * 100) + "%";
    if (kind === "percent") return value + "%";
    return String(value);
  }

  function apply(job) {
    var scope = document.querySelector('[data-job="' + CSS.escape(job.job_id) + '"]');
    if (!scope) return;
    if (lastDone[job.job_id] === undefined) {  // what the page was rendered with: a change since then swaps the charts
      var shown = scope.querySelector('[data-live="done"]');
      lastDone[job.job_id] = shown ? Number(shown.textContent) : job.done;
    }
    scope.querySelectorAll("[data-live]").forEach(function (el) {
      var key = el.getAttribute("data-live");
      if (!(key in job)) return;
      var text = fmt(job[key], el.getAttribute("data-fmt"));
      if (el.textContent !== text) el.textContent = text;
      if (key === "state") el.className = "state s-" + job.state;
    });
    scope.querySelectorAll("[data-live-bar]").forEach(function (el) {
      var n = job[el.getAttribute("data-live-bar")] || 0;
      el.style.width = (job.documents ? 100 * n / job.documents : 0) + "%";
    });
    if (chartsUrl && lastDone[job.job_id] !== job.done) {
      fetch(chartsUrl, {credentials: "same-origin"}).then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) document.getElementById("charts").innerHTML = html; });
    }
    lastDone[job.job_id] = job.done;
  }

  function tick() {
    fetch(url, {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        data.jobs.forEach(apply);
        if (dot) dot.className = "live-dot on";
        var seen = JSON.stringify(data.jobs);
        wait = seen === lastSeen ? Math.min(wait * 2, every * 8) : every;
        lastSeen = seen;
        var states = data.jobs.map(function (j) { return j.state; }).join();
        if (firstStates === null) firstStates = states;
        else if (states !== firstStates) keep = false;
        var running = data.jobs.some(function (j) { return FINAL.indexOf(j.state) < 0; });
        if (running || keep) setTimeout(tick, wait);
        else if (dot) dot.className = "live-dot";
      })
      .catch(function () { if (dot) dot.className = "live-dot err"; setTimeout(tick, every * 5); });
  }
  setTimeout(tick, every);
})();
