"""A built dataset as the commands after the shard stage find it, and its card.

``resolve_dataset`` turns ``--dataset`` (a dataset folder, or the shard stage's output root
with its ``datasets.json``; layout in schemas/manifest.py) into a dataset folder, for
train, evaluate, analyze and ``hrm validate``. ``dataset_card`` is the README.md the shard
stage writes beside each manifest, which ``hrm publish`` extends. Kept apart from the
dataset stages' helpers (pipelines/dataset_io.py) so that the stages reading a dataset do
not depend on the code that builds one.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.io import StageError
from schemas.columns import COLUMN_SPECS, type_name
from schemas.manifest import DATASETS_INDEX, MANIFEST


def resolve_dataset(path: Path, variant: str) -> Path:
    """A dataset directory (manifest.json) as it is, or for the shard stage's output root
    (datasets.json) its ``variant`` dataset ("vanilla" or "hint")."""
    if not path.exists():
        raise StageError(f"{path}: dataset not found (build it with `dvc repro shard` or `hrm shard`)")
    if not path.is_dir():
        raise StageError(f"{path}: not a directory; expected a dataset directory written by `hrm shard`")
    index = path / DATASETS_INDEX
    if (path / MANIFEST).is_file() or not index.is_file():
        return path
    try:
        names = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StageError(f"{index}: cannot read ({e})") from None
    name = names.get(variant) if isinstance(names, dict) else None
    if not name:
        hint = " (the hint dataset is built only with data.hints: true)" if variant == "hint" else ""
        raise StageError(f"{index}: no {variant!r} dataset listed{hint}; found {names}")
    return path / name


def dataset_card(manifest: dict) -> str:
    """The dataset card (README.md, with the YAML ``configs`` that ``datasets`` reads) of a manifest."""
    name = manifest["name"]
    params = manifest["params"]
    source = manifest["source"]
    lines = [
        "---",
        f"pretty_name: {name}",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split in manifest["splits"]:
        lines += [f"  - split: {split}", f"    path: {split}/*.arrow"]
    lines += ["---", "", f"# {name}", ""]
    kind = ("with hints: after every train example an easier copy of it (extra givens copied from the answer)"
            if manifest["kind"] == "hint" else "without hints")
    revision = source.get("resolved_sha") or source.get("revision")
    origin = f"raw source `{source.get('source')}`" + (f" ({source.get('hf_repo')} at {revision})" if revision else "")
    lines += [
        f"Sudoku-Extreme style dataset for the Hierarchical Reasoning Model, {kind}. Built by the "
        f"`hrm-pipeline` stages subsample -> augment -> hints -> shard from {origin}.",
        "",
        "| split | rows | groups | rows per group | original | augmented | hint |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split, info in manifest["splits"].items():
        v = info["variants"]
        lines.append(f"| {split} | {info['rows']:,} | {info['groups']:,} | {info['rows_per_group']} | "
                     f"{v['original']:,} | {v['augmented']:,} | {v['hint']:,} |")
    lines += [
        "",
        f"Params: subsample_size {params['subsample_size']}, num_aug {params['num_aug']}, "
        f"hints {str(params['hints']).lower()}, test_size {params['test_size']}, seed {params['seed']}.",
    ]
    if manifest.get("test_capped"):
        lines.append("The test split is a capped uniform sample (`test_size`), a deviation from the paper, "
                     "which evaluates on the whole test split.")
    # The card's words are part of every built dataset's bytes (DVC hashes, registry versions):
    # rewording it makes new datasets.
    lines += [
        "",
        "An epoch (reference-semantics section 4) visits the groups in a fresh random order and draws one "
        "example per group. Groups are contiguous and every shard holds whole groups; `manifest.json` lists "
        "each shard's row and group ranges, so a loader can read only the rows it uses.",
        "",
        "## Columns",
        "",
        "| column | type | meaning |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{c}` | {type_name(t)} | {d} |" for c, t, d in COLUMN_SPECS]
    lines += [
        "",
        "Lineage: an example equals its group's original with its transform applied (optional transpose, "
        "then rows/columns reordered, then digits relabelled); a hint also reveals some blanks of its parent "
        "from the label.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "ds = load_dataset(\"path/to/this/folder\")   # or streaming=True",
        "rows = ds[\"train\"].with_format(\"arrow\")[:768]",
        "inputs = rows[\"inputs\"].combine_chunks().flatten().to_numpy().reshape(-1, 81)   # uint8 [768, 81]",
        "```",
        "",
        "(`with_format(\"numpy\")` widens integers to int64; the stored tokens are uint8.)",
        "",
    ]
    return "\n".join(lines)
