"""Fits under ``jax.distributed`` (two processes on this machine) equal the one-process fits.

The test starts two worker processes (this file run as a script), each with two
CPU devices; they connect through ``jax.distributed.initialize`` (gloo
collectives), and each calls ``fit_reml`` and ``fit_reml_many`` with
``devices=jax.devices()``: four devices over two processes, the rows split
across both. Each worker writes its results as JSON; the test compares both
processes' results with the fits of the pytest process (one device).

The test is skipped only when ``jax.distributed`` cannot start here (the
workers' ``initialize`` fails); a wrong or missing result is a failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

N_PROCESSES = 2
LOCAL_DEVICES = 2
INIT_TIMEOUT_S = 60  # jax.distributed.initialize gives up after this
RUN_TIMEOUT_S = 400  # the whole two-process run, then the workers are killed
CANNOT_START = 3  # a worker's exit code when jax.distributed.initialize fails
SLEEP = "Reaction ~ Days + (Days | Subject)"
ROWS = 179  # not a multiple of the 4 devices: padded rows on the last one
RTOL_OBJECTIVE = 1e-10
RTOL_PARAMS = 1e-8


def _responses(df, k: int = 6) -> np.ndarray:
    """(n, k): the reaction plus noise; the last response is constant (not fitted)."""
    rng = np.random.default_rng(3)
    ys = df["Reaction"].to_numpy()[:, None] + rng.normal(scale=25.0, size=(len(df), k))
    ys[:, -1] = 300.0
    return ys


def _numbers(fit, table) -> dict:
    return {
        "objective": fit.objective,
        "beta": fit.fixed_effects.tolist(),
        "theta": fit.theta.tolist(),
        "sigma": fit.sigma,
        "converged": bool(fit.converged),
        "dtype": str(fit.fit_result.beta.dtype),
        "many_columns": [c for c in table.columns if c != "message"],
        "many_values": table.drop(columns=["message"]).to_numpy(float).tolist(),
    }


def _fits(devices) -> dict:
    import jaxmixed as jm  # noqa: PLC0415 - after jax.distributed.initialize in the workers

    df = jm.load_dataset("sleepstudy").iloc[:ROWS]
    fit = jm.fit_reml(SLEEP, df, devices=devices)
    table = jm.fit_reml_many(
        SLEEP, df, responses=_responses(df), devices=devices, batch_size=4, verbose=False
    )
    return _numbers(fit, table)


# ------------------------------------------------------------------ the worker


def _worker(process_id: int, port: int, out: Path) -> int:
    """One process: connect, fit with every process's devices, write this process's results."""
    import jax  # noqa: PLC0415 - nothing of JAX may run before initialize

    try:
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=N_PROCESSES,
            process_id=process_id,
            initialization_timeout=INIT_TIMEOUT_S,
        )
    except Exception as err:  # noqa: BLE001 - any failure to start is reported as such
        print(f"jax.distributed.initialize failed: {type(err).__name__}: {err}", file=sys.stderr)
        return CANNOT_START
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    result = _fits(jax.devices())
    result.update(
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        device_count=jax.device_count(),
        local_device_count=jax.local_device_count(),
    )
    out.write_text(json.dumps(result))
    jax.distributed.shutdown()
    return 0


# ------------------------------------------------------------------ the launcher


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp: Path) -> tuple[list[int | None], list[str]]:
    """Runs the workers; their exit codes (None: killed at the deadline) and stderr."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"])
    env["JAX_PLATFORMS"] = "cpu"
    port = _free_port()
    procs, logs = [], []
    try:
        for i in range(N_PROCESSES):
            log = open(tmp / f"worker{i}.log", "w+")  # closed below
            logs.append(log)
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                str(i),
                str(port),
                str(tmp / f"out{i}.json"),
            ]
            # stdout: gloo's "[Gloo] Rank ..." lines; stderr: tracebacks
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log))
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if all(c == 0 for c in codes) or any(c not in (0, None) for c in codes):
                break  # done, or a worker died: its peers would wait for it (up to forever)
            time.sleep(0.2)
    finally:
        for p in procs:  # stragglers: a peer died, the deadline passed, or the test was interrupted
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode if p.returncode is not None and p.returncode >= 0 else None for p in procs]
    stderr = []
    for log in logs:
        log.seek(0)
        stderr.append(log.read())
        log.close()
    return codes, stderr


@pytest.fixture(scope="module")
def distributed(tmp_path_factory) -> list[dict]:
    """Both workers' results (skips if jax.distributed cannot start here)."""
    tmp = tmp_path_factory.mktemp("distributed")
    codes, stderr = _launch(tmp)
    report = "\n".join(
        f"--- worker {i} (exit {c}):\n{e[-4000:]}" for i, (c, e) in enumerate(zip(codes, stderr, strict=True))
    )
    if CANNOT_START in codes:
        pytest.skip(f"jax.distributed cannot start on this platform:\n{report}")
    assert codes == [0] * N_PROCESSES, f"the distributed workers failed (exit codes {codes}):\n{report}"
    return [json.loads((tmp / f"out{i}.json").read_text()) for i in range(N_PROCESSES)]


@pytest.fixture(scope="module")
def one_process() -> dict:
    """The same fits in this process, on one device."""
    return _fits(None)


def test_processes_form_one_system(distributed):
    """Each worker ran as its own process of two, seeing 4 devices of which 2 its own."""
    assert [r["process_index"] for r in distributed] == list(range(N_PROCESSES))
    for r in distributed:
        assert r["process_count"] == N_PROCESSES
        assert r["device_count"] == N_PROCESSES * LOCAL_DEVICES
        assert r["local_device_count"] == LOCAL_DEVICES


def test_distributed_fit_reml_equals_one_process(distributed, one_process):
    """fit_reml with its rows over both processes' devices gives, in every process, the
    one-process fit in float64 (jaxmixed's own enable_x64 works under jax.distributed)."""
    want = one_process
    for r in distributed:
        assert r["converged"] and r["dtype"] == "float64"
        np.testing.assert_allclose(r["objective"], want["objective"], rtol=RTOL_OBJECTIVE)
        for key in ("beta", "theta", "sigma"):
            np.testing.assert_allclose(r[key], want[key], rtol=RTOL_PARAMS, atol=0, err_msg=key)


def test_distributed_fit_reml_many_equals_one_process(distributed, one_process):
    """fit_reml_many (6 responses, one constant, chunks of 4 over 4 devices in two processes)
    gives every process the one-process table."""
    want = one_process
    columns = want["many_columns"]
    ref = np.asarray(want["many_values"])
    assert np.isnan(ref[-1, columns.index("objective")]) and np.isfinite(ref[:-1]).all()
    for r in distributed:
        assert r["many_columns"] == columns
        got = np.asarray(r["many_values"])
        for j, name in enumerate(columns):
            if name in ("n_iter", "singular"):  # the constant response's are not results
                np.testing.assert_array_equal(got[:-1, j], ref[:-1, j], err_msg=name)
                continue
            rtol = RTOL_OBJECTIVE if name == "objective" else RTOL_PARAMS
            np.testing.assert_allclose(got[:, j], ref[:, j], rtol=rtol, atol=0, err_msg=name)


if __name__ == "__main__":
    sys.exit(_worker(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
