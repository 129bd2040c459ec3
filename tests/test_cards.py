"""The dataset cards the shard stage writes (pipelines/datasets.py): Hub metadata through
huggingface_hub's DatasetCard/DatasetCardData, read back offline, and the root card's one
config per dataset (`load_dataset(ROOT, "hint")`), on datasets built by the real stages."""

from __future__ import annotations

import json

import pytest
import yaml

from stage_helpers import HINT, VANILLA

KINDS = {"vanilla": VANILLA, "hint": HINT}
HUB_KEYS = ("license", "task_categories", "size_categories", "tags", "source_datasets", "configs")


def _files(config):
    return sorted(config["data_files"], key=lambda f: f["split"])


def _manifest(dataset):
    return json.loads((dataset / "manifest.json").read_text())


def test_dataset_cards_round_trip_through_huggingface_hub(built):
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData, RepoCard
    from huggingface_hub.repocard import metadata_load

    root, _ = built
    for name in (VANILLA, HINT):
        path = root / "datasets" / name / "README.md"
        text = path.read_text()
        card = DatasetCard.load(path)
        assert isinstance(card.data, DatasetCardData)
        meta = card.data.to_dict()
        assert all(meta.get(key) for key in HUB_KEYS), meta
        assert meta["pretty_name"] == name
        assert meta["license"] == "other"  # the csv source: the user's terms apply
        assert meta["task_categories"] == ["token-classification"]
        assert meta["size_categories"] == ["n<1K"]
        assert {"sudoku", "reasoning", "hrm"} <= set(meta["tags"])
        assert meta["source_datasets"] == ["user-supplied-csv"]
        assert [c["config_name"] for c in meta["configs"]] == ["default"]
        assert _files(meta["configs"][0]) == [{"split": s, "path": f"{s}/*.arrow"} for s in ("test", "train")]
        manifest = _manifest(path.parent)
        assert meta["hrm_pipeline"]["params"] == manifest["params"]
        assert meta["hrm_pipeline"]["raw_source"] == manifest["source"]
        # What the card says is what huggingface_hub writes back, byte for byte; plain YAML and
        # metadata_load read the same metadata; the datasets library accepts the configs.
        assert str(card) == text and str(RepoCard(text)) == text
        again = DatasetCard(f"---\n{DatasetCardData(**meta).to_yaml()}\n---\n{card.text}")
        assert again.data.to_dict() == meta and again.text == card.text
        assert yaml.safe_load(text.split("---\n")[1]) == meta == metadata_load(path)
        assert list(MetadataConfigs.from_dataset_card_data(card.data)) == ["default"]
        # Body kept: title, counts, columns, loading.
        rows = manifest["splits"]["train"]["rows"]
        for needed in (f"# {name}", f"| train | {rows:,} |", "## Columns", "## Loading", "Params: subsample_size"):
            assert needed in card.text, needed
        assert str(root) not in text and "/tmp" not in text


def test_card_metadata_follows_the_source():
    from huggingface_hub import DatasetCard

    from pipelines.datasets import dataset_card, size_category

    splits = {"train": {"rows": 1500, "groups": 3, "rows_per_group": 500,
                        "variants": {"original": 3, "augmented": 1497, "hint": 0}}}
    params = {"seed": 0, "subsample_size": 3, "test_size": 0, "num_aug": 499, "hints": False, "shard_max_mb": 128.0}
    base = {"name": "d", "kind": "vanilla", "params": params, "splits": splits, "test_capped": False}
    hf = DatasetCard(dataset_card({**base, "source": {"source": "hf", "hf_repo": "sapientinc/sudoku-extreme",
                                                      "revision": "main", "resolved_sha": "abc123"}})).data
    assert hf.license == "other" and hf.license_name == "sudoku-extreme-terms"
    assert hf.license_link == "https://huggingface.co/datasets/sapientinc/sudoku-extreme"
    assert hf.source_datasets == ["sapientinc/sudoku-extreme@abc123"] and hf.hrm_pipeline["revision"] == "abc123"
    assert hf.size_categories == ["1K<n<10K"]
    builtin = DatasetCard(dataset_card({**base, "source": {"source": "builtin", "seed": 1}})).data
    assert builtin.license == "apache-2.0" and builtin.source_datasets == ["original"]
    assert builtin.get("license_name") is None and "revision" not in builtin.hrm_pipeline
    assert [size_category(n) for n in (0, 999, 1000, 10_000, 999_999, 1_000_000, 10**13)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "n>1T"]


def test_root_card_one_config_per_dataset(built):
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    root, _ = built
    out = root / "datasets"
    assert sorted(p.name for p in out.iterdir()) == sorted([".hrm-record.json", "README.md", "datasets.json", VANILLA, HINT])
    card = DatasetCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert all(meta.get(key) for key in HUB_KEYS), meta
    assert [c["config_name"] for c in meta["configs"]] == ["vanilla", "hint"]
    for config in meta["configs"]:
        name = KINDS[config["config_name"]]
        assert _files(config) == [{"split": s, "path": f"{name}/{s}/*.arrow"} for s in ("test", "train")]
        assert "default" not in config
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs.get_default_config_name() is None  # never the two merged
    assert meta["hrm_pipeline"]["datasets"] == json.loads((out / "datasets.json").read_text())
    assert "## Loading from the root" in card.text and str(root) not in str(card)


def test_load_dataset_from_the_root_by_config(built, tmp_path):
    from datasets import load_dataset

    root, _ = built
    out = root / "datasets"
    for kind, name in KINDS.items():
        manifest = _manifest(out / name)
        ds = load_dataset(str(out), kind, cache_dir=str(tmp_path / "hf"))
        assert sorted(ds) == ["test", "train"]
        for split in ("train", "test"):
            assert ds[split].num_rows == manifest["splits"][split]["rows"]
        assert ds["train"]["puzzle_id"][:] == list(range(manifest["splits"]["train"]["rows"]))
        variants = set(ds["train"]["variant"][:])
        assert ("hint" in variants) == (kind == "hint")
        # The dataset folder alone loads as before (its own single default config).
        alone = load_dataset(str(out / name), cache_dir=str(tmp_path / "hf"))
        assert alone["train"].to_list() == ds["train"].to_list()
        assert alone["test"].num_rows == manifest["splits"]["test"]["rows"]


def test_load_dataset_from_the_root_needs_a_config(built, tmp_path):
    from datasets import load_dataset

    root, _ = built
    with pytest.raises(ValueError, match=r"Config name is missing(.|\n)*\['vanilla', 'hint'\]"):
        load_dataset(str(root / "datasets"), cache_dir=str(tmp_path / "hf"))


def test_root_card_without_hints_has_one_config():
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    from pipelines.datasets import root_card

    manifest = {"name": "sudoku-builtin-5", "kind": "vanilla", "source": {"source": "builtin", "seed": 1},
                "params": {"seed": 0, "subsample_size": 5, "test_size": 0, "num_aug": 0, "hints": False,
                           "shard_max_mb": 128.0},
                "splits": {s: {"rows": 5, "groups": 5, "rows_per_group": 1,
                               "variants": {"original": 5, "augmented": 0, "hint": 0}} for s in ("train", "test")}}
    card = DatasetCard(root_card([manifest]))
    assert [c["config_name"] for c in card.data.configs] == ["vanilla"]
    assert MetadataConfigs.from_dataset_card_data(card.data).get_default_config_name() == "vanilla"
    assert card.data.license == "apache-2.0" and card.data.source_datasets == ["original"]
    assert "without a config name loads it" in card.text
