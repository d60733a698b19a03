#!/usr/bin/env python
"""Benchmarks of many fits: fit_reml_many, the parametric bootstrap, big rows over devices.

Four cases, each writing its own section of ``benchmarks/results/many.md``
(sections of cases not run keep their earlier text):

- ``w4``: 1,000 responses over one design (40 subjects x 8 observations),
  ``y ~ x1 + x2 + (1 | subject)``, each response with its own variance ratio
  (about 10% with no subject variance). ``fit_reml_many``: first call in a
  fresh process (compilation included) and steady calls with new responses.
  Every response is also fitted by a fresh ``lmer`` (lme4, through
  ``many_benchmark.R``) and a fresh statsmodels ``MixedLM``: the REML
  criterion of each fit is compared with jaxmixed's.
- ``genomics``: 20,000 responses x 500 samples, ``y ~ x + (1 | individual) +
  (1 | batch)`` (100 individuals x 5 samples, 10 batches crossing them): time
  and peak memory of ``fit_reml_many``; lme4 on the first 200 responses,
  extrapolated, and their objectives compared.
- ``bootstrap``: sleepstudy, ``Reaction ~ Days + (Days | Subject)``,
  ``m.bootstrap(10_000)`` first call and steady call; percentile against Wald
  interval widths; lme4's ``bootMer`` (1,000 replicates) in the same run.
- ``bigrows``: 10,000,000 rows in 100,000 groups, ``y ~ x1 + (x1 | g)``,
  ``fit_reml`` from arrays with ``devices=4`` (4 host devices, XLA_FLAGS
  ``--xla_force_host_platform_device_count=4``) and with ``devices=None``.

Each jaxmixed, statsmodels and lme4 measurement runs in its own fresh
subprocess: compilation is real and peak memory belongs to that measurement.
jaxmixed's times exclude importing the library and JAX's backend start-up
(both printed separately). Simulated data come from fixed seeds; response k of
a case depends only on (seed, k), so every tool (and --quick) sees the same
responses.

Usage (from the repository root; only on an otherwise idle machine):

    .venv/bin/python benchmarks/many_benchmark.py                  # all cases (roughly 10-20 min)
    .venv/bin/python benchmarks/many_benchmark.py --quick          # smoke run, small sizes (< 2 min)
    .venv/bin/python benchmarks/many_benchmark.py --cases w4,bootstrap
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _format import fmt_s  # benchmarks/ is the script's folder, first on sys.path
from measure import vm_hwm  # the peak resident set size, shared with the peer suite

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
R_SCRIPT = HERE / "many_benchmark.R"
OUT = HERE / "results" / "many.md"
CASES = ("w4", "genomics", "bootstrap", "bigrows")
REL_TOL = 1e-6  # an objective worse than the reference by more than this (relative) is a miss

SEED_W4 = 20250401
SEED_GENOMICS = 20250402
SEED_BIGROWS = 20250403

W4_FORMULA = "y ~ x1 + x2 + (1 | subject)"
GENOMICS_FORMULA = "y ~ x + (1 | individual) + (1 | batch)"
SLEEP_FORMULA = "Reaction ~ Days + (Days | Subject)"


def sizes(quick: bool) -> dict:
    if quick:
        return {
            "w4_k": 40,
            "w4_sm": 20,
            "w4_steady": 2,
            "gen_k": 200,
            "gen_lme4": 20,
            "boot_n": 200,
            "boot_r": 50,
            "big_n": 100_000,
            "big_groups": 1_000,
            "timeout": 5 * 60,
        }
    return {
        "w4_k": 1_000,
        "w4_sm": 1_000,
        "w4_steady": 3,
        "gen_k": 20_000,
        "gen_lme4": 200,
        "boot_n": 10_000,
        "boot_r": 1_000,
        "big_n": 10_000_000,
        "big_groups": 100_000,
        "timeout": 30 * 60,
    }


# --------------------------------------------------------------------------------------
# Data (numpy only: the orchestrator does not import JAX)
# --------------------------------------------------------------------------------------


def w4_design() -> pd.DataFrame:
    """40 subjects x 8 observations; x1 per observation, x2 per subject."""
    rng = np.random.default_rng([SEED_W4, 0])
    subject = np.repeat(np.arange(40), 8)
    x1 = rng.standard_normal(320)
    x2 = rng.standard_normal(40)[subject]
    return pd.DataFrame({"x1": x1, "x2": x2, "subject": [f"s{s:02d}" for s in subject]})


def w4_responses(design: pd.DataFrame, k: int, draw: int) -> np.ndarray:
    """(n, k) responses; response j depends only on (seed, draw, j).

    Each has its own coefficients, residual SD (0.5-2) and variance ratio
    subject/residual, log-uniform in [0.05, 5] and exactly 0 with probability 0.1.
    """
    codes = pd.factorize(design["subject"])[0]
    x = np.column_stack([np.ones(len(design)), design["x1"], design["x2"]])
    out = np.empty((len(design), k))
    for j in range(k):
        rng = np.random.default_rng([SEED_W4, 1 + draw, j])
        beta = rng.normal([10.0, 1.0, -0.5], 1.0)
        sigma = rng.uniform(0.5, 2.0)
        ratio = 0.0 if rng.random() < 0.1 else math.exp(rng.uniform(math.log(0.05), math.log(5.0)))
        b = rng.standard_normal(codes.max() + 1) * sigma * math.sqrt(ratio)
        out[:, j] = x @ beta + b[codes] + sigma * rng.standard_normal(len(design))
    return out


def genomics_design() -> pd.DataFrame:
    """100 individuals x 5 samples; sample s of individual i in batch (i + 2s) mod 10."""
    rng = np.random.default_rng([SEED_GENOMICS, 0])
    ind = np.repeat(np.arange(100), 5)
    sample = np.tile(np.arange(5), 100)
    batch = (ind + 2 * sample) % 10  # each individual in 5 different batches, 50 samples per batch
    return pd.DataFrame(
        {
            "x": rng.standard_normal(500),
            "individual": [f"i{i:03d}" for i in ind],
            "batch": [f"b{b}" for b in batch],
        }
    )


def genomics_responses(design: pd.DataFrame, k: int, draw: int, first: int = 0) -> np.ndarray:
    """(n, k) responses first..first+k-1; response j depends only on (seed, draw, j).

    Intercept ~ N(5, 2), slope ~ N(0, 0.5), residual SD 0.3-2; variance ratios
    individual/residual log-uniform in [0.02, 4] and batch/residual in
    [0.01, 1], each exactly 0 with probability 0.1.
    """
    ind = pd.factorize(design["individual"])[0]
    bat = pd.factorize(design["batch"])[0]
    x = design["x"].to_numpy()
    n = len(design)
    out = np.empty((n, k))
    for col, j in enumerate(range(first, first + k)):
        rng = np.random.default_rng([SEED_GENOMICS, 1 + draw, j])
        b0, b1 = rng.normal(5.0, 2.0), rng.normal(0.0, 0.5)
        sigma = rng.uniform(0.3, 2.0)
        r_ind = 0.0 if rng.random() < 0.1 else math.exp(rng.uniform(math.log(0.02), math.log(4.0)))
        r_bat = 0.0 if rng.random() < 0.1 else math.exp(rng.uniform(math.log(0.01), math.log(1.0)))
        u = rng.standard_normal(ind.max() + 1) * sigma * math.sqrt(r_ind)
        v = rng.standard_normal(bat.max() + 1) * sigma * math.sqrt(r_bat)
        out[:, col] = b0 + b1 * x + u[ind] + v[bat] + sigma * rng.standard_normal(n)
    return out


def bigrows_arrays(n: int, n_groups: int, draw: int = 0):
    """y (n,), X (n, 2) = [1, x1], Z = X, groups (n,): groups of n / n_groups rows.

    Random intercept SD 1 and slope SD 0.5, correlation 0.3; residual SD 1;
    fixed effects (1, 0.5). ``draw`` changes y only (same X, Z, groups).
    """
    rng = np.random.default_rng([SEED_BIGROWS, 0])
    groups = np.repeat(np.arange(n_groups, dtype=np.int64), -(-n // n_groups))[:n]
    x1 = rng.standard_normal(n)
    X = np.empty((n, 2))
    X[:, 0] = 1.0
    X[:, 1] = x1
    rng = np.random.default_rng([SEED_BIGROWS, 1 + draw])
    cov = np.array([[1.0, 0.15], [0.15, 0.25]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=n_groups)
    y = 1.0 + 0.5 * x1 + b[groups, 0] + b[groups, 1] * x1 + rng.standard_normal(n)
    return y, X, groups


# --------------------------------------------------------------------------------------
# Worker helpers (run in subprocesses)
# --------------------------------------------------------------------------------------


def memory() -> dict:
    """VmHWM and ru_maxrss of this process (bytes). ru_maxrss of a fork+exec'd child
    starts at the parent's peak; the orchestrator stays small, so both agree here."""
    return {"vmhwm": vm_hwm(), "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def start_jax() -> dict:
    """Imports jaxmixed and starts JAX's backend; returns both times."""
    t0 = time.perf_counter()
    import jax.numpy as jnp

    import jaxmixed  # noqa: F401

    t1 = time.perf_counter()
    jnp.zeros(1).block_until_ready()
    return {"import_s": t1 - t0, "backend_s": time.perf_counter() - t1}


def table_summary(tab) -> dict:
    return {
        "objective": [float(v) for v in tab["objective"]],
        "singular": [bool(v) for v in tab["singular"]],
        "converged": [bool(v) for v in tab["converged"]],
        "n_iter_median": float(np.median(tab["n_iter"])),
        "n_iter_max": int(np.max(tab["n_iter"])),
        "messages": {str(k): int(v) for k, v in tab["message"].value_counts().items()},
    }


def versions() -> dict:
    import jax

    import jaxmixed as jm

    return {
        "jax": jax.__version__,
        "jaxmixed": getattr(jm, "__version__", "?"),
        "devices": len(jax.devices()),
    }


def worker_w4_jaxmixed(spec: dict) -> dict:
    out = start_jax()
    import jaxmixed as jm

    design = w4_design()
    k = spec["k"]
    names = [f"r_{j}" for j in range(k)]

    def frame(draw: int) -> pd.DataFrame:
        ys = pd.DataFrame(w4_responses(design, k, draw), columns=names)
        return pd.concat([design, ys], axis=1)

    df = frame(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        tab = jm.fit_reml_many(W4_FORMULA, df, responses=names, verbose=False)
        out["first_s"] = time.perf_counter() - t0
        out["memory_after_first"] = memory()
        steady = []
        for draw in range(1, 1 + spec["steady"]):
            df2 = frame(draw)
            t0 = time.perf_counter()
            jm.fit_reml_many(W4_FORMULA, df2, responses=names, verbose=False)
            steady.append(time.perf_counter() - t0)
    out["steady_times"] = steady
    out["steady_s"] = statistics.median(steady)
    out["warnings"] = sorted({f"{w.category.__name__}: {w.message}"[:200] for w in caught})
    out.update(table_summary(tab))
    out["versions"] = versions()
    return out


def worker_w4_statsmodels(spec: dict) -> dict:
    import statsmodels
    import statsmodels.formula.api as smf

    design = w4_design()
    ys = w4_responses(design, spec["k"], 0)
    objective, converged, methods, times, errors = [], [], [], [], 0
    n_warned = 0
    for j in range(spec["k"]):
        d = design.assign(y=ys[:, j])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            try:
                model = smf.mixedlm("y ~ x1 + x2", d, groups="subject")
                res = model.fit(reml=True)  # default method list: bfgs, then lbfgs, then cg
                ok = True
                retries = sum("Retrying MixedLM optimization" in str(w.message) for w in caught)
            except Exception:  # noqa: BLE001 - a failed fit counts as one
                ok = False
            times.append(time.perf_counter() - t0)
        n_warned += bool(caught)
        if ok:
            objective.append(-2.0 * float(res.llf))
            converged.append(bool(getattr(res, "converged", True)))
            methods.append(("bfgs", "lbfgs", "cg")[min(retries, 2)])  # the last one tried
        else:
            errors += 1
            objective.append(float("nan"))
            converged.append(False)
            methods.append("error")
    return {
        "total_s": float(sum(times)),
        "times": times,
        "objective": objective,
        "converged": converged,
        "methods": {m: methods.count(m) for m in sorted(set(methods))},
        "errors": errors,
        "n_warned": n_warned,
        "memory": memory(),
        "versions": {"statsmodels": statsmodels.__version__},
    }


def worker_genomics_jaxmixed(spec: dict) -> dict:
    out = start_jax()
    import jaxmixed as jm

    design = genomics_design()
    k = spec["k"]
    t0 = time.perf_counter()
    ys = genomics_responses(design, k, 0)
    out["simulate_s"] = time.perf_counter() - t0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        tab = jm.fit_reml_many(GENOMICS_FORMULA, design, responses=ys, verbose=False)
        out["first_s"] = time.perf_counter() - t0
        out["memory_after_first"] = memory()
        if spec.get("steady", True):
            ys = genomics_responses(design, k, 1)
            t0 = time.perf_counter()
            jm.fit_reml_many(GENOMICS_FORMULA, design, responses=ys, verbose=False)
            out["steady_s"] = time.perf_counter() - t0
    out["warnings"] = sorted({f"{w.category.__name__}: {w.message}"[:200] for w in caught})
    summary = table_summary(tab)
    out["objective_head"] = summary.pop("objective")[: spec["n_check"]]
    out["singular_head"] = summary.pop("singular")[: spec["n_check"]]
    out["n_singular"] = int(tab["singular"].sum())
    out["n_converged"] = int(summary.pop("converged").count(True))
    out["n_fits"] = len(tab)
    out.update(summary)
    out["memory"] = memory()
    out["versions"] = versions()
    return out


def worker_bootstrap_jaxmixed(spec: dict) -> dict:
    out = start_jax()
    import jaxmixed as jm

    df = jm.load_dataset("sleepstudy")
    t0 = time.perf_counter()
    m = jm.fit_reml(SLEEP_FORMULA, df)
    out["fit_first_s"] = time.perf_counter() - t0
    n = spec["n"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        m.bootstrap(n, key=1, verbose=False)
        out["first_s"] = time.perf_counter() - t0
        steady = []
        for key in (2, 3):
            t0 = time.perf_counter()
            boot = m.bootstrap(n, key=key, verbose=False)
            steady.append(time.perf_counter() - t0)
        ci = boot.conf_int()
    out["steady_times"] = steady
    out["steady_s"] = statistics.median(steady)
    out["warnings"] = sorted({f"{w.category.__name__}: {w.message}"[:200] for w in caught})
    out["percentile"] = {str(k): [float(v) for v in row] for k, row in ci.iterrows()}
    out["wald"] = {str(k): [float(v) for v in row] for k, row in m.conf_int().iterrows()}
    out["original"] = {str(k): float(v) for k, v in boot.original.items()}
    out["n_converged"] = int(boot.converged.sum())
    out["n_singular"] = int(boot.singular.sum())
    out["memory"] = memory()
    out["versions"] = versions()
    return out


def worker_bigrows_jaxmixed(spec: dict) -> dict:
    out = start_jax()
    import jax

    import jaxmixed as jm

    devices = spec["devices"]
    out["jax_devices"] = len(jax.devices())
    t0 = time.perf_counter()
    y, X, groups = bigrows_arrays(spec["n"], spec["groups"])
    out["simulate_s"] = time.perf_counter() - t0
    # The host part of fit_reml alone: validation of the arrays, the design.
    t0 = time.perf_counter()
    jm.design.design_from_arrays(y, X, X, groups)
    out["design_arrays_s"] = time.perf_counter() - t0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        res = jm.fit_reml(y=y, X=X, Z=X, groups=groups, devices=devices)
        out["first_s"] = time.perf_counter() - t0
        out["memory_after_first"] = memory()
        y2, _, _ = bigrows_arrays(spec["n"], spec["groups"], draw=1)
        t0 = time.perf_counter()
        res2 = jm.fit_reml(y=y2, X=X, Z=X, groups=groups, devices=devices)
        out["steady_s"] = time.perf_counter() - t0
    out["warnings"] = sorted({f"{w.category.__name__}: {w.message}"[:200] for w in caught})
    out["memory"] = memory()
    out["objective"] = float(res.objective)
    out["objective_steady"] = float(res2.objective)
    out["converged"] = bool(res.converged) and bool(res2.converged)
    out["n_iter"] = int(res.n_iter)
    out["fixef"] = [float(v) for v in res.fixed_effects.values]
    if spec.get("formula_design"):  # after the memory readings: a DataFrame and formulaic
        df = pd.DataFrame({"y": y, "x1": X[:, 1], "g": groups})
        t0 = time.perf_counter()
        jm.design.build_design("y ~ x1 + (x1 | g)", df)
        out["design_formula_s"] = time.perf_counter() - t0
    out["versions"] = versions()
    return out


WORKERS = {
    "w4_jaxmixed": worker_w4_jaxmixed,
    "w4_statsmodels": worker_w4_statsmodels,
    "genomics_jaxmixed": worker_genomics_jaxmixed,
    "bootstrap_jaxmixed": worker_bootstrap_jaxmixed,
    "bigrows_jaxmixed": worker_bigrows_jaxmixed,
}


def worker_main(kind: str, spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    Path(out_path).write_text(json.dumps(WORKERS[kind](spec)))


# --------------------------------------------------------------------------------------
# Subprocesses
# --------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, flush=True)


def run_process(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Runs cmd in its own session; kills that session after timeout seconds."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=env, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the session this call started
            proc.wait()
        out.seek(0)
        err.seek(0)
        return {
            "returncode": proc.returncode,
            "timed_out": timed_out,
            "wall_s": time.perf_counter() - t0,
            "stdout": out.read(),
            "stderr": err.read(),
        }


def failure(run: dict, what: str, timeout: float) -> str:
    if run["timed_out"]:
        return f"{what}: did not finish in {timeout / 60:.0f} min"
    tail = "\n".join((run["stderr"] or run["stdout"]).strip().splitlines()[-25:])
    return f"{what} failed (exit {run['returncode']}):\n{tail}"


def run_worker(kind: str, spec: dict, workdir: Path, timeout: float, xla_devices: int | None = None):
    """(result dict, None) or (None, error text)."""
    spec_path = workdir / f"{kind}.spec.json"
    out_path = workdir / f"{kind}-{xla_devices}.result.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    if xla_devices:
        flag = f"--xla_force_host_platform_device_count={xla_devices}"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(spec_path), str(out_path)]
    run = run_process(cmd, timeout, env)
    if run["returncode"] != 0 or not out_path.exists():
        return None, failure(run, kind, timeout)
    return json.loads(out_path.read_text()), None


def lme4_available() -> tuple[bool, str]:
    if shutil.which("Rscript") is None:
        return False, "Rscript not found on PATH"
    try:
        proc = subprocess.run(
            ["Rscript", "-e", "suppressPackageStartupMessages(library(lme4))"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"Rscript failed: {exc}"
    if proc.returncode != 0:
        return False, "R package lme4 is not installed"
    return True, ""


def r_lines(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.splitlines():
        key, _, rest = line.partition(" ")
        if key.isupper():
            out[key] = rest.strip()
    return out


def run_lme4_fits(df: pd.DataFrame, formula: str, factors: list[str], workdir: Path, label: str, timeout):
    """Fresh lmer per response column (named r_*); (per-response DataFrame, info) or (None, error)."""
    csv = workdir / f"{label}.csv"
    res = workdir / f"{label}-lme4.csv"
    df.to_csv(csv, index=False)  # shortest round-trip repr: R reads the same doubles
    run = run_process(
        ["Rscript", str(R_SCRIPT), "fits", str(csv), formula, ",".join(factors), str(res)], timeout
    )
    if run["returncode"] != 0 or not res.exists():
        return None, failure(run, f"lme4 ({label})", timeout)
    info = r_lines(run["stdout"])
    table = pd.read_csv(res)
    table["singular"] = table["singular"].astype(str).str.upper() == "TRUE"
    return table, {
        "total_s": float(info["TOTAL"]),
        "loop_s": float(info["LOOP"]),
        "versions": info["VERSIONS"],
    }


# --------------------------------------------------------------------------------------
# Comparison and formatting
# --------------------------------------------------------------------------------------


def objective_check(jm_obj, ref_obj) -> dict:
    """jaxmixed's REML criteria against a reference's (lme4), per response."""
    a = np.asarray(jm_obj, float)
    b = np.asarray(ref_obj, float)
    ok = np.isfinite(a) & np.isfinite(b)
    rel = (a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-12)
    return {
        "compared": int(ok.sum()),
        "jm_worse": int((rel > REL_TOL).sum()),
        "jm_better": int((rel < -REL_TOL).sum()),
        "max_abs_rel": float(np.max(np.abs(rel))) if rel.size else float("nan"),
        "max_worse_rel": float(np.max(rel)) if rel.size else float("nan"),
        "missing": int((~ok).sum()),
        "worst": int(np.flatnonzero(ok)[np.argmax(rel)]) if rel.size else -1,
    }


def mib(b) -> str:
    return "–" if not b else f"{b / 2**20:,.0f} MiB"


def target(value: float, limit: float) -> str:
    return f"target < {fmt_s(limit)} s: **{'met' if value < limit else 'missed'}**"


def ratio(a, b) -> str:
    return "–" if not a or not b else f"{a / b:.1f}×"


def git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def header_line(args, extra: str = "") -> str:
    commit = git("rev-parse", "--short", "HEAD")
    dirty = " (working tree of jaxmixed/ modified)" if git("status", "--porcelain", "jaxmixed") else ""
    mode = "**--quick (small sizes: a smoke test, not a benchmark)**; " if args.quick else ""
    return (
        f"{time.strftime('%Y-%m-%d %H:%M')}; {mode}jaxmixed at {commit}{dirty}; "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}{extra}."
    )


def env_versions(jm_result: dict | None) -> str:
    if not jm_result:
        return ""
    v = jm_result.get("versions", {})
    return f", jax {v.get('jax', '?')}"


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------


def case_w4(args, sz, workdir: Path, r_ok: bool, r_note: str) -> list[str]:
    k = sz["w4_k"]
    log(f"\n== W4: {k:,} responses, 40 subjects x 8, {W4_FORMULA}")
    jm, err = run_worker("w4_jaxmixed", {"k": k, "steady": sz["w4_steady"]}, workdir, sz["timeout"])
    if err:
        log(err)
    else:
        log(
            f"  jaxmixed: import {jm['import_s']:.2f} s, backend {jm['backend_s']:.2f} s, first call "
            f"{jm['first_s']:.2f} s, steady {jm['steady_s']:.3f} s (calls {[round(t, 3) for t in jm['steady_times']]})"
        )
    k_sm = min(sz["w4_sm"], k) if args.statsmodels else 0
    sm = sm_err = None
    if k_sm:
        log(f"  statsmodels on {k_sm:,} responses ...")
        sm, sm_err = run_worker("w4_statsmodels", {"k": k_sm}, workdir, sz["timeout"])
        if sm_err:
            log(sm_err)
        else:
            log(f"  statsmodels: {sm['total_s']:.2f} s for {k_sm} fits, methods {sm['methods']}")
    lme = lme_info = lme_err = None
    if r_ok:
        log(f"  lme4 on {k:,} responses ...")
        design = w4_design()
        wide = pd.concat(
            [design, pd.DataFrame(w4_responses(design, k, 0), columns=[f"r_{j}" for j in range(k)])], axis=1
        )
        lme, lme_info = run_lme4_fits(wide, W4_FORMULA, ["subject"], workdir, "w4", sz["timeout"])
        if lme is None:
            lme_err, lme_info = lme_info, None
            log(lme_err)
        else:
            log(f"  lme4: {lme_info['total_s']:.2f} s for {k} fresh lmer fits")

    lines = [
        f"## W4: {k:,} responses over one design",
        "",
        header_line(args, env_versions(jm)),
        "",
        f"`{W4_FORMULA}`: 40 subjects x 8 observations (x1 per observation, x2 per subject), "
        f"{k:,} responses, each with its own coefficients, residual SD and subject/residual variance ratio "
        "(log-uniform in [0.05, 5], exactly 0 for about 10%). `jm.fit_reml_many(formula, df, "
        "responses=[...])`: first call in a fresh process (compilation included; importing jaxmixed and "
        "JAX's backend start-up excluded), steady = median of further calls with new responses, same shapes. "
        "lme4: a fresh `lmer(REML = TRUE)` per response (model construction plus fit, summed). "
        "statsmodels: a fresh `smf.mixedlm(...).fit(reml=True)` per response (its default optimiser list: "
        "bfgs, then lbfgs, then cg).",
        "",
    ]
    if err:
        return lines + ["jaxmixed failed:", "", "```", err, "```", ""]
    lines += [
        "| tool | seconds, all responses | per response (ms) | ratio to jaxmixed first | ratio to jaxmixed steady |",
        "|---|---:|---:|---:|---:|",
        f"| jaxmixed, first call | {fmt_s(jm['first_s'])} | {1e3 * jm['first_s'] / k:.2f} | 1 | – |",
        f"| jaxmixed, steady | {fmt_s(jm['steady_s'])} | {1e3 * jm['steady_s'] / k:.3f} | – | 1 |",
    ]
    if lme_info:
        t = lme_info["total_s"]
        lines.append(
            f"| lme4 | {fmt_s(t)} | {1e3 * t / k:.1f} | {ratio(t, jm['first_s'])} | {ratio(t, jm['steady_s'])} |"
        )
    if sm:
        t = sm["total_s"] * k / k_sm
        note = "" if k_sm == k else f" (extrapolated from {k_sm})"
        lines.append(
            f"| statsmodels{note} | {fmt_s(t)} | {1e3 * t / k:.1f} | {ratio(t, jm['first_s'])} "
            f"| {ratio(t, jm['steady_s'])} |"
        )
    lines += [
        "",
        f"Targets: first call {target(jm['first_s'], 2.0)}; steady {target(jm['steady_s'], 0.1)}. "
        f"jaxmixed: import {jm['import_s']:.2f} s, backend start {jm['backend_s']:.2f} s (not counted); "
        f"L-BFGS iterations median {jm['n_iter_median']:.0f}, max {jm['n_iter_max']}; "
        f"{jm['converged'].count(True):,}/{k:,} converged; messages {jm['messages']}; "
        f"peak memory {mib(jm['memory_after_first']['vmhwm'])} after the first call.",
        "",
    ]
    if jm["warnings"]:
        lines += ["jaxmixed warnings: " + "; ".join(jm["warnings"]), ""]
    lines += ["### Optimum check", ""]
    if lme is not None:
        chk = objective_check(jm["objective"], lme["objective"])
        jm_sing = np.asarray(jm["singular"])
        r_sing = lme["singular"].to_numpy()
        agree = int((jm_sing == r_sing).sum())
        missing = f", {chk['missing']} missing (a failed fit)" if chk["missing"] else ""
        lines += [
            f"Against lme4 (a fresh `lmer` per response; REML criterion `REMLcrit`, `isSingular` "
            f"with its default tolerance 1e-4), {chk['compared']:,} responses compared"
            f"{missing}:",
            "",
            f"- jaxmixed's objective above lme4's by more than {REL_TOL:g} (relative): "
            f"**{chk['jm_worse']}** (should be 0); below lme4's by more than {REL_TOL:g}: {chk['jm_better']}.",
            f"- largest relative difference |jaxmixed − lme4| / |lme4|: {chk['max_abs_rel']:.1e} "
            f"(largest excess of jaxmixed: {chk['max_worse_rel']:.1e}, response r_{chk['worst']}).",
            f"- singular flags agree on {agree:,}/{k:,}; flagged singular: jaxmixed {int(jm_sing.sum())}, "
            f"lme4 {int(r_sing.sum())}; about {round(0.1 * k)} were simulated with no subject variance.",
            f"- lme4 fits with convergence warnings (other than the singular-fit note): {int((lme['n_messages'] > 0).sum())}.",
            "",
        ]
        log(
            f"  vs lme4: jaxmixed worse in {chk['jm_worse']} / {chk['compared']}, better in {chk['jm_better']}, "
            f"max |rel| {chk['max_abs_rel']:.1e}; singular agree {agree}/{k} "
            f"(jaxmixed {int(jm_sing.sum())}, lme4 {int(r_sing.sum())})"
        )
    else:
        lines += [f"lme4 not run: {lme_err or r_note}", ""]
    if sm:
        sm_obj = np.asarray(sm["objective"], float)
        jm_obj = np.asarray(jm["objective"][:k_sm], float)
        rel = (sm_obj - jm_obj) / np.abs(jm_obj)
        worse = np.isfinite(rel) & (rel > REL_TOL)
        conv = np.asarray(sm["converged"], bool)
        const = ""
        if lme is not None and np.isfinite(sm_obj[0]):
            r0 = float(lme["objective"].iloc[0])
            const = (
                f"Constants: on response r_0, statsmodels' −2·llf = {sm_obj[0]:.10g}, lme4's REMLcrit = "
                f"{r0:.10g}, jaxmixed's objective = {jm_obj[0]:.10g} (relative difference statsmodels − lme4 "
                f"{(sm_obj[0] - r0) / abs(r0):.1e}): −2·llf of statsmodels' REML fit is the same criterion "
                "as lme4's REMLcrit (a different constant would differ by O(n))."
            )
        lines += [
            f"statsmodels ({k_sm:,} responses{'' if k_sm == k else ', a subset'}; REML criterion = −2·llf):",
            "",
            f"- worse than jaxmixed's optimum by more than {REL_TOL:g} (relative): **{int(worse.sum())}**, "
            f"of which {int((worse & conv).sum())} report `converged`; fits that raised: {sm['errors']}; "
            f"fits with warnings: {sm['n_warned']}.",
            f"- largest relative excess over jaxmixed: {np.nanmax(rel):.1e}; better than jaxmixed by more than "
            f"{REL_TOL:g}: {int((np.isfinite(rel) & (rel < -REL_TOL)).sum())}.",
            f"- optimiser that gave the result (statsmodels retries with the next one when one does not "
            f"converge): {sm['methods']}.",
            "",
        ]
        if const:
            lines += [const, ""]
        log(
            f"  statsmodels: worse than jaxmixed in {int(worse.sum())}/{k_sm} "
            f"({int((worse & conv).sum())} of them 'converged'); {const[:160]}"
        )
    elif sm_err:
        lines += ["statsmodels failed:", "", "```", sm_err, "```", ""]
    return lines


def case_genomics(args, sz, workdir: Path, r_ok: bool, r_note: str) -> list[str]:
    k, k_r = sz["gen_k"], sz["gen_lme4"]
    log(f"\n== Genomics: {k:,} responses x 500 samples, {GENOMICS_FORMULA}")
    jm, err = run_worker("genomics_jaxmixed", {"k": k, "n_check": k_r}, workdir, sz["timeout"])
    if err:
        log(err)
    else:
        log(
            f"  jaxmixed: first call {jm['first_s']:.2f} s, steady {jm.get('steady_s', float('nan')):.2f} s, "
            f"peak VmHWM {mib(jm['memory_after_first']['vmhwm'])}, ru_maxrss {mib(jm['memory_after_first']['ru_maxrss'])}"
        )
    lme = lme_info = lme_err = None
    if r_ok:
        log(f"  lme4 on the first {k_r} responses ...")
        design = genomics_design()
        wide = pd.concat(
            [
                design,
                pd.DataFrame(genomics_responses(design, k_r, 0), columns=[f"r_{j}" for j in range(k_r)]),
            ],
            axis=1,
        )
        lme, lme_info = run_lme4_fits(
            wide, GENOMICS_FORMULA, ["individual", "batch"], workdir, "genomics", sz["timeout"]
        )
        if lme is None:
            lme_err, lme_info = lme_info, None
            log(lme_err)
        else:
            log(
                f"  lme4: {lme_info['total_s']:.2f} s for {k_r} fits -> {lme_info['total_s'] * k / k_r:.0f} s for {k:,}"
            )
    lines = [
        f"## Genomics: {k:,} responses x 500 samples, two crossed factors",
        "",
        header_line(args, env_versions(jm)),
        "",
        f"`{GENOMICS_FORMULA}`: 100 individuals x 5 samples; sample s of individual i in batch (i + 2s) mod 10 "
        "(10 batches of 50, each individual in 5 batches). Responses: intercept ~ N(5, 2), slope ~ N(0, 0.5), "
        "residual SD 0.3–2, variance ratios individual/residual log-uniform in [0.02, 4] and batch/residual in "
        "[0.01, 1], each exactly 0 for about 10%. `jm.fit_reml_many(formula, covariates, responses=Y)` with Y "
        "an (n, K) matrix, in a fresh process: first call (compilation included; import and backend start-up "
        "excluded), then a second call with new responses (steady). Peak memory of that process "
        "(VmHWM; `ru_maxrss` alongside) after the first call, data included. lme4: a fresh `lmer` per response "
        f"on the first {k_r} responses, extrapolated linearly to {k:,}.",
        "",
    ]
    if err:
        return lines + ["jaxmixed failed:", "", "```", err, "```", ""]
    mem = jm["memory_after_first"]
    lines += [
        "| tool | seconds | per response (ms) | peak memory | lme4 / jaxmixed |",
        "|---|---:|---:|---:|---:|",
        f"| jaxmixed, first call | {fmt_s(jm['first_s'])} | {1e3 * jm['first_s'] / k:.2f} "
        f"| {mib(mem['vmhwm'])} (ru_maxrss {mib(mem['ru_maxrss'])}) | – |",
    ]
    if "steady_s" in jm:
        lines.append(
            f"| jaxmixed, steady | {fmt_s(jm['steady_s'])} | {1e3 * jm['steady_s'] / k:.2f} | – | – |"
        )
    if lme_info:
        t = lme_info["total_s"] * k / k_r
        lines.append(
            f"| lme4, {k_r} fits × {k // k_r} (extrapolated) | {fmt_s(t)} | {1e3 * t / k:.1f} | – "
            f"| {ratio(t, jm['first_s'])} (first), {ratio(t, jm.get('steady_s'))} (steady) |"
        )
    lines += [
        "",
        f"Target: first call {target(jm['first_s'], 60.0)}. Simulating the responses (numpy, not counted): "
        f"{fmt_s(jm['simulate_s'])} s. {jm['n_converged']:,}/{jm['n_fits']:,} converged, {jm['n_singular']:,} "
        f"singular; L-BFGS iterations median {jm['n_iter_median']:.0f}, max {jm['n_iter_max']}; "
        f"messages {jm['messages']}.",
        "",
    ]
    if jm["warnings"]:
        lines += ["jaxmixed warnings: " + "; ".join(jm["warnings"]), ""]
    if lme is not None:
        chk = objective_check(jm["objective_head"], lme["objective"])
        js = np.asarray(jm["singular_head"])
        rs = lme["singular"].to_numpy()
        lines += [
            f"Optimum check on the first {k_r} responses against lme4: jaxmixed's objective above lme4's by "
            f"more than {REL_TOL:g} (relative): **{chk['jm_worse']}**; below: {chk['jm_better']}; largest "
            f"|relative difference| {chk['max_abs_rel']:.1e}; singular flags agree on {int((js == rs).sum())}/{k_r} "
            f"(jaxmixed {int(js.sum())}, lme4 {int(rs.sum())} singular); lme4 fits with convergence warnings (other than the singular-fit note): "
            f"{int((lme['n_messages'] > 0).sum())}.",
            "",
        ]
        log(
            f"  vs lme4: jaxmixed worse in {chk['jm_worse']}/{chk['compared']}, max |rel| {chk['max_abs_rel']:.1e}, "
            f"singular agree {int((js == rs).sum())}/{k_r}"
        )
    else:
        lines += [f"lme4 not run: {lme_err or r_note}", ""]
    return lines


def _sleep_lme4_params(reps: pd.DataFrame) -> pd.DataFrame:
    """bootMer's (fixef, theta, sigma) replicates as jaxmixed's parameters (sd, cor, sigma, fixef)."""
    t1 = reps["Subject.(Intercept)"]
    t2 = reps["Subject.Days.(Intercept)"]
    t3 = reps["Subject.Days"]
    s = reps["sigma"]
    norm2 = np.sqrt(t2**2 + t3**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        cor = np.sign(t1) * t2 / norm2
    return pd.DataFrame(
        {
            "sd_(Intercept)|Subject": s * np.abs(t1),
            "sd_Days|Subject": s * norm2,
            "cor_Days.(Intercept)|Subject": cor,
            "sigma": s,
            "Intercept": reps["(Intercept)"],
            "Days": reps["Days"],
        }
    )


def case_bootstrap(args, sz, workdir: Path, r_ok: bool, r_note: str) -> list[str]:
    n, n_r = sz["boot_n"], sz["boot_r"]
    log(f"\n== Bootstrap: sleepstudy, {SLEEP_FORMULA}, {n:,} replicates")
    jm, err = run_worker("bootstrap_jaxmixed", {"n": n}, workdir, sz["timeout"])
    if err:
        log(err)
    else:
        log(
            f"  jaxmixed: fit_reml first {jm['fit_first_s']:.2f} s; bootstrap first call {jm['first_s']:.2f} s, "
            f"steady {jm['steady_s']:.2f} s ({[round(t, 2) for t in jm['steady_times']]})"
        )
    lme_err, r_info, r_params = None, None, None
    if r_ok:
        log(f"  lme4 bootMer, nsim = {n_r} ...")
        reps_csv = workdir / "boot-lme4.csv"
        run = run_process(["Rscript", str(R_SCRIPT), "boot", str(n_r), "1", str(reps_csv)], sz["timeout"])
        if run["returncode"] != 0 or not reps_csv.exists():
            lme_err = failure(run, "lme4 bootMer", sz["timeout"])
            log(lme_err)
        else:
            r_info = r_lines(run["stdout"])
            r_params = _sleep_lme4_params(pd.read_csv(reps_csv))
            log(f"  lme4: lmer {float(r_info['FIT']):.2f} s, bootMer {float(r_info['BOOT']):.2f} s for {n_r}")
    lines = [
        f"## Bootstrap: sleepstudy, {n:,} replicates",
        "",
        header_line(args, env_versions(jm)),
        "",
        f'`m = jm.fit_reml("{SLEEP_FORMULA}", sleepstudy)`, then `m.bootstrap({n}, key)` (parametric: '
        "simulate from the fit, refit; vmapped chunks) in a fresh process: the first call (compilation "
        "included) with key 1, steady = median of two more calls with keys 2 and 3. lme4: `bootMer(m, FUN = "
        'function(x) c(fixef(x), getME(x, "theta"), sigma(x)), nsim = '
        f"{n_r})` in the same run (θ converted to SDs and the correlation for the table).",
        "",
    ]
    if err:
        return lines + ["jaxmixed failed:", "", "```", err, "```", ""]
    per_jm = jm["steady_s"] / n
    lines += [
        "| | seconds | replicates | ms per replicate | lme4 / jaxmixed per replicate |",
        "|---|---:|---:|---:|---:|",
        f"| jaxmixed `fit_reml` (first call) | {fmt_s(jm['fit_first_s'])} | – | – | – |",
        f"| jaxmixed bootstrap, first call | {fmt_s(jm['first_s'])} | {n:,} | {1e3 * jm['first_s'] / n:.3f} | – |",
        f"| jaxmixed bootstrap, steady | {fmt_s(jm['steady_s'])} | {n:,} | {1e3 * per_jm:.3f} | 1 |",
    ]
    if r_info:
        b = float(r_info["BOOT"])
        lines.append(
            f"| lme4 `bootMer` | {fmt_s(b)} | {n_r:,} | {1e3 * b / n_r:.2f} | {ratio(b / n_r, per_jm)} |"
        )
        lines.append(f"| lme4 `bootMer`, extrapolated to {n:,} | {fmt_s(b * n / n_r)} | {n:,} | – | – |")
    lines += [
        "",
        f"Target: steady {target(jm['steady_s'], 2.0)}. Replicates converged: {jm['n_converged']:,}/{n:,}; "
        f"singular: {jm['n_singular']:,}.",
        "",
    ]
    if jm["warnings"]:
        lines += ["jaxmixed warnings: " + "; ".join(jm["warnings"]), ""]
    lines += [
        "95% intervals: jaxmixed's percentile intervals (`BootstrapResults.conf_int()`, the steady call's "
        "replicates) and Wald intervals (`m.conf_int()`, fixed effects only); lme4's percentile intervals "
        "computed from bootMer's replicates with the same quantile rule (numpy, linear).",
        "",
        "| parameter | estimate | jaxmixed percentile | width | Wald | width | percentile / Wald | "
        f"lme4 percentile ({n_r:,}) | width |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (lo, hi) in jm["percentile"].items():
        est = jm["original"].get(name, float("nan"))
        wald = jm["wald"].get(name)
        wcell = (
            f"[{wald[0]:.4g}, {wald[1]:.4g}] | {wald[1] - wald[0]:.4g} | {(hi - lo) / (wald[1] - wald[0]):.3f}"
            if wald
            else "– | – | –"
        )
        rcell = "– | –"
        if r_params is not None and name in r_params:
            col = r_params[name].to_numpy(float)
            rlo, rhi = np.nanquantile(col, [0.025, 0.975])
            rcell = f"[{rlo:.4g}, {rhi:.4g}] | {rhi - rlo:.4g}"
        cell = name.replace("|", "\\|")  # a bar inside a markdown table cell
        lines.append(f"| {cell} | {est:.4g} | [{lo:.4g}, {hi:.4g}] | {hi - lo:.4g} | {wcell} | {rcell} |")
        log(
            f"  {name}: percentile [{lo:.4g}, {hi:.4g}]"
            + (f", Wald [{wald[0]:.4g}, {wald[1]:.4g}]" if wald else "")
        )
    lines.append("")
    if r_info is None:
        lines += [f"lme4 not run: {lme_err or r_note}", ""]
    return lines


def case_bigrows(args, sz, workdir: Path, r_ok: bool, r_note: str) -> list[str]:
    n, g = sz["big_n"], sz["big_groups"]
    log(f"\n== Big rows: {n:,} rows in {g:,} groups, y ~ x1 + (x1 | g), from arrays")
    runs = {}
    for devices in (4, None):
        spec = {
            "n": n,
            "groups": g,
            "devices": devices,
            "formula_design": devices is None and args.formula_design,
        }
        res, err = run_worker("bigrows_jaxmixed", spec, workdir, sz["timeout"], xla_devices=devices)
        runs[devices] = (res, err)
        if err:
            log(err)
        else:
            log(
                f"  devices={devices}: ({res['jax_devices']} JAX devices) first {res['first_s']:.2f} s, steady "
                f"{res['steady_s']:.2f} s, design (arrays) {res['design_arrays_s']:.2f} s, "
                f"peak VmHWM {mib(res['memory']['vmhwm'])}, ru_maxrss {mib(res['memory']['ru_maxrss'])}"
                + (f", formula design {res['design_formula_s']:.1f} s" if "design_formula_s" in res else "")
            )
    some = next((r for r, _ in runs.values() if r), None)
    lines = [
        f"## Big rows: {n:,} rows, {g:,} groups, `(x1 | g)`",
        "",
        header_line(args, env_versions(some)),
        "",
        f"`y ~ x1 + (x1 | g)`: {n:,} rows in {g:,} groups of {n // g}; random intercept SD 1, slope SD 0.5, "
        "correlation 0.3, residual SD 1. Generated as numpy arrays and fitted from arrays: "
        "`jm.fit_reml(y=y, X=X, Z=X, groups=g, devices=...)` in a fresh process; `devices=4` in a process "
        "with `XLA_FLAGS=--xla_force_host_platform_device_count=4` (4 host devices sharing the machine's cores), "
        "`devices=None` in a plain process. First call includes compilation; steady: a second call with a new y "
        "(same X, Z, groups). Peak memory: VmHWM of the process (data included; `ru_maxrss` alongside), after "
        "both calls. Host design building: `jaxmixed.core.design_from_arrays` alone (part of both calls).",
        "",
        "| devices | JAX devices | first call (s) | steady (s) | host design from arrays (s) | peak memory "
        "| ru_maxrss | objective | iterations |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for devices, (res, err) in runs.items():
        if err:
            lines.append(f"| {devices} | failed: see below | | | | | | | |")
            continue
        lines.append(
            f"| {devices} | {res['jax_devices']} | {fmt_s(res['first_s'])} | {fmt_s(res['steady_s'])} "
            f"| {fmt_s(res['design_arrays_s'])} | {mib(res['memory']['vmhwm'])} | {mib(res['memory']['ru_maxrss'])} "
            f"| {res['objective']:.10g} | {res['n_iter']} |"
        )
    lines.append("")
    (a, _), (b, _) = runs[4], runs[None]
    if a and b:
        rel = abs(a["objective"] - b["objective"]) / abs(b["objective"])
        lines += [
            f"devices=4 / devices=None: first call {a['first_s'] / b['first_s']:.2f}, steady "
            f"{a['steady_s'] / b['steady_s']:.2f}; objectives differ by {rel:.1e} (relative). "
            f"Simulating the data (numpy, not counted): {fmt_s(b['simulate_s'])} s.",
            "",
        ]
        if "design_formula_s" in b:
            lines += [
                f'For comparison, the formula route\'s host design (`jm.design.build_design("y ~ x1 + (x1 | g)", df)` on '
                f"a {n:,}-row DataFrame, formulaic): {fmt_s(b['design_formula_s'])} s, against "
                f"{fmt_s(b['design_arrays_s'])} s from arrays.",
                "",
            ]
    for devices, (res, err) in runs.items():
        if err:
            lines += [f"devices={devices} failed:", "", "```", err, "```", ""]
        elif res["warnings"]:
            lines += [f"devices={devices} warnings: " + "; ".join(res["warnings"]), ""]
    return lines


# --------------------------------------------------------------------------------------
# Results file
# --------------------------------------------------------------------------------------

TITLE = [
    "# Many fits: fit_reml_many, parametric bootstrap, big rows over devices",
    "",
    "Written by `benchmarks/many_benchmark.py` (see its docstring); each section is replaced when its case "
    "is run again. Timings are only meaningful on an otherwise idle machine.",
    "",
]


def write_sections(sections: dict[str, list[str]]) -> None:
    """Replaces the sections of the cases just run; keeps the others' earlier text."""
    old: dict[str, str] = {}
    if OUT.exists():
        text = OUT.read_text()
        for key in CASES:
            start, end = f"<!-- case:{key} -->", f"<!-- /case:{key} -->"
            i, j = text.find(start), text.find(end)
            if i >= 0 and j > i:
                old[key] = text[i : j + len(end)]
    parts = ["\n".join(TITLE)]
    for key in CASES:
        if key in sections:
            parts.append(
                f"<!-- case:{key} -->\n" + "\n".join(sections[key]).rstrip() + f"\n<!-- /case:{key} -->"
            )
        elif key in old:
            parts.append(old[key])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n\n".join(parts) + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test (< 2 min)")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}"
    )
    parser.add_argument(
        "--no-statsmodels", dest="statsmodels", action="store_false", help="skip statsmodels in w4"
    )
    parser.add_argument("--no-lme4", dest="lme4", action="store_false", help="skip every lme4 run")
    parser.add_argument(
        "--no-formula-design",
        dest="formula_design",
        action="store_false",
        help="bigrows: skip timing the formula route's host design on a DataFrame",
    )
    parser.add_argument(
        "--bigrows-rows", type=int, default=None, help="bigrows: this many rows (groups of 100) instead"
    )
    args = parser.parse_args()
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    sz = sizes(args.quick)
    if args.bigrows_rows:
        sz["big_n"], sz["big_groups"] = args.bigrows_rows, max(1, args.bigrows_rows // 100)
    r_ok, r_note = lme4_available() if args.lme4 else (False, "--no-lme4")
    if not r_ok:
        log(f"lme4 not used: {r_note}")
    try:
        load = os.getloadavg()[0]
        if load > 0.5:
            log(f"warning: 1-minute load average {load:.2f}: timings on a busy machine are wrong")
    except OSError:
        pass
    functions = {
        "w4": case_w4,
        "genomics": case_genomics,
        "bootstrap": case_bootstrap,
        "bigrows": case_bigrows,
    }
    sections = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaxmixed-many-") as tmp:
        for key in CASES:
            if key in chosen:
                sections[key] = functions[key](args, sz, Path(tmp), r_ok, r_note)
                write_sections(sections)  # after each case: a later failure keeps the earlier ones
    text = "\n\n".join("\n".join(sections[k]) for k in CASES if k in sections)
    print("\n" + text)
    log(f"Wrote {OUT.relative_to(REPO)} ({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
