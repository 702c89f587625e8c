// Filters for report.html. The data is already in the page as escaped HTML; this script only
// shows and hides elements and sets text content. It never parses strings as markup, so a
// hostile string in a finding stays text. `?selftest` runs the filters through every combination
// and writes the visible counts into the page, for the headless-browser test.
(function () {
  "use strict";
  var famSel = document.getElementById("filter-family");
  var verSel = document.getElementById("filter-verdict");
  var text = document.getElementById("filter-text");
  var count = document.getElementById("visible-count");
  var noMatch = document.getElementById("no-match");
  var controls = document.getElementById("controls");
  var items = Array.prototype.slice.call(document.querySelectorAll("li.finding"));
  var totals = Array.prototype.slice.call(document.querySelectorAll("button.total"));
  var famLinks = Array.prototype.slice.call(document.querySelectorAll("button.family-link"));

  function matches(el, fam, ver, q) {
    var v = el.getAttribute("data-verdict");
    if (fam !== "all" && el.getAttribute("data-family") !== fam) { return false; }
    if (ver === "non_pass") { if (v === "pass") { return false; } }
    else if (ver !== "all" && v !== ver) { return false; }
    if (q && el.textContent.toLowerCase().indexOf(q) === -1) { return false; }
    return true;
  }

  function writeHash() {
    var parts = [];
    if (famSel.value !== "all") { parts.push("family=" + encodeURIComponent(famSel.value)); }
    if (verSel.value !== "all") { parts.push("verdict=" + encodeURIComponent(verSel.value)); }
    if (text.value) { parts.push("q=" + encodeURIComponent(text.value)); }
    try {
      history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname + location.search);
    } catch (e) {
      // Some browsers refuse replaceState on file:// pages; the filters work without it.
    }
  }

  function apply() {
    var fam = famSel.value, ver = verSel.value, q = text.value.trim().toLowerCase(), shown = 0;
    items.forEach(function (el) {
      var show = matches(el, fam, ver, q);
      el.hidden = !show;
      if (show) { shown += 1; }
    });
    totals.forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-verdict") === ver));
    });
    count.textContent = shown + " of " + items.length + " findings";
    noMatch.hidden = shown !== 0 || items.length === 0;
    writeHash();
  }

  function hasOption(sel, value) {
    return Array.prototype.some.call(sel.options, function (o) { return o.value === value; });
  }

  function readHash() {
    var h = location.hash.replace(/^#/, "");
    if (!h) { return; }
    h.split("&").forEach(function (kv) {
      var i = kv.indexOf("="), k = i < 0 ? kv : kv.slice(0, i), v = "";
      try { v = decodeURIComponent(i < 0 ? "" : kv.slice(i + 1)); } catch (e) { return; }
      if (k === "family" && hasOption(famSel, v)) { famSel.value = v; }
      if (k === "verdict" && hasOption(verSel, v)) { verSel.value = v; }
      if (k === "q") { text.value = v; }
    });
  }

  function setOpen(open) {
    items.forEach(function (el) {
      var d = el.querySelector("details");
      if (d && !el.hidden) { d.open = open; }
    });
  }

  famSel.addEventListener("change", apply);
  verSel.addEventListener("change", apply);
  text.addEventListener("input", apply);
  document.getElementById("expand-all").addEventListener("click", function () { setOpen(true); });
  document.getElementById("collapse-all").addEventListener("click", function () { setOpen(false); });
  totals.forEach(function (b) {
    b.addEventListener("click", function () {
      var v = b.getAttribute("data-verdict");
      verSel.value = verSel.value === v ? "all" : v;
      apply();
    });
  });
  famLinks.forEach(function (b) {
    b.addEventListener("click", function () {
      famSel.value = b.getAttribute("data-family");
      apply();
      document.getElementById("findings").scrollIntoView();
    });
  });

  // Printing shows the evidence of every finding still listed.
  var reopen = [];
  window.addEventListener("beforeprint", function () {
    reopen = items.filter(function (el) { var d = el.querySelector("details"); return d && !d.open; });
    reopen.forEach(function (el) { el.querySelector("details").open = true; });
  });
  window.addEventListener("afterprint", function () {
    reopen.forEach(function (el) { el.querySelector("details").open = false; });
    reopen = [];
  });

  controls.hidden = false;
  readHash();
  apply();

  function rendered() {
    return items.filter(function (el) { return el.getClientRects().length > 0; }).length;
  }

  function selftest() {
    var lines = [];
    var fams = Array.prototype.map.call(famSel.options, function (o) { return o.value; });
    var vers = Array.prototype.map.call(verSel.options, function (o) { return o.value; });
    fams.forEach(function (f) {
      vers.forEach(function (v) {
        famSel.value = f;
        famSel.dispatchEvent(new Event("change"));
        verSel.value = v;
        verSel.dispatchEvent(new Event("change"));
        lines.push("filter " + f + " " + v + " " + rendered() + " label=" + count.textContent.split(" ")[0]);
      });
    });
    famSel.value = "all";
    verSel.value = "all";
    var params = new URLSearchParams(location.search);
    var q = params.get("q");
    if (q) {
      text.value = q;
      text.dispatchEvent(new Event("input"));
      lines.push("search " + rendered());
      text.value = "";
      text.dispatchEvent(new Event("input"));
    }
    if (totals.length) {
      totals[totals.length - 1].click();
      lines.push("total-button " + totals[totals.length - 1].getAttribute("data-verdict") + " " + rendered());
      verSel.value = "all";
      apply();
    }
    if (famLinks.length) {
      famLinks[0].click();
      lines.push("family-link " + famLinks[0].getAttribute("data-family") + " " + rendered());
      famSel.value = "all";
      apply();
    }
    document.getElementById("expand-all").click();
    lines.push("expanded " + document.querySelectorAll("li.finding details[open]").length);
    document.getElementById("collapse-all").click();
    lines.push("collapsed " + document.querySelectorAll("li.finding details[open]").length);
    var out = document.createElement("pre");
    out.id = "selftest-output";
    out.textContent = lines.join("\n");
    document.body.appendChild(out);
    document.documentElement.setAttribute("data-selftest", "done");
  }

  if (/(^|[?&])selftest(=|&|$)/.test(location.search.replace(/^\?/, ""))) { selftest(); }
})();
