"""The page ``hrm view`` writes (pipelines/view.py): HTML, CSS and JavaScript in one string, the data put in
place of ``/*HRM_DATA*/``. No network at view time: nothing here loads a file, a font or a library.

Boards are drawn from the task's description (Task.board_view: rows, columns, each token's text and
colour, a block size); a board travels as a string of one base-36 character per token. Element ids and
``data-*`` attributes are what tests/test_view.py reads back in a real browser.
"""

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hrm view</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #263238; color: #fff; padding: 8px 16px; }
header h1 { font-size: 18px; margin: 0 0 4px 0; }
header .notes { font-size: 12px; color: #cfd8dc; } header a { color: #80d8ff; }
nav button { margin-right: 6px; padding: 4px 12px; border: 1px solid #90a4ae; background: #37474f; color: #fff;
  cursor: pointer; border-radius: 3px; }
nav button.active { background: #eceff1; color: #263238; }
main { padding: 12px 16px; }
section { display: none; } section.active { display: block; }
.controls { margin: 6px 0 10px 0; } .controls label { margin-right: 12px; }
.controls input[type=number] { width: 5em; }
.cols { display: flex; gap: 16px; align-items: flex-start; }
.list { max-height: 75vh; overflow-y: auto; min-width: 300px; border: 1px solid #ddd; background: #fff; }
.list .item, .list tr.item { cursor: pointer; } .list .item { padding: 3px 8px; border-bottom: 1px solid #eee; }
.list .selected, .list tr.selected td { background: #e3f2fd; }
table.data { border-collapse: collapse; font-size: 12px; } table.data td, table.data th { padding: 2px 6px;
  border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; } table.data th { position: sticky; top: 0;
  background: #eceff1; }
.detail { flex: 1; } .figures { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figcaption { font-size: 11px; max-width: 300px; color: #455a64; }
.board { display: inline-grid; border: 2px solid #263238; background: #263238; gap: 0; }
.cell { display: flex; align-items: center; justify-content: center; box-sizing: border-box;
  border-right: 1px solid #cfd8dc; border-bottom: 1px solid #cfd8dc; font-weight: 400; color: #1565c0; }
.cell.given { color: #000; font-weight: 700; background-image: linear-gradient(#0000000f, #0000000f); }
.cell.changed { box-shadow: inset 0 0 0 2px #fb8c00; }
.cell.wrong { color: #d50000; background-image: linear-gradient(#ff17442e, #ff17442e); }
.cell.wrong.small-cell { box-shadow: inset 0 0 0 2px #d50000; }
.cell.conflict { outline: 2px dashed #8e24aa; outline-offset: -4px; }
.cell.bl { border-left: 2px solid #263238; } .cell.bt { border-top: 2px solid #263238; }
.legend span { display: inline-block; margin-right: 12px; font-size: 12px; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin-right: 3px; }
.facts { font-size: 13px; margin: 4px 0; } .muted { color: #78909c; font-size: 12px; }
svg text { font-size: 10px; fill: #455a64; }
table.passes td.pass { text-align: center; background: #eceff1; } table.passes td.pass.exact { background: #c8e6c9; }
table.passes th { text-align: left; }
</style></head>
<body>
<header><h1 id="title">hrm view</h1><div class="notes" id="notes"></div>
<nav><button id="tab-datasets">Datasets</button><button id="tab-evaluation">Evaluation</button>
<button id="tab-traces">Traces</button></nav></header>
<main>
<section id="datasets"><div class="controls">
 <label>dataset <select id="dataset-select"></select></label><label>split <select id="split-select"></select></label>
 <label>rating <input id="rating-min" type="number"> to <input id="rating-max" type="number"></label>
 <label>blanks <input id="blanks-min" type="number"> to <input id="blanks-max" type="number"></label>
 <label><input id="show-labels" type="checkbox"> solutions</label>
 <span id="group-count" class="muted"></span></div>
 <div class="cols"><div class="list" id="group-list"></div><div class="detail" id="group-detail"></div></div></section>
<section id="evaluation"><div class="facts" id="eval-summary"></div><div class="controls">
 <label>show <select id="eval-filter"><option value="all">all</option><option value="solved">solved</option>
 <option value="unsolved">unsolved</option><option value="vote">solved only by the vote</option></select></label>
 <span id="eval-count" class="muted"></span>
 <button id="eval-prev">◀ previous</button><button id="eval-next">next ▶</button></div>
 <div class="cols"><div class="list"><table class="data" id="eval-table"></table></div>
 <div class="detail" id="eval-detail"></div></div></section>
<section id="traces"><div class="facts" id="trace-summary"></div><div class="controls">
 <label>show <select id="trace-filter"><option value="all">all</option><option value="exact">exact</option>
 <option value="wrong">not exact</option><option value="runs">with multistability runs</option></select></label><span id="trace-count" class="muted"></span></div>
 <div class="cols"><div class="list"><table class="data" id="trace-table"></table></div>
 <div class="detail" id="trace-detail"><p class="muted">Click a puzzle to step through its trace.</p></div></div>
</section>
</main>
<script type="application/json" id="hrm-data">/*HRM_DATA*/</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("hrm-data").textContent);
const TOK = "0123456789abcdefghijklmnopqrstuvwxyz";
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) { if (k === "text") e.textContent = v; else e.setAttribute(k, v); }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
const tokens = (s) => Array.from(s, (c) => TOK.indexOf(c));
function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "boolean") return v ? "✓" : "✗";
  if (typeof v === "number" && !Number.isInteger(v)) return Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(2) : v.toFixed(3);
  return String(v);
}
// One board: marks.given / changed / wrong are arrays of booleans (or absent).
function drawBoard(task, board, marks, id) {
  const view = D.views[task], t = tokens(board), size = view.cols > 12 ? 11 : 28;
  const grid = el("div", {class: "board", "data-rows": view.rows, "data-cols": view.cols, "data-board": board});
  if (id) grid.id = id;
  grid.style.gridTemplateColumns = `repeat(${view.cols}, ${size}px)`;
  marks = marks || {};
  t.forEach((tok, i) => {
    const look = view.cells[tok] || ["?", "#ff00ff"], r = Math.floor(i / view.cols), c = i % view.cols;
    const cell = el("div", {class: "cell", "data-token": tok, "data-index": i, text: look[0]});
    cell.style.width = cell.style.height = size + "px"; cell.style.backgroundColor = look[1];
    if (size < 20) { cell.classList.add("small-cell"); cell.style.fontSize = "8px"; }
    for (const m of ["given", "changed", "wrong", "conflict"]) if (marks[m] && marks[m][i]) cell.classList.add(m);
    if (view.block && c % view.block === 0 && c) cell.classList.add("bl");
    if (view.block && r % view.block === 0 && r) cell.classList.add("bt");
    grid.append(cell);
  });
  return grid;
}
const givenMask = (decided) => Array.from(decided, (c) => c === "0");
// A list of cell indices (the task's rule conflicts, Task.conflict_cells) as one boolean a cell.
function cellMask(indices, n) { const m = new Array(n).fill(false); for (const i of indices || []) m[i] = true; return m; }
function figure(board, caption) { return el("figure", {}, board, el("figcaption", {text: caption})); }
function activate(name) {
  for (const s of ["datasets", "evaluation", "traces"]) {
    $(s).classList.toggle("active", s === name); $("tab-" + s).classList.toggle("active", s === name);
  }
}

// ------------------------------------------------------------------ datasets
function groupsShown() {
  const ds = D.datasets[+$("dataset-select").value], split = ds.splits[$("split-select").value];
  const num = (id) => $(id).value === "" ? null : +$(id).value;
  const [rlo, rhi, blo, bhi] = ["rating-min", "rating-max", "blanks-min", "blanks-max"].map(num);
  const keep = (g) => (rlo === null || g.rating >= rlo) && (rhi === null || g.rating <= rhi) &&
    (blo === null || g.blanks >= blo) && (bhi === null || g.blanks <= bhi);
  return [ds, split, split.groups.filter(keep)];
}
function showGroups() {
  const [ds, split, groups] = groupsShown(), list = $("group-list");
  list.replaceChildren();
  for (const g of groups) {
    const kinds = g.variants.map(([v, n]) => `${n} ${v}`).join(", ");
    const item = el("div", {class: "item group-item", "data-group": g.group,
      text: `group ${g.group} · rating ${g.rating} · ${g.blanks} blanks · ${kinds}`});
    item.onclick = () => showGroup(ds, g, item);
    list.append(item);
  }
  $("group-count").textContent = `${groups.length} groups listed; ${split.groups.length} of the split's ` +
    `${split.groups_total} groups embedded (--max-groups), at most ${D.caps.max_versions} rows each`;
  $("group-detail").replaceChildren();
}
function showGroup(ds, g, item) {
  for (const x of document.querySelectorAll(".group-item.selected")) x.classList.remove("selected");
  item.classList.add("selected");
  const labels = $("show-labels").checked, figs = el("div", {class: "figures"});
  for (const v of g.versions) {
    const what = v.variant === "hint" ? `hint of puzzle ${v.parent_id}` : v.variant;
    const board = drawBoard(ds.task, labels ? v.labels : v.inputs, {given: givenMask(v.decided)});
    figs.append(figure(board, `${what} (puzzle ${v.puzzle_id}): ${v.transform}`));
  }
  const more = g.rows > g.versions.length ? ` (${g.versions.length} of its ${g.rows} rows shown)` : "";
  $("group-detail").replaceChildren(el("div", {class: "facts", text: `group ${g.group} of ${ds.name}${more}`}), figs);
}
function initDatasets() {
  if (!D.datasets) { $("datasets").append(el("p", {class: "muted", text: "No datasets folder was read."})); return; }
  D.datasets.forEach((ds, i) => $("dataset-select").append(el("option", {value: i, text: ds.name})));
  const fillSplits = () => {
    const ds = D.datasets[+$("dataset-select").value];
    const names = Object.keys(ds.splits), most = (s) => ds.splits[s].rows_total / Math.max(1, ds.splits[s].groups_total);
    $("split-select").replaceChildren(...names.map((s) => el("option", {value: s, text: s})));
    $("split-select").value = names.reduce((a, b) => most(b) > most(a) ? b : a);  // augmented versions first
  };
  $("dataset-select").onchange = () => { fillSplits(); showGroups(); };
  for (const id of ["split-select", "rating-min", "rating-max", "blanks-min", "blanks-max"]) $(id).oninput = showGroups;
  $("show-labels").onchange = () => { const s = document.querySelector(".group-item.selected"); if (s) s.click(); };
  fillSplits(); showGroups();
}

// ------------------------------------------------------------------ evaluation
function summaryLine(summary) {
  return Object.entries(summary || {}).slice(0, 12).map(([k, v]) => `${k} ${fmt(v)}`).join(" · ");
}
function evalKeep(E, row) {
  const f = $("eval-filter").value, col = (name) => name === null ? null : row[E.columns.indexOf(name)];
  const solved = col(E.solved_column), base = col(E.baseline_column);
  if (f === "solved") return solved === true;
  if (f === "unsolved") return solved === false;
  if (f === "vote") return solved === true && base === false;
  return true;
}
// The list is drawn a page of PAGE_ROWS rows at a time: a table of 10,000 rows would take seconds to lay out.
const PAGE_ROWS = 500;
let evalPage = 0;
function showEvaluation() {
  const E = D.evaluation, table = $("eval-table"), kept = [];
  E.rows.forEach((row, i) => { if (evalKeep(E, row)) kept.push(i); });
  const pages = Math.max(1, Math.ceil(kept.length / PAGE_ROWS));
  evalPage = Math.max(0, Math.min(evalPage, pages - 1));
  const rows = document.createDocumentFragment();
  for (const i of kept.slice(evalPage * PAGE_ROWS, (evalPage + 1) * PAGE_ROWS)) {
    const tr = el("tr", {class: "item eval-item", "data-index": i}, ...E.rows[i].map((v) => el("td", {text: fmt(v)})));
    tr.onclick = () => showEvalPuzzle(i, tr);
    rows.append(tr);
  }
  table.replaceChildren(el("tr", {}, ...E.columns.map((c) => el("th", {text: c}))), rows);
  const capped = E.rows.length < E.total ? ` (the first ${E.rows.length} of its ${E.total} rows embedded: --max-puzzles)` : "";
  const paged = pages > 1 ? ` · rows ${evalPage * PAGE_ROWS + 1}-${Math.min(kept.length, (evalPage + 1) * PAGE_ROWS)}, ` +
    `page ${evalPage + 1} of ${pages}` : "";
  $("eval-count").textContent = `${kept.length} puzzles listed of ${E.file}${capped}${paged}`;
  $("eval-count").dataset.count = kept.length;
  $("eval-prev").style.display = $("eval-next").style.display = pages > 1 ? "" : "none";
  $("eval-prev").disabled = evalPage === 0; $("eval-next").disabled = evalPage === pages - 1;
}
function showEvalPuzzle(i, tr) {
  for (const x of document.querySelectorAll(".eval-item.selected")) x.classList.remove("selected");
  tr.classList.add("selected");
  const E = D.evaluation, row = E.rows[i], r = E.columns.includes("row") ? row[E.columns.indexOf("row")] : null;
  const b = r === null ? null : (D.boards[`${E.dataset}/${E.split}`] || {})[String(r)];
  const facts = E.columns.map((c, k) => `${c} ${fmt(row[k])}`).join(" · ");
  const out = [el("div", {class: "facts", text: facts})];
  if (b) out.push(el("div", {class: "figures"}, figure(drawBoard(E.task, b[0], {given: givenMask(b[2])}), "question"),
    figure(drawBoard(E.task, b[1], {given: givenMask(b[2])}), "solution")));
  if (E.passes) out.push(passGrid(E.passes, i));
  const traced = D.traces ? D.traces.puzzles.findIndex((p) => p.facts.row === r && p.steps) : -1;
  if (traced >= 0) {
    const go = el("button", {id: "open-trace", text: "open its trace"});
    go.onclick = () => { activate("traces"); showTrace(traced); };
    out.push(go);
  }
  $("eval-detail").replaceChildren(...out);
}
// Every (checkpoint, pass) of puzzle i: a character of flags (1 exact, 2 halted at the last segment, 4 verified)
// and one of its first halting segment (0: none), checkpoint k's pass p at k * P + p.
function passGrid(P, i) {
  const n = P.passes, flags = P.flags[i], halt = P.halt[i];
  const table = el("table", {class: "data passes", id: "pass-grid"});
  table.append(el("tr", {}, el("th", {text: "checkpoint \\ pass"}),
    ...Array.from({length: n}, (_, p) => el("th", {text: p ? String(p) : "0 (as given)"}))));
  P.checkpoints.forEach((name, k) => {
    const tr = el("tr", {}, el("th", {text: name + (k === P.checkpoints.length - 1 ? " (primary)" : "")}));
    for (let p = 0; p < n; p++) {
      const f = TOK.indexOf(flags[k * n + p]), s = TOK.indexOf(halt[k * n + p]);
      const exact = (f & 1) > 0, halted = (f & 2) > 0, verified = (f & 4) > 0;
      tr.append(el("td", {class: "pass" + (exact ? " exact" : ""), "data-checkpoint": k, "data-pass": p,
        "data-exact": +exact, "data-halted": +halted, "data-verified": +verified, "data-segment": s,
        text: `${exact ? "✓" : "✗"} ${s ? "halt " + s : "no halt"}${halted ? " H" : ""}${verified ? " v" : ""}`}));
    }
    table.append(tr);
  });
  return el("div", {}, el("h4", {text: `Each pass: ${P.checkpoints.length} checkpoint(s) x ${n} ${P.perturbation} ` +
    `pass(es), ${P.segments} segments`}), table, el("div", {class: "muted", text: "✓ exact at the last segment · " +
    "halt s: the first segment whose halt signal fired · H: halted at the last segment (what the vote counts) · " +
    "v: the answer passes the task's verifier"}));
}
function initEvaluation() {
  if (!D.evaluation) { $("evaluation").append(el("p", {class: "muted", text: "No evaluate folder was read."})); return; }
  $("eval-summary").textContent = summaryLine(D.evaluation.summary);
  if (!D.evaluation.solved_column) $("eval-filter").disabled = true;
  $("eval-filter").onchange = () => { evalPage = 0; showEvaluation(); };
  $("eval-prev").onclick = () => { evalPage -= 1; showEvaluation(); };
  $("eval-next").onclick = () => { evalPage += 1; showEvaluation(); };
  showEvaluation();
}

// ------------------------------------------------------------------ traces
const TRACE_FACTS = ["row", "exact", "critical_step", "first_correct", "convergence", "blanks", "rating", "runs"];
function showTraceList() {
  const T = D.traces, table = $("trace-table"), f = $("trace-filter").value;
  const cols = TRACE_FACTS.filter((c) => T.puzzles.length && c in T.puzzles[0].facts);
  table.replaceChildren(el("tr", {}, ...cols.map((c) => el("th", {text: c}))));
  let n = 0;
  T.puzzles.forEach((p, i) => {
    if ((f === "exact" && !p.facts.exact) || (f === "wrong" && p.facts.exact) || (f === "runs" && !p.facts.runs)) return;
    const tr = el("tr", {class: "item trace-item", "data-index": i, "data-row": p.facts.row},
      ...cols.map((c) => el("td", {text: fmt(p.facts[c])})));
    tr.onclick = () => showTrace(i);
    table.append(tr); n += 1;
  });
  const capped = T.puzzles.length < T.total ? ` (the first ${T.puzzles.length} of ${T.total} embedded: --max-traced)` : "";
  $("trace-count").textContent = `${n} traced puzzles listed${capped}`;
  $("trace-count").dataset.count = n;
}
let current = null;  // {p, b, step}
function showTrace(i) {
  const T = D.traces, p = T.puzzles[i], b = (D.boards[`${T.dataset}/${T.split}`] || {})[String(p.facts.row)];
  for (const x of document.querySelectorAll(".trace-item")) x.classList.toggle("selected", +x.dataset.index === i);
  const detail = $("trace-detail");
  if (!p.steps || !b) { detail.replaceChildren(el("p", {text: "No steps of this puzzle in traces.parquet."})); return; }
  const crit = p.facts.critical_step, n = p.steps.step.length;
  const critText = crit > 0 ? `segment ${crit} (right from then on)` : "never (not right at the last segment)";
  const slider = el("input", {id: "step-slider", type: "range", min: 0, max: n - 1, value: n - 1, step: 1});
  slider.oninput = () => drawStep(+slider.value);
  detail.replaceChildren(
    el("div", {class: "facts", id: "trace-facts", text: `row ${p.facts.row} · exact ${fmt(p.facts.exact)} · ` +
      `convergence: ${p.facts.convergence} · critical step: ${critText}`}),
    el("div", {}, slider, " ", el("span", {id: "step-label"})),
    el("div", {class: "muted", text: "← / → step through the H steps"}),
    el("div", {class: "cols"}, el("div", {id: "trace-board-box"}), el("div", {id: "trace-chart-box"})),
    el("div", {class: "legend"}, swatchText("#fb8c00", "changed since the previous step"),
      swatchText("#d50000", "wrong (differs from the label)"), swatchText("#000", "given (bold)"),
      T.conflicts ? swatchText("#8e24aa", "breaks a rule of the puzzle (dashed; no label read)") : null),
    el("h4", {text: "Multistability runs (perturbed starts, same puzzle)"}), multistability(T, p, b));
  current = {p, b, step: n - 1};
  drawStep(n - 1);
}
function swatchText(colour, text) {
  const s = el("span", {}, el("span", {class: "swatch"}), text); s.firstChild.style.background = colour; return s;
}
function drawStep(s) {
  const {p, b} = current, st = p.steps, n = st.step.length;
  s = Math.max(0, Math.min(n - 1, s)); current.step = s; $("step-slider").value = s;
  const pred = tokens(st.board[s]), prev = s > 0 ? tokens(st.board[s - 1]) : null, label = tokens(b[1]);
  const decided = Array.from(b[2], (c) => c === "1");
  const marks = {given: givenMask(b[2]), changed: pred.map((t, i) => prev !== null && prev[i] !== t),
    wrong: pred.map((t, i) => decided[i] && t !== label[i]), conflict: st.conflict_cells ? cellMask(st.conflict_cells[s], pred.length) : null};
  const board = drawBoard(D.traces.task, st.board[s], marks, "trace-board");
  board.dataset.step = st.step[s];
  $("trace-board-box").replaceChildren(board);
  const q = (st.q_halt[s] === null ? "" : ` · q_halt ${fmt(st.q_halt[s])}`) +
    (st.conflict_cells ? ` · ${st.conflict_cells[s].length} cells break a rule` : "");
  $("step-label").textContent = `step ${st.step[s]} of ${st.step[n - 1]} (segment ${st.segment[s]}, H cycle ` +
    `${st.cycle[s]}) · ${D.traces.error_name} ${st.error[s]} · exact ${fmt(st.exact[s])}${q} · res_H ${fmt(st.res_H[s])}`;
  $("trace-chart-box").replaceChildren(chart(p, s));
}
// Two small panels: the residual res_H (log scale) per step, the halting Q (logit) at segment ends.
function chart(p, s) {
  const st = p.steps, n = st.step.length, W = 320, H = 70, L = 44, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W + 10); svg.setAttribute("height", 2 * H + 40); svg.id = "trace-chart";
  const add = (tag, attrs) => { const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); svg.append(e); return e; };
  const x = (i) => L + (n > 1 ? i * (W - L) / (n - 1) : 0);
  const panel = (values, top, name, log) => {
    const pts = values.map((v, i) => [i, v === null ? null : (log ? Math.log10(Math.max(v, 1e-12)) : v)])
      .filter(([, v]) => v !== null && isFinite(v));
    add("text", {x: 0, y: top + 10}).textContent = name;
    if (!pts.length) return;
    const lo = Math.min(...pts.map((q) => q[1])), hi = Math.max(...pts.map((q) => q[1])), span = hi - lo || 1;
    const y = (v) => top + 14 + (H - 20) * (1 - (v - lo) / span);
    add("text", {x: 0, y: top + 24}).textContent = log ? `1e${hi.toFixed(1)}` : hi.toFixed(2);
    add("text", {x: 0, y: top + H - 4}).textContent = log ? `1e${lo.toFixed(1)}` : lo.toFixed(2);
    add("polyline", {points: pts.map(([i, v]) => `${x(i)},${y(v)}`).join(" "), fill: "none", stroke: "#1565c0"});
    for (const [i, v] of pts) add("circle", {cx: x(i), cy: y(v), r: 2.5, fill: "#1565c0"});
  };
  panel(st.res_H, 0, "residual res_H (log)", true);
  panel(st.q_halt, H + 10, "q_halt (segment ends)", false);
  const crit = p.facts.critical_step;
  if (crit > 0) {
    const i = st.segment.findIndex((g, k) => g === crit && st.segment_end[k]);
    if (i >= 0) { add("line", {x1: x(i), x2: x(i), y1: 0, y2: 2 * H + 10, stroke: "#2e7d32", "stroke-dasharray": "3,2"});
      add("text", {x: x(i) + 2, y: 2 * H + 22}).textContent = "critical"; }
  }
  add("line", {x1: x(s), x2: x(s), y1: 0, y2: 2 * H + 10, stroke: "#fb8c00", "stroke-width": 2, id: "chart-marker"});
  add("text", {x: L, y: 2 * H + 36}).textContent = `H steps 1..${st.step[n - 1]}`;
  return svg;
}
function multistability(T, p, b) {
  const box = el("div", {class: "figures", id: "multistability"});
  if (!p.multistability.length) { box.append(el("p", {class: "muted", text: "No multistability runs of this puzzle."})); return box; }
  const label = tokens(b[1]), decided = Array.from(b[2], (c) => c === "1"), names = new Map();
  const traced = p.steps ? p.steps.board[p.steps.board.length - 1] : null;
  if (traced !== null) names.set(traced, "A");
  for (const r of p.multistability) {  // the same end answer, the same letter: A is the traced run's
    if (!names.has(r.answer)) names.set(r.answer, TOK[10 + names.size].toUpperCase());
    const wrong = tokens(r.answer).map((t, i) => decided[i] && t !== label[i]);
    const conflict = r.conflict_cells ? cellMask(r.conflict_cells, wrong.length) : null;
    const fig = figure(drawBoard(T.task, r.answer, {given: givenMask(b[2]), wrong, conflict}),
      `run ${r.run}: ${r.kind} ${r.param} · end answer ${names.get(r.answer)} · ${r.convergence} · exact ${fmt(r.exact)}` +
      (r.conflict_cells ? ` · ${r.conflict_cells.length} cells break a rule` : ""));
    fig.dataset.answer = names.get(r.answer);
    box.append(fig);
  }
  box.prepend(el("p", {class: "muted", id: "multistability-answers", "data-answers": names.size,
    text: `${names.size} different end answer(s) of ` + (traced !== null ? "the traced run (A) and " : "") +
      `${p.multistability.length} perturbed start(s)`}));
  return box;
}
function initTraces() {
  if (!D.traces) { $("traces").append(el("p", {class: "muted", text: "No analysis folder was read."})); return; }
  $("trace-summary").textContent = summaryLine(D.traces.summary);
  $("trace-filter").onchange = showTraceList;
  showTraceList();
  document.addEventListener("keydown", (e) => {
    if (!current || !$("traces").classList.contains("active") || e.target.tagName === "SELECT") return;
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      e.preventDefault(); drawStep(current.step + (e.key === "ArrowRight" ? 1 : -1));
    }
  });
}

$("notes").textContent = `run ${D.run} · read: ${Object.values(D.folders).join(", ")} · embedded at most ` +
  Object.entries(D.caps).map(([k, v]) => `${k.replace("max_", "")} ${v}`).join(", ") +
  " (hrm view --max-...: each list says what it left out)";
if (D.plots_page) $("notes").append(" · ", el("a", {id: "plots-link", href: D.plots_page, text: "curves (dvc plots show)"}));
for (const s of ["datasets", "evaluation", "traces"]) $("tab-" + s).onclick = () => activate(s);
initDatasets(); initEvaluation(); initTraces();
activate(D.traces ? "traces" : D.evaluation ? "evaluation" : "datasets");
document.body.dataset.ready = "1";
</script></body></html>
"""
