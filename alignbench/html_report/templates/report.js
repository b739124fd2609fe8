// Sorting and paging without a server or a framework. Every value reaches the page escaped by the
// templates (tables) or as JSON (the per-image rows), and is put into cells as text, never as HTML.
(function () {
  "use strict";

  function sortKey(cell) {
    var raw = cell.getAttribute("data-sort");
    if (raw !== null && raw !== "" && !isNaN(Number(raw))) { return { number: Number(raw) }; }
    return { text: cell.textContent.trim() };
  }

  function compareKeys(a, b) {
    if (a.number !== undefined && b.number !== undefined) { return a.number - b.number; }
    if (a.number !== undefined) { return -1; } // numbers before blanks and dashes
    if (b.number !== undefined) { return 1; }
    return a.text.localeCompare(b.text, undefined, { numeric: true });
  }

  function nextDirection(header) {
    return header.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
  }

  function markSorted(headers, header, direction) {
    headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", direction);
  }

  function onActivate(header, action) {
    header.addEventListener("click", action);
    header.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") { event.preventDefault(); action(); }
    });
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = Array.prototype.slice.call(table.querySelectorAll("thead th"));
    headers.forEach(function (header, column) {
      onActivate(header, function () {
        var direction = nextDirection(header);
        var sign = direction === "ascending" ? 1 : -1;
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).map(function (row, position) {
          return { row: row, key: sortKey(row.cells[column]), position: position };
        });
        rows.sort(function (a, b) { return sign * compareKeys(a.key, b.key) || a.position - b.position; });
        rows.forEach(function (item) { body.appendChild(item.row); });
        markSorted(headers, header, direction);
      });
    });
  });

  var source = document.getElementById("image-rows");
  if (!source) { return; }
  var rows = JSON.parse(source.textContent);
  var table = document.getElementById("image-table");
  var headers = Array.prototype.slice.call(table.querySelectorAll("thead th"));
  var numeric = headers.map(function (header) { return header.getAttribute("data-numeric") === "true"; });
  var filterBox = document.getElementById("image-filter");
  var info = document.getElementById("image-page-info");
  var pageSize = 100;
  var state = { filter: "", column: 0, sign: 1, page: 0 };
  var shown = rows;

  function compareValues(a, b, column) {
    var x = a[column], y = b[column];
    if (x === null || x === "") { return (y === null || y === "") ? 0 : 1; }
    if (y === null || y === "") { return -1; }
    if (numeric[column]) { return state.sign * (x - y); }
    return state.sign * String(x).localeCompare(String(y), undefined, { numeric: true });
  }

  function refresh() {
    var needle = state.filter.toLowerCase();
    shown = needle ? rows.filter(function (row) {
      return row.some(function (value) { return value !== null && String(value).toLowerCase().indexOf(needle) !== -1; });
    }) : rows.slice();
    shown.sort(function (a, b) { return compareValues(a, b, state.column) || a[0] - b[0]; });
    state.page = Math.min(state.page, Math.max(0, Math.ceil(shown.length / pageSize) - 1));
    draw();
  }

  function draw() {
    var body = table.tBodies[0];
    while (body.firstChild) { body.removeChild(body.firstChild); }
    var start = state.page * pageSize;
    shown.slice(start, start + pageSize).forEach(function (row) {
      var tr = document.createElement("tr");
      row.forEach(function (value, column) {
        var td = document.createElement("td");
        td.textContent = value === null ? "—" : (typeof value === "number" && !Number.isInteger(value) ? value.toFixed(4) : String(value));
        if (numeric[column]) { td.className = "number"; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var end = Math.min(start + pageSize, shown.length);
    info.textContent = (shown.length ? (start + 1) + "–" + end : "0") + " of " + shown.length.toLocaleString() +
      (shown.length !== rows.length ? " (filtered from " + rows.length.toLocaleString() + ")" : "");
  }

  headers.forEach(function (header, column) {
    onActivate(header, function () {
      var direction = column === state.column ? nextDirection(header) : "ascending";
      state.column = column;
      state.sign = direction === "ascending" ? 1 : -1;
      markSorted(headers, header, direction);
      refresh();
    });
  });
  filterBox.addEventListener("input", function () { state.filter = filterBox.value.trim(); state.page = 0; refresh(); });
  document.getElementById("image-prev").addEventListener("click", function () { state.page = Math.max(0, state.page - 1); draw(); });
  document.getElementById("image-next").addEventListener("click", function () {
    if ((state.page + 1) * pageSize < shown.length) { state.page += 1; draw(); }
  });
  headers[0].setAttribute("aria-sort", "ascending");
  refresh();
}());
