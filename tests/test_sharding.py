"""Fits with the rows (or responses, or replicates) split over devices equal the unsharded fits.

Four CPU devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
before JAX starts, so the sharded fits run in one subprocess (this file run as
a script) shared by the tests through a module-scoped fixture; the pytest
process keeps its own devices. The subprocess writes every fit, sharded and
not, as JSON; the tests compare them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import jaxmixed as jm
from jaxmixed.core import _sharding

N_DEVICES = 4
SUBPROCESS_TIMEOUT_S = 420
SLEEP = "Reaction ~ Days + (Days | Subject)"
CROSSED = "diameter ~ 1 + (1 | plate) + (1 | sample)"

# Sharding changes only the order of the row sums (each device sums its rows,
# then the devices' sums are added), so the fits agree to rounding. Measured
# (4 devices vs 1, largest relative difference over all cases): objective
# 5e-15, β 4e-15, θ 5e-14, σ 9e-15, standard errors 6e-15, a correlation of
# fit_reml_many 2e-12; the tolerances leave room for other BLAS and machines.
RTOL_OBJECTIVE = 1e-10
RTOL_PARAMS = 1e-8


# ------------------------------------------------------------------ the subprocess


def _fit_numbers(m) -> dict:
    return {
        "objective": m.objective,
        "beta": m.fixed_effects.tolist(),
        "theta": m.theta.tolist(),
        "sigma": m.sigma,
        "converged": bool(m.converged),
    }


def _table_numbers(table) -> dict:
    numeric = table.drop(columns=["message"])
    return {
        "columns": list(numeric.columns),
        "values": numeric.to_numpy(float).tolist(),
        "message": table["message"].tolist(),
        "converged": table["converged"].tolist(),
    }


def _responses(df: pd.DataFrame, k: int) -> np.ndarray:
    """(n, k): sleepstudy's reaction plus noise; the last column is constant."""
    rng = np.random.default_rng(7)
    ys = df["Reaction"].to_numpy()[:, None] + rng.normal(scale=25.0, size=(len(df), k))
    ys[:, -1] = 250.0
    return ys


def _run_cases(out: Path) -> None:
    """Every case, unsharded (``devices=None``) and sharded; written to ``out``."""
    from jax.sharding import Mesh

    jax.config.update("jax_numpy_dtype_promotion", "strict")
    assert jax.device_count() == N_DEVICES, jax.devices()
    mesh = Mesh(np.asarray(jax.devices()).reshape(2, 2), ("a", "b"))
    sleep = jm.load_dataset("sleepstudy")
    pen = jm.load_dataset("Penicillin")
    results: dict = {"timing": {}}

    def record(name, make):
        start = time.perf_counter()
        results[name] = make()
        results["timing"][name] = time.perf_counter() - start

    for rows in (180, 179):  # 179 rows: padded to 180 when sharded
        part = sleep.iloc[:rows]
        for tag, devices in (("none", None), ("4", N_DEVICES), ("mesh", mesh)):
            record(
                f"sleep{rows}_{tag}", lambda d=devices, p=part: _fit_numbers(jm.fit_reml(SLEEP, p, devices=d))
            )
    part = pen.iloc[:143]
    for tag, devices in (("none", None), ("4", N_DEVICES)):
        record(f"crossed_{tag}", lambda d=devices: _fit_numbers(jm.fit_reml(CROSSED, part, devices=d)))

    part = sleep.iloc[:179]
    ys = _responses(part, 8)
    for tag, devices, batch in (("none", None, None), ("4", N_DEVICES, 4)):
        record(
            f"many_{tag}",
            lambda d=devices, b=batch: _table_numbers(
                jm.fit_reml_many(SLEEP, part, responses=ys, devices=d, batch_size=b, verbose=False)
            ),
        )

    fitted = jm.fit_reml(SLEEP, sleep)
    for tag, devices in (("none", None), ("4", N_DEVICES)):

        def boot(d=devices):
            b = fitted.bootstrap(8, key=11, devices=d, verbose=False)
            return {
                "columns": list(b.replicates.columns),
                "values": b.replicates.to_numpy(float).tolist(),
                "objective": b.objective.tolist(),
                "converged": b.converged.tolist(),
            }

        record(f"boot_{tag}", boot)
    out.write_text(json.dumps(results))


# ------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> dict:
    """The subprocess's fits, run once for the module."""
    out = tmp_path_factory.mktemp("sharding") / "fits.json"
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={N_DEVICES}"])
    env["JAX_PLATFORMS"] = "cpu"
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the sharded fits took over {SUBPROCESS_TIMEOUT_S} s:\n{err.stderr}")
    assert proc.returncode == 0, f"the sharded fits failed (rc {proc.returncode}):\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text())


def _assert_fits_equal(got: dict, want: dict, what: str) -> None:
    assert got["converged"] and want["converged"], what
    np.testing.assert_allclose(got["objective"], want["objective"], rtol=RTOL_OBJECTIVE, err_msg=what)
    for key in ("beta", "theta", "sigma"):
        np.testing.assert_allclose(got[key], want[key], rtol=RTOL_PARAMS, atol=0, err_msg=f"{what}: {key}")


@pytest.mark.parametrize("rows", [180, 179])
@pytest.mark.parametrize("devices", ["4", "mesh"])
def test_sharded_rows_give_the_unsharded_fit(sharded, rows, devices):
    """sleepstudy's random-slope fit with its rows over 4 devices (devices=4, and a 2×2 Mesh)
    equals the one-device fit; 179 rows are padded to 180 with rows that add nothing."""
    _assert_fits_equal(sharded[f"sleep{rows}_{devices}"], sharded[f"sleep{rows}_none"], f"{rows} rows")
    if rows == 179:  # the padded row is not counted as data: this is not the 180-row fit
        assert abs(sharded["sleep179_4"]["objective"] - sharded["sleep180_none"]["objective"]) > 1.0


def test_sharded_crossed_fit(sharded):
    """Penicillin's crossed factors (143 of 144 rows, so padded): the dense second factor's
    per-row index is split with the rows and the fit is unchanged."""
    _assert_fits_equal(sharded["crossed_4"], sharded["crossed_none"], "crossed")
    assert len(sharded["crossed_4"]["theta"]) == 2


def test_sharded_many_responses(sharded):
    """fit_reml_many over 8 responses (one constant), responses split over 4 devices in two
    chunks of 4 and rows padded, equals the unsharded table, message by message."""
    got, want = sharded["many_4"], sharded["many_none"]
    assert got["columns"] == want["columns"]
    assert got["message"] == want["message"]
    assert got["converged"] == want["converged"]
    assert got["converged"][:-1] == [True] * 7 and not got["converged"][-1]
    values, ref = np.asarray(got["values"]), np.asarray(want["values"])
    assert np.isnan(ref[-1, want["columns"].index("objective")])  # the constant response is not fitted
    for j, name in enumerate(want["columns"]):
        if name in ("n_iter", "singular"):
            # the same for every fitted response; the constant one's are the optimiser's on
            # rounding noise (n_iter 0 or 90, singular or not, by device layout), not results
            np.testing.assert_array_equal(values[:-1, j], ref[:-1, j], err_msg=name)
            continue
        rtol = RTOL_OBJECTIVE if name == "objective" else RTOL_PARAMS
        np.testing.assert_allclose(values[:, j], ref[:, j], rtol=rtol, atol=0, err_msg=name)


def test_sharded_bootstrap_same_replicates(sharded):
    """bootstrap(8, key) with the replicates split over 4 devices draws the same responses
    (replicate k uses fold_in(key, k)) and gives the same refits as on one device."""
    got, want = sharded["boot_4"], sharded["boot_none"]
    assert got["columns"] == want["columns"]
    assert got["converged"] == want["converged"]
    np.testing.assert_allclose(got["objective"], want["objective"], rtol=RTOL_OBJECTIVE)
    np.testing.assert_allclose(got["values"], want["values"], rtol=RTOL_PARAMS, atol=0)
    assert np.unique(np.asarray(want["objective"])).size == 8  # the replicates differ


def test_as_mesh_rejects_bad_devices():
    """devices=0, a negative or too large count, a repeated device, True, a string, a float, an
    empty list and a list of non-devices are refused with a ValueError/TypeError that says why."""
    available = len(jax.devices())
    for bad in (0, -1, np.int64(0), available + 1):
        with pytest.raises(ValueError, match=f"devices={int(bad)}, but {available} device"):
            _sharding.as_mesh(bad)
    with pytest.raises(ValueError, match="more than once"):
        _sharding.as_mesh([jax.devices()[0]] * 2)
    for bad in (True, "x", 2.0, [], [0, 1]):
        with pytest.raises(TypeError, match="devices must be None, a number of devices"):
            _sharding.as_mesh(bad)


def test_as_mesh_accepts_counts_lists_and_meshes():
    """None gives no mesh; a count, a list of devices and a Mesh give a mesh over those devices."""
    assert _sharding.as_mesh(None) is None
    assert _sharding.n_devices(None) == 1
    one = _sharding.as_mesh(1)
    assert list(one.devices.flat) == jax.devices()[:1]
    assert list(_sharding.as_mesh(np.int64(1)).devices.flat) == jax.devices()[:1]
    assert _sharding.as_mesh(jax.devices()).devices.size == len(jax.devices())
    assert _sharding.as_mesh(one) is one


if __name__ == "__main__":
    _run_cases(Path(sys.argv[1]))
