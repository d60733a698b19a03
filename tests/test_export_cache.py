"""Lowered programs on disk (``core._export_cache``): a new process loads them instead of
tracing, with the same results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from jaxmixed.core import _export_cache as ec
from jaxmixed.core._fit import fit_data

_FIT = """
import json, sys
import jaxmixed as jm
from jaxmixed.core import _compile
traced = []
original = _compile.CompiledFunction._export
_compile.CompiledFunction._export = lambda self, *a: traced.append(self.__name__) or original(self, *a)
m = jm.fit_reml("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))
table = m.coef_table()
print(json.dumps({"objective": m.objective.hex(), "theta": [float(t).hex() for t in m.fit_result.theta],
                  "df": [float(v).hex() for v in table["df"]], "traced": traced}))
"""


def _run(cache) -> dict:
    env = dict(os.environ, JAXMIXED_COMPILATION_CACHE=str(cache))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the suite's shared cache: this test's own instead
    env.pop("JAXMIXED_EXPORT_CACHE", None)  # off in the rest of the suite (conftest)
    out = subprocess.run([sys.executable, "-c", _FIT], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_new_process_loads_instead_of_tracing(tmp_path):
    """The second process traces nothing (the fit and Satterthwaite's program come from
    disk; jaxlib's LAPACK kernels set up for them) and gives the same bits."""
    first = _run(tmp_path)
    assert {"fit_data", "_satterthwaite_of_rows"} <= set(first["traced"])
    assert any((tmp_path / "export").glob("*.export"))
    second = _run(tmp_path)
    assert second["traced"] == []
    assert second["objective"] == first["objective"] and second["theta"] == first["theta"]
    assert second["df"] == first["df"]


def test_key_covers_what_the_program_depends_on():
    leaves = [np.zeros((3, 2)), np.zeros(3, np.float32)]
    base = ec.disk_key(fit_data, leaves, [0, 0], ("static", 1), True, None)
    assert base is not None and len(base) == 32
    assert ec.disk_key(fit_data, leaves, [0, 0], ("static", 1), True, None) == base
    assert ec.disk_key(fit_data, [np.zeros((4, 2)), leaves[1]], [0, 0], ("static", 1), True, None) != base
    assert ec.disk_key(fit_data, leaves, [0, 0], ("static", 2), True, None) != base
    assert ec.disk_key(fit_data, leaves, [0, 0], ("static", 1), False, None) != base
    assert ec.disk_key(fit_data, leaves, [0, 0], ("static", 1), True, {"opt": 0}) != base
    assert len(ec.source_fingerprint()) == 64
    # Closures and lambdas say nothing of what they captured: never exported.
    assert ec.disk_key(lambda x: x, leaves, [0, 0], (), True, None) is None

    def inner(x):
        return x

    assert ec.disk_key(inner, leaves, [0, 0], (), True, None) is None
    assert ec.disk_key(fit_data, leaves, [0, 0], (lambda: 0,), True, None) is None  # unpicklable static


def test_prune_keeps_the_most_recently_used(tmp_path):
    now = time.time()
    for k in range(6):
        path = tmp_path / f"p{k}.export"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (now - 100 + k, now - 100 + k))  # p0 the oldest
    (tmp_path / "other.txt").write_bytes(b"y" * 5000)  # not a program: left alone
    ec.prune(tmp_path, max_bytes=2500)
    assert sorted(p.name for p in tmp_path.glob("*.export")) == ["p4.export", "p5.export"]
    assert (tmp_path / "other.txt").exists()


def test_export_keeps_the_output_structure():
    """The exported program's outputs come back as the function's pytree."""
    from jaxmixed.core._compile import CompiledFunction

    program = CompiledFunction(ec.__dict__["prune"])  # any module-level function has a name
    assert ec._exportable(program.fun) == "jaxmixed.core._export_cache.prune"
    assert jax.tree.structure({"a": 0, "b": (0, 0)}) == jax.tree.structure({"a": 1, "b": (2, 3)})


def test_the_switch_turns_exports_off(monkeypatch, tmp_path):
    from jaxmixed.core import _compile

    monkeypatch.setattr(_compile._SETTINGS, "cache_dir", str(tmp_path))
    monkeypatch.setenv("JAXMIXED_EXPORT_CACHE", "1")
    assert _compile.export_directory() == tmp_path / "export"
    monkeypatch.setenv("JAXMIXED_EXPORT_CACHE", "0")
    assert _compile.export_directory() is None
