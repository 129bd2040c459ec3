"""A one-page Markdown report of an analysis run: the numbers and the figures."""

from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["render_report"]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return out


def render_report(metrics: dict[str, Any], figures: Sequence[tuple[str, str]], *, easy_rows: Sequence[dict] = (),
                  critical_rows: Sequence[dict] = (), title: str = "HRM mechanistic analysis") -> str:
    """Markdown text. ``figures``: (caption, path relative to the report)."""
    run = metrics.get("run", {})
    fp = metrics.get("fixed_point", {})
    cr = metrics.get("critical", {})
    ms = metrics.get("multistability", {})
    lines = [f"# {title}", ""]
    lines += [
        f"Checkpoint `{run.get('checkpoint', '?')}`, dataset `{run.get('dataset', '?')}` "
        f"(split {run.get('split', '?')}), {run.get('puzzles', '?')} puzzles sampled with seed {run.get('seed', '?')}, "
        f"{run.get('segments', '?')} segments x {run.get('h_cycles', '?')} H updates, "
        f"hidden size {run.get('hidden_size', '?')}, device {run.get('device', '?')} ({run.get('forward_dtype', '?')}).",
        "",
        "## Summary",
        "",
    ]
    lines += _table(["quantity", "value"], [
        ["exact accuracy (last segment)", _pct(metrics.get("exact_accuracy"))],
        ["blank-cell accuracy (last segment)", _pct(metrics.get("blank_accuracy"))],
        ["converged / oscillating / drifting",
         f"{_pct(fp.get('converged'))} / {_pct(fp.get('oscillating'))} / {_pct(fp.get('drifting'))}"],
        ["fixed-point violations", _pct(fp.get("violation_rate"))],
        ["accuracy with / without violation",
         f"{_pct(fp.get('accuracy_if_violation'))} / {_pct(fp.get('accuracy_if_no_violation'))}"],
        ["violations among wrong / correct answers",
         f"{_pct(fp.get('violation_rate_if_wrong'))} / {_pct(fp.get('violation_rate_if_correct'))}"],
        ["median last-segment residual z_H / z_L",
         f"{_fmt(fp.get('final_res_H_median'))} / {_fmt(fp.get('final_res_L_median'))}"],
        ["solved (critical step exists)", _pct(cr.get("solved"))],
        ["critical step: mean / median", f"{_fmt(cr.get('critical_mean'))} / {_fmt(cr.get('critical_median'))}"],
        ["blank accuracy just before the critical step (mean / median)",
         f"{_pct(cr.get('blank_acc_before_mean'))} / {_pct(cr.get('blank_acc_before_median'))}"],
        ["blank cells fixed at the critical step (median)", _fmt(cr.get("cells_fixed_at_critical_median"))],
        ["correct once, wrong at the end", _pct(cr.get("lost"))],
        ["perturbed runs per puzzle", _fmt(ms.get("runs_per_puzzle"))],
        ["distinct end answers per puzzle (mean)", _fmt(ms.get("mean_distinct_answers"))],
        ["puzzles with several stable answers", _pct(ms.get("puzzles_with_several_stable_answers"))],
        *[[f"... with the plain run and the {name.replace('noise_', 'noise (') + (')' if name.startswith('noise_') else '')} runs only",
           _pct(rates.get("puzzles_with_several_stable_answers"))] for name, rates in (ms.get("by_perturbation") or {}).items()],
        ["runs trapped in a stable wrong answer", _pct(ms.get("trapped_runs"))],
        ["puzzles with a trapped run", _pct(ms.get("puzzles_with_trapped_run"))],
        ["puzzles with both a stable right and a stable wrong end", _pct(ms.get("puzzles_stable_right_and_wrong"))],
        ["any run correct (oracle over perturbations)", _pct(ms.get("any_run_correct"))],
    ])
    skipped = metrics.get("skipped") or {}
    if skipped:
        lines += ["", "## Skipped", "", "Switched off by the settings; their tables are written with zero rows.", ""]
        lines += [f"- {name}: {why}" for name, why in skipped.items()]
    if easy_rows:
        lines += ["", "## Easy-puzzle probe (all but k blank cells revealed)", ""]
        lines += _table(["k", "n", "exact", "blank acc", "violations", "exact if originally solved"],
                        [[r["k"], r["n"], _pct(r["exact"]), _pct(r["blank_acc"]), _pct(r["violation_rate"]),
                          _pct(r.get("exact_if_solved"))] for r in easy_rows])
    if critical_rows:
        lines += ["", "## Critical step distribution", ""]
        lines += _table(["critical segment", "puzzles", "fraction"],
                        [[r["label"], r["count"], _pct(r["fraction"])] for r in critical_rows if r["count"]])
    if figures:
        lines += ["", "## Figures", ""]
        for caption, rel in figures:
            lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    lines += ["", "Definitions: docs/analyze.md. Every number above is in summary.json (the headline ones also in metrics.json); per-step traces are in "
              "traces.parquet.", ""]
    return "\n".join(lines)
