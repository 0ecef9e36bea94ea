"""The documentation: a README a newcomer reads in minutes, and a site that builds with warnings as errors.

The site (mkdocs.yml, docs/) holds a CLI reference generated from the Typer app at build time
(scripts/docs_cli.py) and an API reference generated from docstrings (mkdocstrings); `make docs` builds it with
``mkdocs build --strict``, as ``test_site_builds_strict_with_every_command_and_the_api`` does.
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import featx
from featx.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def relative_links(text: str) -> list[str]:
    """The targets of Markdown links and images that point into the repository (no scheme, no bare anchor)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_short_and_every_relative_link_points_to_a_file():
    text = README.read_text()
    assert len(text.splitlines()) < 150, f"README.md has {len(text.splitlines())} lines: move detail to docs/"
    links = relative_links(text)
    assert len(links) >= 10, links  # the guide's pages, the references, architecture and errors
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).is_file()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    for needed in ("docs/architecture.md", "docs/errors.md", "docs/guide/flow.md", "docs/api/index.md"):
        assert needed in links, f"README.md does not link {needed}"


def test_readme_names_the_study_data_set_and_where_to_download_it():
    text = README.read_text()
    assert "doi.org/10.7937/tcia.2019.dc64i46r" in text
    assert "https://www.cancerimagingarchive.net/collection/c-nmc-2019/" in text
    assert "https://competitions.codalab.org/competitions/20395" in text
    for command in ("make demo", "make test", "make test-fast", "make docs"):
        assert command in text, command


def registered_commands() -> dict[str, list[str]]:
    """Every command of the Typer app with its option flags, read from the app itself (not from the docs hook)."""
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="featx")
    found = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        params = command.get_params(command.context_class(command, info_name=name, parent=ctx))
        found[name] = [o for p in params if p.param_type_name == "option" for o in p.opts if o != "--help"]
    return found


@pytest.mark.slow  # about 10 s: mkdocs renders every page and griffe reads the package
def test_site_builds_strict_with_every_command_and_the_api(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]

    cli = html.unescape((site / "reference" / "cli" / "index.html").read_text())
    commands = registered_commands()
    assert {"extract", "classify", "compare", "finetune", "hybrid", "predict"} <= set(commands)
    for name, options in commands.items():
        assert f'id="featx-{name}"' in cli, f"the CLI reference has no section for `featx {name}`"
        section = cli.split(f'id="featx-{name}"', 1)[1].split('<h2 id="featx-', 1)[0]
        missing = [o for o in options if o not in section]
        assert not missing, f"the CLI reference's `featx {name}` lacks {missing}"

    api = (site / "api" / "evaluation" / "index.html").read_text()
    for name in ("featx.evaluation.evaluate", "featx.evaluation.compare", "featx.evaluation.make_splits"):
        assert f'id="{name}"' in api, f"the API page of featx.evaluation does not document {name}"
    top = (site / "api" / "index.html").read_text()  # every curated name, under its own heading
    for name in (n for n in featx.__all__ if n != "__version__"):
        assert f'id="featx{name.lower()}"' in top, f"the API page of the top level does not document featx.{name}"
    for page in ("index.html", "guide/flow/index.html", "guide/intervals/index.html", "architecture/index.html",
                 "errors/index.html"):
        assert (site / page).is_file(), page
