"""Side by side: one table and one figure of several runs (an HRM and a TRM, or any two experiments) that
evaluated and analysed the same puzzles.

Pure: the runs come in as the dicts and plot-table rows their stages wrote (``hrm evaluate``'s metrics.json,
summary.json and plots/*.csv, ``hrm analyze``'s the same); reading them from git and DVC is the pipeline's
(pipelines/compare_sources.py). Every value of the table is one number of one of those files, named in its
``source`` column, so a reader can check it there. matplotlib is imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

RULES = ("baseline", "paper_vote", "label_free", "first_to_halt", "verified_any")  # evaluate's headline, its order
# The results read, by their names in a run's output folder (the pipeline's data/): every source names one.
EVALUATE_METRICS = "evaluate/metrics.json"
EVALUATE_SUMMARY = "evaluate/summary.json"
ANALYSIS_METRICS = "analysis/metrics.json"
ANALYSIS_SUMMARY = "analysis/summary.json"
# (measure, dotted key under the split's summary, kind): the segments a run needs, per split (test, each tier).
SEGMENT_MEASURES = (
    ("mean critical segment of the solved puzzles", "critical_segment.mean", "number"),
    ("solved by the final segment (right from the critical segment on)", "critical_segment.solved_by_final_segment",
     "fraction"),
    ("mean segment first_to_halt answered at", "first_to_halt_detail.mean_segment", "number"),
    ("mean segments run (baseline)", "baseline.mean_steps", "number"),
)
# (measure, source file, dotted key, kind): the analysis's critical step, fixed-point classes, trapped guesses.
CRITICAL_MEASURES = (
    ("mean critical step of the solved puzzles", ANALYSIS_SUMMARY, "critical.critical_mean", "number"),
    ("solved (right from the critical step on)", ANALYSIS_SUMMARY, "critical.solved", "fraction"),
    ("lost (right at some segment, wrong at the end)", ANALYSIS_SUMMARY, "critical.lost", "fraction"),
)
FIXED_POINT_MEASURES = tuple((name, ANALYSIS_METRICS, f"fixed_point.{name}", "fraction")
                             for name in ("converged", "oscillating", "drifting", "violation_rate"))
TRAPPED_MEASURES = (
    ("runs trapped in a stable wrong answer", ANALYSIS_SUMMARY, "multistability.trapped_runs", "fraction"),
    ("converged runs that are trapped", ANALYSIS_SUMMARY, "multistability.trapped_runs_if_converged", "fraction"),
    ("puzzles with a trapped run", ANALYSIS_SUMMARY, "multistability.puzzles_with_trapped_run", "fraction"),
    ("puzzles with a stable right and a stable wrong end", ANALYSIS_SUMMARY,
     "multistability.puzzles_stable_right_and_wrong", "fraction"),
)


@dataclass(frozen=True)
class RunResults:
    """One run's results as its stages wrote them. ``tables``: the rows of the plot CSVs read here, by file
    stem (``rating``, ``blanks``, ``segments`` of evaluate; ``critical`` of the analysis), values as text."""

    label: str  # what the user named: an experiment, a branch, a commit
    revision: str  # the commit
    architecture: str  # the architecture's short name (HRM, TRM)
    files: dict[str, dict[str, Any]]  # EVALUATE_METRICS, EVALUATE_SUMMARY, ANALYSIS_METRICS, ANALYSIS_SUMMARY
    tables: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.label} ({self.architecture})"


@dataclass(frozen=True)
class Row:
    section: str
    group: str
    measure: str
    source: str  # the file and key (or column) every value comes from
    kind: str  # fraction | number | count
    values: tuple[float | None, ...]  # one per run, None where the run has no such number


def dig(data: Any, dotted: str) -> Any:
    """``data["a"]["b"]`` for ``a.b``; None where a part is missing (a rule an older run did not report)."""
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _splits(runs: Sequence[RunResults]) -> list[tuple[str, str]]:
    """(group, key): the test split and each easy tier any run evaluated (evaluate's metrics.json)."""
    tiers = dict.fromkeys(t for r in runs for t in (dig(r.files[EVALUATE_METRICS], "tiers") or {}))
    return [("test", "test")] + [(f"tier {t}", f"tiers.{t}") for t in tiers]


def _accuracy_rows(runs: Sequence[RunResults]) -> list[Row]:
    """Each rule's exact accuracy on the test split and on each easy tier (evaluate's metrics.json)."""
    return [Row("accuracy", group, rule, f"{EVALUATE_METRICS} {key}.{rule}", "fraction",
                tuple(_number(dig(r.files[EVALUATE_METRICS], f"{key}.{rule}")) for r in runs))
            for group, key in _splits(runs) for rule in RULES]


def _segment_rows(runs: Sequence[RunResults]) -> list[Row]:
    """Segments to solve on the test split and each tier (evaluate's summary.json), then the analysis's
    critical step on its own sample."""
    rows = [Row("segments to solve", group, name, f"{EVALUATE_SUMMARY} {key}.{sub}", kind,
                tuple(_number(dig(r.files[EVALUATE_SUMMARY], f"{key}.{sub}")) for r in runs))
            for group, key in _splits(runs) for name, sub, kind in SEGMENT_MEASURES]
    return rows + _measure_rows(runs, "segments to solve", CRITICAL_MEASURES, "analysis sample")


def _bucket_rows(runs: Sequence[RunResults], table: str) -> list[Row]:
    """Puzzles and each rule's accuracy per bucket of evaluate's plots/<table>.csv (its first column: the bucket)."""
    tables = [r.tables.get(table) or [] for r in runs]
    column = next((list(t[0])[0] for t in tables if t), table)
    buckets = list(dict.fromkeys(row[column] for t in tables for row in t))
    source = f"evaluate/plots/{table}.csv"
    rows = []
    for bucket in buckets:
        found = [next((row for row in t if row[column] == bucket), {}) for t in tables]
        for measure in ("puzzles", *RULES):
            rows.append(Row(f"by {table}", bucket, measure, f"{source} {measure}", "count" if measure == "puzzles"
                            else "fraction", tuple(_number(row.get(measure)) for row in found)))
    return rows


def _measure_rows(runs: Sequence[RunResults], section: str, measures, group: str = "") -> list[Row]:
    return [Row(section, group, name, f"{source} {key}", kind, tuple(_number(dig(r.files[source], key)) for r in runs))
            for name, source, key, kind in measures]


def comparison_rows(runs: Sequence[RunResults]) -> list[Row]:
    """The table: accuracy by rule (test split, tiers), by rating and by blanks; segments to solve;
    fixed-point classes; trapped guesses. One value per run in each row."""
    return [*_accuracy_rows(runs), *_bucket_rows(runs, "rating"), *_bucket_rows(runs, "blanks"),
            *_segment_rows(runs),
            *_measure_rows(runs, "fixed-point classes", FIXED_POINT_MEASURES),
            *_measure_rows(runs, "trapped guesses", TRAPPED_MEASURES)]


def format_value(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "fraction":
        return f"{100 * value:.1f}%"
    if kind == "count":
        return f"{value:.0f}"
    return f"{value:.2f}"


def csv_text(runs: Sequence[RunResults], rows: Sequence[Row]) -> str:
    """comparison.csv: section, group, measure, source, then one column per run (its title), the values as read
    (empty where a run has none)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "group", "measure", "source", *(r.title for r in runs)])
    for row in rows:
        writer.writerow([row.section, row.group, row.measure, row.source,
                         *("" if v is None else repr(v) for v in row.values)])
    return out.getvalue()


def markdown_text(runs: Sequence[RunResults], rows: Sequence[Row], notes: Sequence[str] = (),
                  figure: str | None = "comparison.png") -> str:
    """comparison.md: the runs (commit, architecture), ``notes`` (what they share), the one table, the figure."""
    lines = ["# " + " vs ".join(r.title for r in runs), "", "| run | commit | architecture |", "| --- | --- | --- |"]
    lines += [f"| {r.label} | {r.revision[:12]} | {r.architecture} |" for r in runs]
    lines += ["", *notes, ""] if notes else [""]
    lines += ["| section | group | measure | " + " | ".join(r.title for r in runs) + " |",
              "| --- | --- | --- | " + " | ".join("---:" for _ in runs) + " |"]
    for row in rows:
        cells = " | ".join(format_value(v, row.kind) for v in row.values)
        lines.append(f"| {row.section} | {row.group} | {row.measure} | {cells} |")
    lines += ["", "Each value is one number of the run's own files (comparison.csv names the file and key). Definitions: "
              "docs/evaluate.md (rules, rating and blanks, critical segment), docs/analyze.md (fixed points, trapped)."]
    if figure:
        lines += ["", f"![{' vs '.join(r.title for r in runs)}]({figure})"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- the figure

_SHORT = {"runs trapped in a stable wrong answer": "trapped runs", "converged runs that are trapped": "trapped if conv.",
          "puzzles with a trapped run": "puzzles trapped", "puzzles with a stable right and a stable wrong end":
          "right & wrong ends", "violation_rate": "violation"}


def _bars(ax, runs: Sequence[RunResults], categories: Sequence[str], values: Sequence[Sequence[float | None]],
          title: str, ylabel: str = "fraction of puzzles") -> None:
    """Grouped bars: one group per category, one bar per run (a missing value: no bar, 'n/a' under it)."""
    width = 0.8 / max(len(runs), 1)
    for j, run in enumerate(runs):
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(len(categories))]
        heights = [values[i][j] for i in range(len(categories))]
        bars = ax.bar([x for x, h in zip(xs, heights) if h is not None], [h for h in heights if h is not None], width,
                      label=run.title, color=f"C{j}")
        ax.bar_label(bars, fmt="{:.0%}" if ylabel.startswith("fraction") else "{:.2f}", fontsize=6,  # 0% is seen
                     rotation=90 if len(categories) > 8 else 0, padding=2)
        for x, h in zip(xs, heights):
            if h is None:
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(range(len(categories)), categories, rotation=45 if len(categories) > 5 else 0, ha="right"
                  if len(categories) > 5 else "center", fontsize=7)
    ax.set(title=title, ylabel=ylabel)
    ax.set_ylim(0, max([1.0] + [v for vs in values for v in vs if v is not None]) * 1.15)  # room for the labels
    ax.grid(True, axis="y", alpha=0.2)


def _panel_rows(rows: Sequence[Row], section: str, measure: str | None = None, group_prefix: str = "") -> list[Row]:
    return [r for r in rows if r.section == section and (measure is None or r.measure == measure)
            and r.group.startswith(group_prefix)]


def _segment_curves(ax, runs: Sequence[RunResults]) -> None:
    """Exact accuracy after each segment (evaluate's plots/segments.csv): the test split solid, each easy tier
    dashed or dotted (a quick model solves only easy puzzles)."""
    styles = ("--", ":", "-.")
    for j, run in enumerate(runs):
        table = run.tables.get("segments") or []
        segments = [int(r["segment"]) for r in table]
        columns = ["baseline"] + [c for c in (table[0] if table else {}) if c.startswith("tier_")]
        for k, column in enumerate(columns):
            ys = [_number(r.get(column)) for r in table]
            if segments and None not in ys:
                ax.plot(segments, ys, "-" if k == 0 else styles[(k - 1) % len(styles)], color=f"C{j}", marker="o",
                        markersize=3, label=f"{run.title}: {'test' if k == 0 else 'tier ' + column[5:]}")
    ax.set(title="Exact accuracy after each segment (baseline)", xlabel="ACT segment", ylabel="fraction of puzzles")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, 1.35)  # the legend above the curves
    ax.grid(True, alpha=0.2)
    ax.legend(fontsize=6, ncol=2, loc="upper center")


def comparison_figure(runs: Sequence[RunResults], rows: Sequence[Row]):
    """The figure (a matplotlib Figure, not saved): accuracy by rule (test split; easy tiers), baseline accuracy
    by rating and by blanks, accuracy per segment, fixed-point classes and trapped guesses; one colour per run."""
    from hrm.analysis.plots import pyplot  # the analysis figures' matplotlib (imported here: hrm.analysis loads torch)

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), layout="constrained")
    test = _panel_rows(rows, "accuracy", group_prefix="test")
    _bars(axes[0, 0], runs, [r.measure for r in test], [r.values for r in test], "Exact accuracy by rule, test split")
    tiers = _panel_rows(rows, "accuracy", group_prefix="tier ")
    _bars(axes[0, 1], runs, [f"{r.group[5:]} {r.measure}" for r in tiers], [r.values for r in tiers],
          "Exact accuracy by rule, easy tiers (blanks left)")
    for ax, table in ((axes[0, 2], "rating"), (axes[1, 0], "blanks")):
        picked = _panel_rows(rows, f"by {table}", "baseline")
        _bars(ax, runs, [r.group for r in picked], [r.values for r in picked], f"Baseline exact accuracy by {table}")
    _segment_curves(axes[1, 1], runs)
    classes = [r for r in rows if r.section in ("fixed-point classes", "trapped guesses")]
    _bars(axes[1, 2], runs, [_SHORT.get(r.measure, r.measure) for r in classes], [r.values for r in classes],
          "Fixed-point classes and trapped guesses (analysis)", ylabel="fraction")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(" vs ".join(r.title for r in runs) + ": the same puzzles")
    return fig


