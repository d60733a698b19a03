"""The layers' import rule: core → design → user level, never back up.

``jaxmixed.core`` (the pure layer) never imports pandas or formulaic, nor any
other jaxmixed package; ``jaxmixed.design`` imports only the core. Checked two
ways: statically, on every import statement of every module of the package,
and dynamically, by importing ``jaxmixed.core`` in a fresh process without the
top-level package (which loads the user level) and listing what got loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import jaxmixed

PACKAGE = Path(jaxmixed.__file__).resolve().parent
# tqdm is allowed: the optional progress bar of long many-fit runs (imported lazily).
HOST_LIBRARIES = ("pandas", "formulaic", "sklearn", "matplotlib", "statsmodels")
# What each layer may import from jaxmixed itself (its own package always).
ALLOWED = {
    "core": {"core"},
    "design": {"core", "design"},
}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every import in ``path``, relative imports resolved to jaxmixed.* names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["jaxmixed", *path.relative_to(PACKAGE).parent.parts]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.module or "", node.lineno))
                continue
            base = package[: len(package) - node.level + 1]
            if node.module:
                out.append((".".join([*base, node.module]), node.lineno))
            else:  # from . import x: each name is a module
                out += [(".".join([*base, alias.name]), node.lineno) for alias in node.names]
    return out


def _layer_violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for module, line in _imports(path):
            top = module.split(".")[0]
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
            if top in HOST_LIBRARIES and layer == "core":
                bad.append(where)
            if top == "jaxmixed":
                sub = module.split(".")[1] if module.count(".") else ""
                if sub not in ALLOWED[layer]:
                    bad.append(where)
    return bad


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_flow_one_way(layer):
    assert _layer_violations(layer) == []


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """The static check is not vacuous: an upward import in a core module is reported."""
    fake = tmp_path / "jaxmixed"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "_bad.py").write_text("import pandas as pd\nfrom ..design import build_design\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    found = _layer_violations("core")
    assert len(found) == 2
    assert "imports pandas" in found[0] and "imports jaxmixed.design" in found[1]


def test_core_loads_without_pandas_or_formulaic():
    """A fresh process imports jaxmixed.core alone (the top-level package bypassed) and
    fits a model from arrays: no host library gets loaded."""
    code = f"""
import importlib.util, sys, types
pkg = types.ModuleType("jaxmixed")
pkg.__path__ = [{str(PACKAGE)!r}]
sys.modules["jaxmixed"] = pkg
import numpy as np, jax, jax.numpy as jnp
from jaxmixed import core
rng = np.random.default_rng(0)
codes = np.repeat(np.arange(6), 5)
y = rng.normal(size=30) + rng.normal(size=6)[codes]
with jax.enable_x64(True):
    data = core.model_data(np.ones((30, 1)), [np.ones((30, 1))], [codes], [6],
                           [core.structure_for_terms([1])])
    fit = core.fit_data(data, jnp.asarray(y))
assert np.isfinite(float(fit.objective))
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({HOST_LIBRARIES!r}))
print("LOADED", loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout, out.stdout


def test_moved_design_names_still_resolve_from_core():
    """``jaxmixed.core.build_design`` and the like moved to ``jaxmixed.design``: the old
    names keep working, with a DeprecationWarning that names the new place."""
    for name in ("build_design", "design_from_arrays", "prepare", "parse_formula", "Design", "ModelArrays"):
        with pytest.warns(DeprecationWarning, match=f"jaxmixed.design.{name}"):
            old = getattr(jaxmixed.core, name)
        assert old is getattr(jaxmixed.design, name)
    with pytest.raises(AttributeError):
        jaxmixed.core.no_such_name  # noqa: B018


def test_public_names_are_where_users_find_them():
    import jaxmixed as jm

    for name in ("fit_reml", "fit_reml_many", "fit_reml_stacked", "fit_mixed_nn", "fit_mixed_em", "FitOptions",
                 "RESULTS", "LBFGS", "OptaxSolver", "BoundaryTrials", "MixedModelResults", "core", "design"):
        assert hasattr(jm, name), name
    for name in ("fit", "fit_data", "minimize", "LBFGS", "OptaxSolver", "BoundaryTrials", "FitOptions", "RESULTS",
                 "is_converged", "model_data", "design_statistics", "objective", "solve"):
        assert hasattr(jm.core, name), name


def test_package_import_is_lazy():
    """``import jaxmixed`` loads none of JAX, pandas or formulaic; each public name
    loads its module on first use, and an unknown one is an AttributeError."""
    code = (
        "import sys, jaxmixed as jm\n"
        "heavy = [m for m in ('jax', 'pandas', 'formulaic', 'equinox') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert set(jm._LAZY) - set(jm.__all__) == {'linear', 'networks', 'sklearn'}, set(jm.__all__) ^ set(jm._LAZY)\n"
        "for name in jm.__all__:\n"
        "    assert getattr(jm, name) is not None, name\n"
        "assert 'fit_reml' in dir(jm) and jm.linear.__name__ == 'jaxmixed.linear'\n"
        "try:\n"
        "    jm.no_such_name\n"
        "except AttributeError as e:\n"
        "    assert 'no_such_name' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
