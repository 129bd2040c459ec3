"""``hrm plots-template``: DVC's plots page with its chart libraries inside it, so that ``dvc plots show`` and
``dvc plots diff`` draw every chart with no network (docs/view.md, "Curves offline").

DVC's own page loads vega, vega-lite and vega-embed from a CDN (dvc_render's ``VegaRenderer.SCRIPTS``): offline,
every chart is blank. This command writes an HTML template for DVC (``.dvc/config``: ``plots.html_template``)
that holds the three libraries' minified builds inline, taken from ``node_modules`` as ``npm ci`` installs them
from package.json and package-lock.json (exact versions, each tarball checked against the lock's sha512). The
template is committed, so a clone draws offline with no npm; CI rebuilds it and compares
(tests/test_plots_offline.py), so it is always the build of the locked packages.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from pipelines.atomic_replace import atomic_output
from pipelines.io import StageError, log

STAGE = "plots-template"
# Load order: vega-lite needs vega, vega-embed needs both. Each package's browser build (its "jsdelivr" file,
# the one DVC's CDN tag serves).
BUNDLES = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}
# What dvc_render replaces in a template (str.replace on the whole text): no library may hold one.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")
# The build's last line points at a source map beside it, which DevTools would fetch: not inlined.
SOURCE_MAP = re.compile(r"\n?//# sourceMappingURL=\S+\s*$")
INSTALL = "npm ci --ignore-scripts --no-audit --no-fund"


def pinned_versions(package_json: Path) -> dict[str, str]:
    """package.json's exact versions of the three libraries."""
    if not package_json.is_file():
        raise StageError(f"{package_json}: not found (the project's package.json pins the chart libraries)")
    pins = json.loads(package_json.read_text()).get("dependencies", {})
    missing = [name for name in BUNDLES if name not in pins]
    if missing:
        raise StageError(f"{package_json}: no dependency {missing[0]!r}")
    return {name: pins[name] for name in BUNDLES}


def library_bundle(node_modules: Path, name: str, version: str) -> str:
    """One library's minified build, as installed by ``npm ci``, checked to be the pinned version and to be
    safe inline (no ``</script``, no DVC placeholder)."""
    installed = node_modules / name / "package.json"
    if not installed.is_file():
        raise StageError(f"{installed}: not found; install the pinned chart libraries first: {INSTALL}")
    found = json.loads(installed.read_text()).get("version")
    if found != version:
        raise StageError(f"{installed}: version {found}, package.json pins {version}; reinstall: {INSTALL}")
    code = SOURCE_MAP.sub("", (node_modules / name / BUNDLES[name]).read_text(encoding="utf-8"))
    for text in ("</script", "<!--") + PLACEHOLDERS:
        if text.lower() in code.lower():
            raise StageError(f"{node_modules / name / BUNDLES[name]}: holds {text!r}, which cannot go inline")
    return code


def license_text(node_modules: Path, name: str) -> str:
    path = node_modules / name / "LICENSE"
    text = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    if not text or "-->" in text:
        raise StageError(f"{path}: no licence text to ship with the library")
    return text


def template_html(versions: dict[str, str], bundles: dict[str, str], licences: dict[str, str]) -> str:
    """The template: DVC's default page (dvc_render.html.PAGE_HTML) with the libraries inline instead of its
    ``{scripts}`` (the CDN tags), and their licences in a comment at the end."""
    named = ", ".join(f"{name} {versions[name]}" for name in BUNDLES)
    scripts = "\n".join(f"<script>/* {name} {versions[name]} ({BUNDLES[name]}) */\n{bundles[name]}\n</script>"
                        for name in BUNDLES)
    notices = "\n\n".join(f"{name} {versions[name]}:\n{licences[name]}" for name in BUNDLES)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<title>DVC Plot</title>\n"
        f"<!-- hrm plots-template (docs/view.md): {named} inline, so the charts draw with no network. "
        "Built from package-lock.json; do not edit. -->\n"
        f"{scripts}\n"
        "<style>\ntable { border-spacing: 15px; }\n</style>\n</head>\n<body>\n{plot_divs}\n</body>\n"
        f"<!-- Licences of the libraries above:\n\n{notices}\n-->\n</html>\n"
    )


def build_template(node_modules: Path, package_json: Path) -> str:
    versions = pinned_versions(package_json)
    bundles = {name: library_bundle(node_modules, name, version) for name, version in versions.items()}
    licences = {name: license_text(node_modules, name) for name in BUNDLES}
    return template_html(versions, bundles, licences)


@click.command("plots-template")
@click.option("--node-modules", type=click.Path(path_type=Path, file_okay=False), default="node_modules",
              help=f"Where `{INSTALL}` installed package.json's chart libraries.")
@click.option("--package-json", type=click.Path(path_type=Path, dir_okay=False), default="package.json",
              help="The package.json that pins their versions.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=".dvc/plots/offline.html",
              help="The template to write (replaced atomically); .dvc/config's plots.html_template names it.")
def plots_template(node_modules: Path, package_json: Path, output: Path) -> None:
    """DVC's plots page with vega, vega-lite and vega-embed inline: `dvc plots show` draws offline."""
    page = build_template(node_modules, package_json)
    with atomic_output(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log(STAGE, f"wrote {output} ({len(page.encode()) / 1e6:.2f} MB)")
