"""Compiled programs (jaxmixed.core._compile): one per structure, a bounded number kept, a quiet disk cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from jaxmixed.core import _compile

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def small_registry():
    _compile.clear_compiled_programs()
    _compile.set_max_compiled_programs(2)
    yield
    _compile.set_max_compiled_programs(32)
    _compile.clear_compiled_programs()


def _affine(x, scale, shift=1.0):
    return x * scale + shift


def test_one_program_per_structure_least_recently_used_dropped(small_registry):
    f = _compile.compiled(_affine)
    x3, x4, x5 = jnp.arange(3.0), jnp.arange(4.0), jnp.arange(5.0)
    np.testing.assert_allclose(f(x3, 2.0), [1.0, 3.0, 5.0])
    np.testing.assert_allclose(f(x3 + 1, 2.0), [3.0, 5.0, 7.0])  # same structure: no new program
    assert _compile.n_compiled_programs() == 1
    f(x4, 2.0)
    f(x3, 3.0)  # a static argument is part of the structure
    assert _compile.n_compiled_programs() == 2  # the first (x3, 2.0) was dropped
    f(x5, 2.0, shift=0.0)
    assert _compile.n_compiled_programs() == 2
    np.testing.assert_allclose(f(x3, 2.0), [1.0, 3.0, 5.0])  # compiled again after eviction
    np.testing.assert_allclose(f(np.arange(3.0), 2.0), [1.0, 3.0, 5.0])  # numpy input, same aval
    with pytest.raises(ValueError, match="at least one"):
        _compile.set_max_compiled_programs(0)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="memory maps are counted on Linux")
def test_memory_maps_stay_bounded(small_registry):
    """Every compiled program holds memory maps; the registry keeps their number flat."""
    f = _compile.compiled(lambda x: jnp.cumsum(jnp.sin(x) * 2.0))

    def maps():
        return len(Path("/proc/self/maps").read_text().splitlines())

    for n in range(3, 8):
        f(jnp.ones(n))
    settled = maps()
    for n in range(8, 40):
        f(jnp.ones(n))
    assert _compile.n_compiled_programs() == 2
    assert maps() < settled + 200  # 32 more programs kept would add thousands


def test_only_the_false_alarms_are_filtered():
    tuning = (
        "E1203 06:44:02.480629 6679 cpu_aot_loader.cc:220] Loading XLA:CPU AOT result. Target machine "
        "feature +prefer-no-gather is not  supported on the host machine. ... could lead to SIGILL.\n"
    )
    real = tuning.replace("+prefer-no-gather", "+avx512f")
    note = "W1203 pjrt_executable.cc:642] Assume version compatibility. PjRt-IFRT does not track XLA executable versions.\n"
    assert _compile._false_alarm(tuning) and _compile._false_alarm(note)
    assert not _compile._false_alarm(real)  # a missing instruction is a real danger: shown
    assert not _compile._false_alarm("an ordinary line\n")


def test_cache_directory_is_per_user_and_per_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = _compile.compilation_cache_dir()
    assert path.parent == tmp_path / "jaxmixed" / "xla"
    assert len(path.name) == 16 and path.name == _compile._fingerprint()


_SCRIPT = """
import jax, jaxmixed as jm
fit = jm.fit_reml("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))
print("objective", round(fit.objective, 6))
print("cache", jax.config.jax_compilation_cache_dir, jax.config.jax_enable_compilation_cache)
"""


def _run(env_extra: dict) -> subprocess.CompletedProcess:
    # a user's defaults: the tests' own cache directory and export switch not inherited
    env = {
        k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXMIXED_EXPORT_CACHE")
    }
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


@pytest.mark.timeout(600)
def test_disk_cache_on_by_default_quiet_and_optional(tmp_path):
    """A fresh process writes its compiled fit to the per-user directory, saying once that
    it compiles; the next one loads it without a word (no notice, no XLA false alarm on
    standard error); opting out writes nothing, and JAXMIXED_COMPILE_NOTICE=0 silences
    the notice."""
    home = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = _run(home)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(_compile.NOTICE) == 1, first.stderr
    cache = _compile.compilation_cache_dir(tmp_path / "cache")
    assert f"cache {cache} True" in first.stdout
    assert any(cache.iterdir())
    second = _run(home)
    assert second.returncode == 0, second.stderr
    assert "objective 1743.628272" in second.stdout
    assert "SIGILL" not in second.stderr and "Assume version compatibility" not in second.stderr
    assert _compile.NOTICE not in second.stderr
    off = _run(
        {
            "XDG_CACHE_HOME": str(tmp_path / "off"),
            "JAXMIXED_COMPILATION_CACHE": "0",
            "JAXMIXED_COMPILE_NOTICE": "0",
        }
    )
    assert off.returncode == 0, off.stderr
    assert "True" not in off.stdout.splitlines()[-1]
    assert not (tmp_path / "off").exists()
    assert _compile.NOTICE not in off.stderr


def test_the_compile_notice_is_said_once(monkeypatch, capsys):
    """Once a process (the first compilation), and never after set_compile_notice(False)."""
    monkeypatch.setattr(_compile._SETTINGS, "noticed", False)
    monkeypatch.setattr(_compile._SETTINGS, "notice", True)
    _compile._notice_compiling()
    _compile._notice_compiling()
    assert capsys.readouterr().err.count(_compile.NOTICE) == 1
    monkeypatch.setattr(_compile._SETTINGS, "noticed", False)
    _compile.set_compile_notice(False)
    _compile._notice_compiling()
    assert capsys.readouterr().err == ""


def test_small_models_compile_without_backend_optimisation():
    """Only small models trade a little run time for a much shorter compilation."""
    import jax

    import jaxmixed as jm
    from jaxmixed.core._fit import SMALL_MODEL_ROWS, small_model_options

    design, arrays = jm.design.build_design(
        "Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy")
    )
    with jax.enable_x64(True):
        small = jm.design.prepare(design, arrays, on_device=False)
    assert small_model_options(small) == {"xla_backend_optimization_level": 0}
    big = small.__class__(
        X=np.zeros((SMALL_MODEL_ROWS + 1, 2)),
        Z=small.Z,
        weights=small.weights,
        index=small.index,
        structures=small.structures,
    )
    assert small_model_options(big) == {}


def test_large_blocks_keep_backend_optimisation():
    """Few rows but large per-level blocks (the mixedML model: 200 clusters of 11
    correlated effects) is work per iteration that XLA's optimisation pays for."""
    import jax

    import jaxmixed as jm
    from jaxmixed.core._fit import SMALL_MODEL_BLOCK_WORK, block_work, small_model_options

    xs = " + ".join(f"x{k}" for k in range(1, 11))
    formula = f"y ~ {xs} + w1 + w2 + w3 + (1 + {xs} | cluster)"
    design, arrays = jm.design.build_design(formula, jm.mixedml_simulation())
    with jax.enable_x64(True):
        data = jm.design.prepare(design, arrays, on_device=False)
    assert data.X.shape[0] < 16_384 and block_work(data) > SMALL_MODEL_BLOCK_WORK
    assert small_model_options(data) == {}
