"""The documentation's structure: every public name documented, every page of docs/ in
the site's navigation, every example in the gallery. (The site itself is built, with
its examples run, by ``make docs``.)"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import jaxmixed as jm
import jaxmixed.core
import jaxmixed.design
import jaxmixed.sklearn

ROOT = Path(__file__).resolve().parent.parent
NAMESPACES = [jm, jaxmixed.core, jaxmixed.design, jaxmixed.sklearn]


def _undocumented(namespace) -> list[str]:
    missing = []
    for name in namespace.__all__:
        obj = getattr(namespace, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for member, value in vars(obj).items():
                public = not member.startswith("_")
                if public and (inspect.isfunction(value) or isinstance(value, property)):
                    # getdoc reads an override's docstring from the class it overrides
                    if not inspect.getdoc(getattr(obj, member)):
                        missing.append(f"{name}.{member}")
    return missing


@pytest.mark.parametrize("namespace", NAMESPACES, ids=lambda m: m.__name__)
def test_every_public_name_has_a_docstring(namespace):
    assert _undocumented(namespace) == []


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, flags=re.M))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages == listed


def test_every_example_runs_in_the_gallery_or_the_guide():
    shown = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    scripts = {p.name for p in (ROOT / "examples").glob("*.py")}
    # power_and_plots.py's figures are drawn by the inference guide's own blocks
    missing = {s for s in scripts if f"examples/{s}" not in shown} - {"power_and_plots.py"}
    assert missing == set()


def test_readme_links_point_at_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs|examples|benchmarks)/[^)#]+)", readme)
    assert links, "the README links into the documentation"
    assert [link for link in links if not (ROOT / link).exists()] == []


@pytest.mark.parametrize("namespace", [jm, jaxmixed.core, jaxmixed.sklearn], ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_api_reference(namespace):
    reference = "".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md"))
    named = set(re.findall(r"^::: [\w.]+\.(\w+)$", reference, flags=re.M)) | set(re.findall(r"`(?:jm|core)\.(\w+)`", reference))
    modules = {"core", "design", "glmm"}  # namespaces, each with its own page or section
    assert sorted(set(namespace.__all__) - named - modules) == []
