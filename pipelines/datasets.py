"""A built dataset as the commands after the shard stage find it, and its card.

``resolve_dataset`` turns ``--dataset`` (a dataset folder, or the shard stage's output root
with its ``datasets.json``; layout in hrm/manifest.py) into a dataset folder, for
train, evaluate, analyze and ``hrm validate``. ``dataset_card`` is the README.md the shard
stage writes beside each manifest, which ``hrm publish`` extends; ``root_card`` the README.md
of the shard stage's output root (one ``datasets`` config per dataset). Both carry the Hub
metadata (``huggingface_hub.DatasetCardData``: license, task and size categories, tags,
source datasets, lineage, configs); huggingface_hub is imported only to write a card. Kept apart from the
dataset stages' helpers (pipelines/dataset_io.py) so that the stages reading a dataset do
not depend on the code that builds one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from hrm.manifest import DATASETS_INDEX, MANIFEST, datasets_index_problems
from hrm.tasks import Task, manifest_task
from pipelines.io import StageError

if TYPE_CHECKING:
    from huggingface_hub import DatasetCardData


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
    names = read_datasets_index(path)
    name = names.get(variant)
    if not name:
        hint = " (the hint dataset is built only with data.hints: true)" if variant == "hint" else ""
        raise StageError(f"{index}: no {variant!r} dataset listed{hint}; found {names}")
    return path / name


def read_datasets_index(root: Path) -> dict[str, str | None]:
    """``ROOT/datasets.json``, checked against its schema (hrm.manifest.datasets_index_problems:
    names are strings of dataset folders inside ``root``); a StageError naming the file and key."""
    index = root / DATASETS_INDEX
    try:
        names = json.loads(index.read_text())
    except (OSError, ValueError) as e:
        raise StageError(f"{index}: cannot read ({e})") from None
    problems = datasets_index_problems(names, root)
    if problems:
        raise StageError("\n".join(f"{index}: {p}" for p in problems)
                         + "\n(not the datasets.json `hrm shard` writes; rebuild it with `hrm shard`)")
    return names


# --------------------------------------------------------------------------- cards
#
# The cards' YAML metadata is built as huggingface_hub's DatasetCardData and written through
# DatasetCard (so it is what the Hub and ``datasets`` parse back), never by hand. Their words and
# keys are part of every built dataset's bytes (DVC hashes, registry versions): changing them
# makes new datasets. Nothing in a card depends on time or on paths of the machine.

# The Hub's task category. A dataset row maps 81 input tokens to 81 label tokens, one label per
# position (HRM's loss is a per-cell cross-entropy, not autoregressive decoding): the Hub's
# "token-classification" ("assign a label to each token of a sequence") is that task exactly.
# The generation tasks do not fit a fixed-length, position-aligned output.
TASK_CATEGORIES = ["token-classification"]
# After the task's own tag (Task.words["card"]["tag"]).
TAGS = ["reasoning", "hrm", "hierarchical-reasoning-model", "hrm-pipeline"]

# The Hub's size buckets (total rows over all splits).
_SIZE_BUCKETS = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                 (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                 (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]


def type_name(type_: pa.DataType) -> str:
    """``int32``, ``string``, ``bool``, or ``uint8[81]`` for a fixed-size list (the card's notation)."""
    if pa.types.is_fixed_size_list(type_):
        return f"{type_.value_type}[{type_.list_size}]"
    return str(type_)


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket of a row count."""
    return next((label for limit, label in _SIZE_BUCKETS if rows < limit), "n>1T")


def _revision(source: dict) -> str | None:
    return source.get("resolved_sha") or source.get("revision")


def license_of(source: dict, task: Task) -> tuple[str, str]:
    """(YAML license id, the card's license paragraph) for the raw source: the builtin generator's
    puzzles are ours (the project's Apache-2.0, pyproject.toml), the Hub's are under their dataset's
    terms ("other", with ``license_name``/``license_link``: :func:`license_links`), a CSV's are unknown."""
    kind = source.get("source")
    words = task.words["card"]
    noun = words["examples"]
    if kind in words.get("sources", {}):  # a source the task reads itself (Task.read_source)
        own = words["sources"][kind]
        return own["license"], own["license_text"]
    if kind == "hf":
        repo = source.get("hf_repo") or task.hf_repo
        rev = _revision(source)
        return "other", (
            f"The {noun} (questions, answers, ratings) are those of the Hugging Face dataset "
            f"[`{repo}`](https://huggingface.co/datasets/{repo}) at revision `{rev}` {words['hf']}; they are "
            f"redistributed here, subsampled and "
            f"transformed, under that dataset's terms: read its card before reuse, and credit it. The "
            f"transforms and the code that made them (`hrm-pipeline`) are Apache-2.0.")
    if kind == "builtin":
        return "apache-2.0", (
            f"Every {noun[:-1]} was generated by `hrm-pipeline`'s built-in, seeded generator (`{words['generator']}`): "
            f"no third-party {noun} are included. The data, like the code, is released under Apache-2.0. "
            f"{words['builtin']}")
    return "other", (
        f"The {noun} come from a user-supplied CSV file; its license and terms apply to this derived data. "
        "Publish with `--license` set to the right identifier.")


def license_links(source: dict, license_id: str, task: Task) -> dict:
    """``license_name`` and ``license_link`` (the Hub's keys for ``license: other``) where they are known."""
    if license_id != "other" or source.get("source") != "hf":
        return {}
    repo = source.get("hf_repo") or task.hf_repo
    return {"license_name": task.words["card"]["license_name"], "license_link": f"https://huggingface.co/datasets/{repo}"}


def source_datasets(source: dict, task: Task) -> list[str]:
    """The Hub's ``source_datasets``: the Hub dataset at its pinned revision (``REPO@SHA``), "original"
    for the builtin generator's own puzzles, "user-supplied-csv" for a CSV."""
    kind = source.get("source")
    if kind in task.words["card"].get("sources", {}):
        return list(task.words["card"]["sources"][kind]["source_datasets"])
    if kind == "hf":
        repo, rev = source.get("hf_repo") or task.hf_repo, _revision(source)
        return [f"{repo}@{rev}" if rev else repo]
    if kind == "builtin":
        return ["original"]
    return ["user-supplied-csv" if kind == "csv" else str(kind or "unknown")]


def card_data(manifests: list[dict], pretty_name: str, configs: list[dict]) -> DatasetCardData:
    """The Hub metadata of a card for ``manifests`` (of one raw source), with these ``configs``."""
    from huggingface_hub import DatasetCardData

    source = manifests[0]["source"]
    task = manifest_task(manifests[0])
    license_id, _ = license_of(source, task)
    rows = sum(info["rows"] for m in manifests for info in m["splits"].values())
    return DatasetCardData(
        pretty_name=pretty_name,
        license=license_id,
        **license_links(source, license_id, task),
        task_categories=list(TASK_CATEGORIES),
        size_categories=[size_category(rows)],
        tags=[task.words["card"]["tag"], *TAGS],
        source_datasets=source_datasets(source, task),
        configs=configs,
        # Lineage, machine-readable: the params and the raw source (and its revision); manifest.json
        # has every stage's record and the files' sha256.
        hrm_pipeline={"params": manifests[0]["params"], "raw_source": source,
                      **({"revision": _revision(source)} if _revision(source) else {}),
                      "datasets": {m["kind"]: m["name"] for m in manifests}},
    )


_KEY_ORDER = ["pretty_name", "license", "license_name", "license_link", "task_categories", "size_categories", "tags",
              "source_datasets", "configs", "hrm_pipeline"]


def render_card(data: DatasetCardData, body: str) -> str:
    """The card's text: ``data`` as YAML front matter (DatasetCard's serialization), then ``body``."""
    from huggingface_hub import DatasetCard

    return str(DatasetCard(f"---\n{data.to_yaml(original_order=_KEY_ORDER)}\n---\n{body}"))


def _data_files(manifest: dict, prefix: str = "") -> list[dict]:
    return [{"split": split, "path": f"{prefix}{split}/*.arrow"} for split in manifest["splits"]]


def dataset_card(manifest: dict) -> str:
    """The dataset card (README.md, Hub metadata with the ``configs`` that ``datasets`` reads) of a manifest."""
    name = manifest["name"]
    params = manifest["params"]
    source = manifest["source"]
    task = manifest_task(manifest)
    words, seq_len = task.words["card"], task.seq_len
    data = card_data([manifest], name, [{"config_name": "default", "data_files": _data_files(manifest)}])
    lines = ["", f"# {name}", ""]
    kind = ("with hints: after every train example an easier copy of it (extra givens copied from the answer)"
            if manifest["kind"] == "hint" else "without hints")
    revision = source.get("resolved_sha") or source.get("revision")
    origin = f"raw source `{source.get('source')}`" + (f" ({source.get('hf_repo')} at {revision})" if revision else "")
    lines += [
        f"{words['title']} for the Hierarchical Reasoning Model, {kind}. Built by the "
        f"`hrm-pipeline` stages subsample -> augment -> hints -> shard from {origin}.",
        "",
        "| split | rows | groups | rows per group | original | augmented | hint |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split, info in manifest["splits"].items():
        v = info["variants"]
        lines.append(f"| {split} | {info['rows']:,} | {info['groups']:,} | {info['rows_per_group'] or 'varies'} | "
                     f"{v['original']:,} | {v['augmented']:,} | {v['hint']:,} |")
    lines += [
        "",
        f"Params: subsample_size {params['subsample_size']}, num_aug {params['num_aug']}, "
        f"hints {str(params['hints']).lower()}, test_size {params['test_size']}, seed {params['seed']}.",
    ]
    if params.get("hints"):
        coupled = params.get("vanilla_draw", "coupled") == "coupled"
        lines.append("The vanilla dataset is the hint dataset minus its hint rows (same puzzles and symmetries)."
                     if coupled else "The vanilla dataset's train split is its own draw of puzzles and symmetries, "
                     "independent of the hint dataset's (the fork's two builds); the test split is shared.")
    if manifest.get("test_capped"):
        lines.append("The test split is a capped uniform sample (`test_size`), a deviation from the paper, "
                     "which evaluates on the whole test split.")
    # The card's words are part of every built dataset's bytes (DVC hashes, registry versions):
    # rewording it makes new datasets.
    lines += [
        "",
        words.get("epoch", "An epoch (reference-semantics section 4) visits the groups in a fresh random order and "
                  "draws one example per group. Groups are contiguous and every shard holds whole groups; "
                  "`manifest.json` lists each shard's row and group ranges, so a loader can read only the rows it "
                  "uses."),
        "",
        "## Columns",
        "",
        "| column | type | meaning |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{c}` | {type_name(t)} | {d} |" for c, t, d in task.column_specs]
    lines += [
        "",
        words["lineage"],
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        "ds = load_dataset(\"path/to/this/folder\")   # or streaming=True",
        "rows = ds[\"train\"].with_format(\"arrow\")[:768]",
        f"inputs = rows[\"inputs\"].combine_chunks().flatten().to_numpy().reshape(-1, {seq_len})   # uint8 [768, {seq_len}]",
        "```",
        "",
        "(`with_format(\"numpy\")` widens integers to int64; the stored tokens are uint8.)",
        "",
    ]
    return render_card(data, "\n".join(lines))


def root_card(manifests: list[dict]) -> str:
    """The card (README.md) of the shard stage's output root: one config per dataset, named by its
    kind ("vanilla", "hint"), its data files inside the dataset's folder. No default config:
    ``datasets.load_dataset(ROOT)`` without a config name raises the library's own "Config name is
    missing" error rather than merging the datasets; with hints disabled the one config "vanilla" is
    what ``datasets`` picks (a single config is its default)."""
    configs = [{"config_name": m["kind"], "data_files": _data_files(m, f"{m['name']}/")} for m in manifests]
    names = " and ".join(f"`{m['name']}`" for m in manifests)
    data = card_data(manifests, manifests[0]["name"] + (" (vanilla and hint)" if len(manifests) > 1 else ""),
                     configs)
    lines = [
        "",
        f"# {manifests[0]['name']}",
        "",
        f"The datasets of one `hrm-pipeline` build ({names}), side by side; each folder is a dataset of "
        f"its own (its card, `manifest.json` and shards). `datasets.json` maps the kinds to the folders.",
        "",
        "| config | folder | split | rows | groups |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for m in manifests:
        for split, info in m["splits"].items():
            lines.append(f"| {m['kind']} | `{m['name']}` | {split} | {info['rows']:,} | {info['groups']:,} |")
    first = manifests[0]["kind"]
    lines += [
        "",
        "## Loading from the root",
        "",
        "Each dataset is a config of this folder, named by its kind; there is no default config, so the "
        "datasets are never merged:",
        "",
        "```python",
        "from datasets import load_dataset",
        *[f"{m['kind']} = load_dataset(\"path/to/this/folder\", \"{m['kind']}\")   # {m['name']}" for m in manifests],
        "```",
        "",
    ]
    if len(manifests) > 1:
        lines.append(
            "`load_dataset(\"path/to/this/folder\")` without a config name raises `ValueError: Config name is "
            "missing. Please pick one among the available configs: [...]` (the `datasets` library's own error); "
            f"pass one, e.g. `load_dataset(\"path/to/this/folder\", \"{first}\")`, or load a dataset's folder "
            "directly (`load_dataset(\"path/to/this/folder/NAME\")`).")
    else:
        lines.append(
            f"This build has one dataset, so `load_dataset(\"path/to/this/folder\")` without a config name loads "
            f"it (`datasets` takes a single config as the default); its folder loads alone too "
            f"(`load_dataset(\"path/to/this/folder/{manifests[0]['name']}\")`).")
    lines.append("")
    return render_card(data, "\n".join(lines))
