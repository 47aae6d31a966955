"""The report page's inline style and script (kept in Python, not static files, so that they ship
with the package and DVC reruns evaluate when they change). No CDN, no web fonts."""

CSS = """
:root { --ink:#1d2329; --muted:#5b6670; --line:#dde2e6; --soft:#f5f7f8; --good:#16794c;
        --bad:#b3261e; --warn:#8a5a00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0 auto; padding: 1.5em 2em 4em; max-width: 1500px; }
h1 { font-size: 1.5em; margin: 0 0 .2em; } h2 { font-size: 1.2em; margin: 2em 0 .6em; }
.sub { color: var(--muted); margin: 0 0 1.2em; }
.banner { border: 1px solid var(--line); border-left: 8px solid var(--muted); border-radius: 6px;
          padding: 1em 1.4em; background: var(--soft); }
.banner.separated { border-left-color: var(--good); } .banner.leaning { border-left-color: #2f6fb5; }
.banner.tied { border-left-color: var(--warn); }
.ship { font-size: 1.6em; } .ship .setup { color: var(--muted); font-size: .7em; }
.badge { font-size: .55em; vertical-align: middle; padding: .15em .6em; border-radius: 1em;
         background: var(--ink); color: #fff; text-transform: uppercase; letter-spacing: .05em; }
.separated .badge { background: var(--good); } .leaning .badge { background: #2f6fb5; }
.tied .badge { background: var(--warn); }
.evidence { font-size: 1.05em; } .why { margin: .4em 0; padding-left: 1.2em; }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { border-bottom: 1px solid var(--line); padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.pick td { background: #e8f4ec; font-weight: 600; }
.win { font-weight: 700; } .pos { color: var(--good); font-weight: 600; }
.neg { color: var(--bad); font-weight: 600; } .muted, .note { color: var(--muted); }
figure { margin: 0 0 1.5em; } figure svg { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .9em; }
.controls { display: flex; gap: 1em; align-items: center; margin: .5em 0; }
#filter { font: inherit; padding: .35em .6em; width: 28em; max-width: 60vw;
          border: 1px solid var(--line); border-radius: 4px; }
table.drill { width: 100%; table-layout: fixed; font-size: 13px; }
table.drill thead th { position: sticky; top: 0; z-index: 1; white-space: normal; }
table.drill th[data-sort] { cursor: pointer; user-select: none; }
table.drill th[aria-sort=descending]::after { content: " ▼"; }
table.drill th[aria-sort=ascending]::after { content: " ▲"; }
table.drill col.num { width: 6.5em; } table.drill col.q { width: 24%; }
table.drill col.hits { width: 17%; }
td .qid { color: var(--muted); font-size: .9em; } .slice { background: #eef1f4; border-radius: 3px;
          padding: 0 .35em; margin-left: .4em; }
.ref { margin-top: .3em; color: #33414d; } .label { color: var(--muted); font-size: .85em; }
.score { font-variant-numeric: tabular-nums; color: var(--muted); font-size: .9em; }
.ans { margin: .15em 0; overflow-wrap: anywhere; } .cited, .gold { color: var(--muted); font-size: .85em; }
.g { color: var(--good); font-weight: 600; }
details.more { display: inline; } details.more summary { display: inline; cursor: pointer; }
details.more summary::marker { content: ""; } details.more[open] summary::after { content: ""; }
details.hits summary { cursor: pointer; }
.top { color: var(--ink); font-weight: 700; }
details.hits ol { margin: .2em 0 .4em; padding-left: 1.8em; }
"""

# Sort on header click (numbers from data-v; empty sorts last), filter rows by every typed word.
JS = """
"use strict";
(() => {
  const table = document.getElementById("questions");
  if (!table) return;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  const text = new Map(rows.map((r) => [r, r.textContent.toLowerCase()]));
  const shown = document.getElementById("shown");
  const key = (row, col, numeric) => {
    const cell = row.cells[col];
    if (!numeric) return cell.textContent.trim().toLowerCase();
    const v = parseFloat(cell.dataset.v);
    return Number.isNaN(v) ? null : v;
  };
  table.tHead.addEventListener("click", (event) => {
    const th = event.target.closest("th[data-sort]");
    if (!th) return;
    const numeric = th.dataset.sort === "num";
    const now = th.getAttribute("aria-sort");
    const descending = now ? now === "ascending" : numeric;
    for (const other of table.tHead.querySelectorAll("th[aria-sort]")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    const sign = descending ? -1 : 1;
    const keyed = rows.map((r) => [key(r, th.cellIndex, numeric), r]);
    keyed.sort(([a], [b]) => {
      if (a === b) return 0;
      if (a === null) return 1;  // no value: last, either direction
      if (b === null) return -1;
      return (a < b ? -1 : 1) * sign;
    });
    body.append(...keyed.map((k) => k[1]));
  });
  const filter = document.getElementById("filter");
  filter.addEventListener("input", () => {
    const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
    let count = 0;
    for (const r of rows) {
      const hit = words.every((w) => text.get(r).includes(w));
      r.hidden = !hit;
      count += hit ? 1 : 0;
    }
    shown.textContent = `${count} of ${rows.length} questions`;
  });
})();
"""
