"""The README and docs/ stay true to the repository: every relative link (and its #anchor) resolves, every
`-S key=value` they show is a key of params.yaml, every profile they name is a file of profiles/, the README
stays a short way in, and its test command is what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def prose(path: Path) -> str:
    """The page without its fenced code blocks (a `# comment` there is no heading, a `[x](y)` no link)."""
    return FENCE.sub("", path.read_text())


def fenced(path: Path) -> str:
    return "\n".join(m.group(0) for m in FENCE.finditer(path.read_text()))


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces to '-',
    a repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    for line in prose(path).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            if seen[slug]:
                seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    broken = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, broken


def test_the_pages_link_each_other():
    """The README links every page of docs/, and each new page is linked from the README."""
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(REPO / "README.md") if t.partition("#")[0]}
    assert set(PAGES[1:]) <= linked, sorted(p.name for p in set(PAGES[1:]) - linked)


def test_every_param_the_commands_set_is_a_key_of_params_yaml():
    """... or of papers/params.yaml, whose keys `hrm paper run -S` sets (docs/experiments.md)."""
    files = [yaml.safe_load((REPO / name).read_text()) for name in ("params.yaml", "papers/params.yaml")]

    def has(key: str) -> bool:
        return any(has_in(params, key) for params in files)

    def has_in(params: dict, key: str) -> bool:
        node = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return not isinstance(node, dict)

    shown = {(page.name, key) for page in PAGES for key in re.findall(r"-S ([\w.]+)=", fenced(page) + prose(page))
             if key != "key"}  # `-S key=value`: how the pages spell the form
    assert len({key for _, key in shown}) >= 5
    assert not [f"{name}: {key}" for name, key in sorted(shown) if not has(key)]


def test_every_profile_the_pages_name_is_a_file():
    named = {name for page in PAGES for name in re.findall(r"hrm profile (?:run|show) ([a-z][a-z0-9-]*)", page.read_text())}
    assert {"maze-quick", "paper-sudoku", "fork-hint", "maze-paper"} <= named
    assert not [n for n in sorted(named) if not (REPO / "profiles" / f"{n}.yaml").is_file()]


def test_the_readme_is_a_short_way_in_and_its_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert not re.search(r"\b(Session \d|issue \d)", readme, re.I)  # no lab notebook
    setup = FENCE.search(readme).group(0).splitlines()
    assert setup[1].startswith("# 1.") and setup[2].endswith("pip install -c constraints.txt -e . && dvc repro")
    assert setup[3].startswith("# 2.") and "(what CI runs: .ci/run)" in setup[3]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    for in_ci, in_readme in (("pip install -q torch==2.13.0", "pip install torch==2.13.0"),
                             ("pip install -q -c constraints.txt -e '.[test]'", "pip install -c constraints.txt -e '.[test]'"),
                             ("python -m pytest -q", "python -m pytest -q")):
        assert in_ci in ci and in_readme in setup[4]
