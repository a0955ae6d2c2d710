// The site's behaviour: pages as tabs, sortable tables (a number sorts as a number), method
// rows that open to their details, and the dataset / preset / precision filters.
(function () {
  "use strict";

  function number(text) {
    var m = text.replace(/\u2212/g, "-").match(/[-+]?\d*\.?\d+(?:e[-+]?\d+)?/i);
    return m ? parseFloat(m[0]) : NaN;
  }

  function groups(tbody) {
    // a row and the details row that follows it move together
    var out = [];
    Array.prototype.forEach.call(tbody.children, function (tr) {
      if (tr.classList.contains("details") && out.length) {
        out[out.length - 1].push(tr);
      } else {
        out.push([tr]);
      }
    });
    return out;
  }

  function sortBy(th) {
    var table = th.closest("table");
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var tbody = table.tBodies[0];
    var rows = groups(tbody);
    var keyed = rows.map(function (g, i) {
      var cell = g[0].children[col];
      var text = cell ? cell.textContent.trim() : "";
      return { g: g, i: i, n: number(text), t: text };
    });
    var numeric = keyed.some(function (k) { return !isNaN(k.n); });
    keyed.sort(function (a, b) {
      var d;
      if (numeric) {
        if (isNaN(a.n) && isNaN(b.n)) { d = 0; }
        else if (isNaN(a.n)) { return 1; }  // no number (n/a): last either way
        else if (isNaN(b.n)) { return -1; }
        else { d = a.n - b.n; }
      } else {
        d = a.t.localeCompare(b.t);
      }
      if (!ascending) { d = -d; }
      return d || a.i - b.i;
    });
    keyed.forEach(function (k) { k.g.forEach(function (tr) { tbody.appendChild(tr); }); });
  }

  function toggle(row) {
    var next = row.nextElementSibling;
    if (!next || !next.classList.contains("details")) { return; }
    next.hidden = !next.hidden;
    row.setAttribute("aria-expanded", next.hidden ? "false" : "true");
  }

  function show(page) {
    var pages = document.querySelectorAll("section.page");
    var found = false;
    pages.forEach(function (p) { if (p.dataset.page === page) { found = true; } });
    if (!found && pages.length) { page = pages[0].dataset.page; }
    pages.forEach(function (p) { p.hidden = p.dataset.page !== page; });
    document.querySelectorAll("nav .tab").forEach(function (b) {
      b.setAttribute("aria-selected", b.dataset.page === page ? "true" : "false");
    });
  }

  function filter() {
    var dataset = document.getElementById("f-dataset").value;
    var preset = document.getElementById("f-preset").value;
    var precision = document.getElementById("f-precision").value;
    document.querySelectorAll("section.board").forEach(function (s) {
      s.hidden = (dataset && s.dataset.dataset !== dataset) || (preset && s.dataset.preset !== preset);
    });
    document.querySelectorAll("tr.row").forEach(function (tr) {
      var have = (tr.dataset.precision || "").split(" ");
      var out = precision && have.indexOf(precision) < 0;
      tr.hidden = !!out;
      var next = tr.nextElementSibling;
      if (out && next && next.classList.contains("details")) {
        next.hidden = true;
        tr.setAttribute("aria-expanded", "false");
      }
    });
  }

  document.addEventListener("click", function (e) {
    var th = e.target.closest("table.sortable thead th");
    if (th) { sortBy(th); return; }
    var row = e.target.closest("tr.row");
    if (row) { toggle(row); return; }
    var tab = e.target.closest("nav .tab");
    if (tab) { show(tab.dataset.page); history.replaceState(null, "", "#" + tab.dataset.page); }
  });
  document.addEventListener("keydown", function (e) {
    if ((e.key === "Enter" || e.key === " ") && e.target.matches && e.target.matches("tr.row")) {
      e.preventDefault();
      toggle(e.target);
    }
  });
  ["f-dataset", "f-preset", "f-precision"].forEach(function (id) {
    document.getElementById(id).addEventListener("change", filter);
  });

  function fromHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    var page = target && (target.closest ? target.closest("section.page") : null);
    show(page ? page.dataset.page : id);
    if (target && page && target !== page) { target.scrollIntoView(); }
  }
  window.addEventListener("hashchange", fromHash);
  fromHash();
  filter();
})();
