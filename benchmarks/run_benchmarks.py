#!/usr/bin/env python
"""Benchmarks of jaxmixed against statsmodels MixedLM and lme4 (through Rscript).

One run fits every case with every available tool on the same data, each fit
in its own subprocess (so that peak memory, the maximum resident set size of
that subprocess, belongs to one tool and one case), and writes

    benchmarks/results/latest.json   every number, per case and tool
    benchmarks/results/latest.md     the tables that are also printed
    benchmarks/results/scaling.png   fit time against n, log-log

Usage (from the repository root):

    .venv/bin/python benchmarks/run_benchmarks.py                 # everything
    .venv/bin/python benchmarks/run_benchmarks.py --quick         # smoke run, small sizes
    .venv/bin/python benchmarks/run_benchmarks.py --cases a,c --no-plot
    .venv/bin/python benchmarks/run_benchmarks.py --skip-insteval-statsmodels

See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

SEED = 20240611
INSTEVAL_SM_TIMEOUT = 15 * 60  # seconds; statsmodels on InstEval may not finish
DEFAULT_TIMEOUT = 30 * 60  # any other subprocess
MIN_FREE_MEMORY = 1.0 * 2**30  # a fit is stopped when the machine has less available
PEER_EXTRAPOLATION_LIMIT = 60.0  # scaling: skip a peer whose extrapolated time exceeds this

XS10 = [f"x{i}" for i in range(1, 11)]


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def mixedml_covariance() -> np.ndarray:
    """Covariance of x1..x10: unit variances, 0.3 within x1..x5 and within x6..x10, 0.1 across."""
    cov = np.full((10, 10), 0.1)
    cov[:5, :5] = 0.3
    cov[5:, 5:] = 0.3
    np.fill_diagonal(cov, 1.0)
    eig = np.linalg.eigvalsh(cov)
    if eig.min() <= 0:
        raise AssertionError(f"covariance of x1..x10 is not positive definite: {eig}")
    return cov


def simulate_mixedml(n_clusters: int, seed: int) -> pd.DataFrame:
    """The mixedML linear simulation: clusters of 22-25 rows, 10 level-1 and 3 level-2 features.

    y = 5 + sum(x) + sum(w) + b0 + sum_k b_k x_k + e, with (b0, b1..b10) ~ N(0, I)
    per cluster and e ~ N(0, 3.5^2).
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(22, 26, size=n_clusters)  # 22..25 inclusive
    g = np.repeat(np.arange(n_clusters), sizes)
    n = g.size
    x = rng.multivariate_normal(np.zeros(10), mixedml_covariance(), size=n)
    w = rng.standard_normal((n_clusters, 3))[g]
    b = rng.standard_normal((n_clusters, 11))[g]
    y = 5.0 + x.sum(axis=1) + w.sum(axis=1) + b[:, 0] + (b[:, 1:] * x).sum(axis=1)
    y = y + 3.5 * rng.standard_normal(n)
    df = pd.DataFrame(x, columns=XS10)
    for k in range(3):
        df[f"w{k + 1}"] = w[:, k]
    df["g"] = g
    df["y"] = y
    return df


def simulate_slopes(n: int, n_groups: int, seed: int) -> pd.DataFrame:
    """n rows in n_groups balanced groups; y ~ x1 + x2 + x3 + (x1 | g).

    Random intercept SD 1, random slope SD 0.5, correlation 0.3; residual SD 1;
    fixed effects (1, 1, -0.5, 0.25).
    """
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), -(-n // n_groups))[:n]
    x = rng.standard_normal((n, 3))
    sd = np.array([1.0, 0.5])
    corr = np.array([[1.0, 0.3], [0.3, 1.0]])
    b = rng.multivariate_normal(np.zeros(2), corr * np.outer(sd, sd), size=n_groups)[g]
    y = 1.0 + x @ np.array([1.0, -0.5, 0.25]) + b[:, 0] + b[:, 1] * x[:, 0] + rng.standard_normal(n)
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "g": g, "y": y})


def load_insteval(quick: bool) -> pd.DataFrame:
    import jaxmixed as jm

    df = jm.load_dataset("InstEval")[["s", "d", "service", "dept", "y"]]
    if quick:  # the ratings of the first 400 students
        df = df[df["s"].cat.codes < 400].copy()
        for col in ["s", "d", "service", "dept"]:
            df[col] = df[col].cat.remove_unused_categories()
    return df.reset_index(drop=True)


SLOPES_FORMULA = "y ~ x1 + x2 + x3 + (x1 | g)"


def slopes_spec(n: int, n_groups: int) -> dict:
    return {
        "formula": SLOPES_FORMULA,
        "sm": {"formula": "y ~ x1 + x2 + x3", "groups": "g", "re_formula": "~x1"},
        "factors": ["g"],
        "make": ["slopes", n, n_groups],
    }


def case_specs(quick: bool) -> dict[str, dict]:
    """Per case: title, formula (jaxmixed and lme4), statsmodels' version of the model, data."""
    n_clusters = 50 if quick else 200
    n_c, groups_c = (100_000, 1_000) if quick else (1_000_000, 10_000)
    xs = " + ".join(XS10)
    return {
        "a": {
            "title": "sleepstudy",
            "formula": "Reaction ~ Days + (Days | Subject)",
            "sm": {"formula": "Reaction ~ Days", "groups": "Subject", "re_formula": "~Days"},
            "factors": ["Subject"],
            "make": ["dataset", "sleepstudy"],
        },
        "b": {
            "title": f"mixedML simulation ({n_clusters} clusters, 11 correlated random effects)",
            "formula": f"y ~ {xs} + w1 + w2 + w3 + ({xs} | g)",
            "sm": {"formula": f"y ~ {xs} + w1 + w2 + w3", "groups": "g", "re_formula": f"~{xs}"},
            "factors": ["g"],
            "make": ["mixedml", n_clusters],
        },
        "c": {
            "title": f"{n_c:,} rows, {groups_c:,} groups, random intercept and slope",
            **slopes_spec(n_c, groups_c),
        },
        "d": {
            "title": "InstEval" + (" (first 400 students)" if quick else ""),
            "formula": "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)",
            "sm": {
                "formula": "y ~ 1 + service",
                "groups": None,  # one group holding all rows, crossed effects as variance components
                "re_formula": "0",
                "vc_formula": {"s": "0 + C(s)", "d": "0 + C(d)", "dept:service": "0 + C(dept):C(service)"},
            },
            "factors": ["s", "d", "service", "dept"],
            "make": ["insteval"],
        },
    }


def make_data(make: list, quick: bool) -> pd.DataFrame:
    kind = make[0]
    if kind == "dataset":
        import jaxmixed as jm

        return jm.load_dataset(make[1])
    if kind == "mixedml":
        return simulate_mixedml(make[1], SEED)
    if kind == "slopes":
        return simulate_slopes(make[1], make[2], SEED + make[1])
    if kind == "insteval":
        return load_insteval(quick)
    raise ValueError(kind)


# --------------------------------------------------------------------------------------
# Workers (run in subprocesses)
# --------------------------------------------------------------------------------------


def _timed_repeats(fn, min_repeats: int = 3, max_repeats: int = 5, budget: float = 20.0):
    """Runs fn until max_repeats, or min_repeats once budget seconds are spent; returns times."""
    times = []
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_repeats and sum(times) > budget:
            break
    return times


def worker_jaxmixed(spec: dict) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import jaxmixed as jm
    from jaxmixed import core

    df = pd.read_pickle(spec["data"])
    formula = spec["formula"]
    jnp.zeros(1).block_until_ready()  # JAX backend start-up is not part of any fit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        res = jm.fit_reml(formula, data=df, reml=True)
        first = time.perf_counter() - t0

        steady = _timed_repeats(lambda: jm.fit_reml(formula, data=df, reml=True))

    # The same steps by hand, through the pure layer: the design (host), the one
    # pass over the data (statistics), the compiled core fit on those statistics.
    design_times = _timed_repeats(lambda: core.build_design(formula, df), budget=10.0)
    design, arrays = core.build_design(formula, df)
    statistics_jit = eqx.filter_jit(core.model_statistics)
    fit_jit = eqx.filter_jit(core.fit)
    options = core.FitOptions(reml=True)
    with jax.enable_x64(True):
        data = core.prepare(design, arrays)
        y = jnp.asarray(arrays.y)

        def stats_once():
            return jax.block_until_ready(statistics_jit(data, y))

        # fit_reml compiles statistics and fit together as one program; this jitted
        # statistics pass alone is a new compilation: one warm-up call, not timed.
        stats = stats_once()
        stats_times = _timed_repeats(stats_once, budget=10.0)

        def core_once():
            return jax.block_until_ready(fit_jit(stats, options))

        t0 = time.perf_counter()
        opt = core_once()  # compilation of the core fit included
        core_first = time.perf_counter() - t0
        core_times = _timed_repeats(core_once)
        core_value = float(opt.objective)

    vc = res.varcorr
    return {
        "first_call_s": first,
        "fit_reml_s": statistics.median(steady),
        "fit_reml_times": steady,
        "build_design_s": statistics.median(design_times),
        "model_statistics_s": statistics.median(stats_times),
        "model_statistics_times": stats_times,
        "fit_statistics_s": statistics.median(core_times),
        "fit_statistics_times": core_times,
        "fit_statistics_first_s": core_first,
        "fit_statistics_objective": core_value,
        "n_obs": int(res.nobs),
        "n_iter": int(res.n_iter),
        "converged": bool(res.converged),
        "convergence_message": res.convergence_message,
        "singular": bool(res.singular),
        "objective": float(res.objective),
        "fixef_names": [str(k) for k in res.fixed_effects.index],
        "fixef": [float(v) for v in res.fixed_effects.values],
        "fixef_se": [float(v) for v in res.fixed_effects_se.values],
        "sigma": float(res.sigma),
        "theta": [float(v) for v in res.theta.values],
        "varcorr": [
            {
                "grp": _name(r.grp),
                "var1": _name(r.var1),
                "var2": _name(r.var2),
                "vcov": float(r.vcov),
            }
            for r in vc.itertuples()
        ],
        "warnings": sorted({f"{w.category.__name__}: {w.message}"[:300] for w in caught}),
        "versions": {"jax": jax.__version__, "jaxmixed": jm.__version__},
    }


def worker_statsmodels(spec: dict) -> dict:
    import statsmodels
    import statsmodels.formula.api as smf

    df = pd.read_pickle(spec["data"])
    sm = spec["sm"]
    kwargs = {"re_formula": sm.get("re_formula")}
    if sm.get("vc_formula"):
        kwargs["vc_formula"] = sm["vc_formula"]
        kwargs["use_sparse"] = True  # dense variance-component matrices would need ~3 GB
    if sm["groups"] is None:
        df = df.assign(_one_group=1)
        groups = "_one_group"
    else:
        groups = sm["groups"]

    def fit_once():
        model = smf.mixedlm(sm["formula"], df, groups=df[groups], **kwargs)
        return model, model.fit(reml=True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        times = []
        while True:  # repeat only fast fits: median of up to 5 when one takes < 1 s
            t0 = time.perf_counter()
            model, result = fit_once()
            times.append(time.perf_counter() - t0)
            if len(times) >= 5 or sum(times) > 2.0:
                break
    cov_re = np.asarray(result.cov_re, dtype=float)
    return {
        "fit_s": statistics.median(times),
        "fit_times": times,
        "converged": bool(getattr(result, "converged", True)),
        "method": str(getattr(result, "method", "")),
        "llf": float(result.llf),
        "objective": -2.0 * float(result.llf),
        "fixef_names": [str(k) for k in result.fe_params.index],
        "fixef": [float(v) for v in result.fe_params.values],
        "cov_re_names": [str(k) for k in getattr(result.cov_re, "index", [])],
        "cov_re": cov_re.tolist(),
        "vcomp_names": list(model.exog_vc.names),
        "vcomp": [float(v) for v in np.atleast_1d(result.vcomp)],
        "scale": float(result.scale),
        "warnings": sorted({f"{w.category.__name__}: {w.message}"[:300] for w in caught}),
        "versions": {"statsmodels": statsmodels.__version__},
    }


def _name(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def worker_main(kind: str, spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = {"jaxmixed": worker_jaxmixed, "statsmodels": worker_statsmodels}[kind](spec)
    result["peak_rss_bytes"] = vm_hwm()
    Path(out_path).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------
# lme4 through Rscript
# --------------------------------------------------------------------------------------

R_TEMPLATE = r"""
suppressPackageStartupMessages(library(lme4))
df <- read.csv("@CSV@", colClasses = c(@COLCLASSES@))
form <- @FORMULA@
times <- c()
repeat {  # repeat only fast fits: median of up to 5 when one takes < 1 s
  t0 <- proc.time()[["elapsed"]]
  m <- lmer(form, data = df, REML = TRUE)
  times <- c(times, proc.time()[["elapsed"]] - t0)
  if (length(times) >= 5 || sum(times) > 2) break
}
num <- function(x) paste0("[", paste(ifelse(is.finite(x), sprintf("%.17g", x), "null"), collapse = ","), "]")
str <- function(x) {
  if (length(x) == 0) return("[]")
  paste0("[", paste0("\"", ifelse(is.na(x), "", as.character(x)), "\"", collapse = ","), "]")
}
vc <- as.data.frame(VarCorr(m))
msgs <- m@optinfo$conv$lme4$messages
status <- readLines("/proc/self/status")
hwm <- as.numeric(strsplit(trimws(sub("VmHWM:", "", grep("^VmHWM:", status, value = TRUE))), " ")[[1]][1]) * 1024
cat("JSON:{",
    "\"fit_s\":", sprintf("%.6f", median(times)), ",",
    "\"fit_times\":", num(times), ",",
    "\"objective\":", sprintf("%.17g", REMLcrit(m)), ",",
    "\"fixef_names\":", str(names(fixef(m))), ",",
    "\"fixef\":", num(unname(fixef(m))), ",",
    "\"theta\":", num(unname(getME(m, "theta"))), ",",
    "\"sigma\":", sprintf("%.17g", sigma(m)), ",",
    "\"vc_grp\":", str(vc$grp), ",",
    "\"vc_var1\":", str(vc$var1), ",",
    "\"vc_var2\":", str(vc$var2), ",",
    "\"vc_vcov\":", num(vc$vcov), ",",
    "\"messages\":", str(if (is.null(msgs)) character(0) else msgs), ",",
    "\"peak_rss_bytes\":", sprintf("%.0f", hwm), ",",
    "\"versions\": {\"R\": \"", R.version.string, "\", \"lme4\": \"", as.character(packageVersion("lme4")), "\"}",
    "}\n", sep = "")
"""


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
        return False, "R package lme4 is not installed: " + proc.stderr.strip()[-200:]
    return True, ""


def r_script(csv: Path, formula: str, factors: list[str]) -> str:
    colclasses = ", ".join(f'{c} = "factor"' for c in factors)
    return (
        R_TEMPLATE.replace("@CSV@", csv.as_posix())
        .replace("@COLCLASSES@", colclasses)
        .replace("@FORMULA@", formula)
    )


# --------------------------------------------------------------------------------------
# Subprocesses with per-process peak memory
# --------------------------------------------------------------------------------------


def vm_hwm(pid: int | str = "self") -> int:
    """Peak resident set size (VmHWM) of a live process in bytes; 0 when unavailable.

    Unlike ``ru_maxrss``, VmHWM belongs to the process's current address space
    only: ``ru_maxrss`` of a forked-and-exec'd child starts at the parent's
    peak, which would hide small peaks under the parent's ~200 MiB.
    """
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def mem_available() -> float:
    """MemAvailable of the machine in bytes (inf when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("inf")


def run_measured(cmd: list[str], timeout: float, workdir: Path, label: str) -> dict:
    """Runs cmd; returns returncode, timed_out, wall seconds, maxrss (bytes), stdout, stderr."""
    out_path = workdir / f"{label}.stdout"
    err_path = workdir / f"{label}.stderr"
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, start_new_session=True)
        timed_out = out_of_memory = False
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid != 0:
                break
            peak = max(peak, vm_hwm(proc.pid))
            if mem_available() < MIN_FREE_MEMORY:
                out_of_memory = True
                os.killpg(proc.pid, signal.SIGKILL)  # the session this call started
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            if time.perf_counter() - t0 > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # the session this call started
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "out_of_memory": out_of_memory,
        "wall_s": time.perf_counter() - t0,
        "polled_hwm_bytes": peak,
        "wait4_maxrss_bytes": usage.ru_maxrss * 1024,  # Linux reports kilobytes
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
    }


def run_python_worker(kind: str, spec: dict, workdir: Path, label: str, timeout: float) -> dict:
    spec_path = workdir / f"{label}.spec.json"
    out_path = workdir / f"{label}.result.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, str(spec_path), str(out_path)]
    run = run_measured(cmd, timeout, workdir, label)
    return _collect(run, out_path.read_text() if out_path.exists() else None, timeout)


def run_lme4(spec: dict, csv: Path, workdir: Path, label: str, timeout: float) -> dict:
    script = workdir / f"{label}.R"
    script.write_text(r_script(csv, spec["formula"], spec["factors"]))
    run = run_measured(["Rscript", str(script)], timeout, workdir, label)
    payload = None
    for line in run["stdout"].splitlines():
        if line.startswith("JSON:"):
            payload = line[len("JSON:") :]
    return _collect(run, payload, timeout)


def _collect(run: dict, payload: str | None, timeout: float) -> dict:
    """The worker's own answer with peak memory: VmHWM read by the worker at its end
    (``peak_rss_bytes`` in the payload), else the last VmHWM polled from outside."""
    base = {
        "maxrss_bytes": run["polled_hwm_bytes"],
        "maxrss_source": "polled VmHWM",
        "wall_s": run["wall_s"],
        "wait4_maxrss_bytes": run["wait4_maxrss_bytes"],
    }
    if run["out_of_memory"]:
        return {
            **base,
            "status": "out of memory",
            "error": f"stopped when the machine had under {MIN_FREE_MEMORY / 2**30:.1f} GiB available "
            f"(process peak {base['maxrss_bytes'] / 2**30:.1f} GiB)",
        }
    if run["timed_out"]:
        return {**base, "status": "timeout", "error": f"did not finish in {timeout / 60:.0f} min"}
    if run["returncode"] != 0 or payload is None:
        tail = (run["stderr"] or run["stdout"]).strip().splitlines()[-15:]
        return {**base, "status": "error", "returncode": run["returncode"], "error": "\n".join(tail)}
    result = {**base, "status": "ok", **json.loads(payload)}
    if result.get("peak_rss_bytes"):
        result["maxrss_bytes"] = max(result["peak_rss_bytes"], base["maxrss_bytes"])
        result["maxrss_source"] = "VmHWM at the end of the process"
    return result


# --------------------------------------------------------------------------------------
# Comparison of estimates
# --------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("(", "").replace(")", "").strip()


def jm_vc_dict(jm: dict) -> dict[tuple[str, str, str], float]:
    return {(_norm(r["grp"]), _norm(r["var1"]), _norm(r["var2"])): r["vcov"] for r in jm["varcorr"]}


def vc_rel_diff(ref: dict, other: dict) -> float:
    """Largest |difference| of matched variances/covariances, each over sqrt(var_i var_j) of ref.

    For variances this is the relative difference; for covariances it is the
    difference on the correlation scale (times the ratio of the SDs). The
    residual variance is one of the entries.
    """
    var = {(g, v1): val for (g, v1, v2), val in ref.items() if not v2}
    worst = 0.0
    matched = 0
    for key, val in ref.items():
        if key not in other:
            continue
        g, v1, v2 = key
        scale = math.sqrt(var.get((g, v1), 0.0) * var.get((g, v2 or v1), 0.0))
        floor = 1e-10 * max(abs(x) for x in ref.values())
        worst = max(worst, abs(other[key] - val) / max(scale, floor))
        matched += 1
    return worst if matched == len(ref) else float("nan")


def rel_diff(a, b) -> float:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return float("nan")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))) if a.size else 0.0


def abs_diff(a, b) -> float:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else float("nan")


def statsmodels_vc(spec: dict, jm: dict, sm: dict) -> dict:
    """statsmodels' variance components keyed like jaxmixed's varcorr rows."""
    out = {("Residual", "", ""): sm["scale"]}
    group = spec["sm"]["groups"]
    if group is not None:
        cols = [r["var1"] for r in jm["varcorr"] if r["grp"] == group and not r["var2"]]
        cov = np.asarray(sm["cov_re"])
        if cov.shape != (len(cols), len(cols)):
            return {}
        for j, cj in enumerate(cols):  # the same column order: intercept, then the formula's
            out[(group, _norm(cj), "")] = cov[j, j]
            for i in range(j + 1, len(cols)):
                out[(group, _norm(cj), _norm(cols[i]))] = cov[i, j]
    for name, value in zip(sm["vcomp_names"], sm["vcomp"], strict=True):
        out[(name, "Intercept", "")] = value
    return out


def lme4_vc(r: dict) -> dict:
    return {
        (_norm(g), _norm(v1), _norm(v2)): val
        for g, v1, v2, val in zip(r["vc_grp"], r["vc_var1"], r["vc_var2"], r["vc_vcov"], strict=True)
    }


def compare(spec: dict, jm: dict, peer: dict, which: str) -> dict:
    """Largest relative differences between jaxmixed's estimates and a peer's (the reference)."""
    if jm.get("status") != "ok" or peer.get("status") != "ok":
        return {}
    peer_vc = statsmodels_vc(spec, jm, peer) if which == "statsmodels" else lme4_vc(peer)
    jm_vc = jm_vc_dict(jm)
    return {
        # Fixed effects matched by position: both use treatment coding in formula order.
        "fixef": rel_diff(jm["fixef"], peer["fixef"]),
        "objective": rel_diff([jm["objective"]], [peer["objective"]]),
        "objective_abs": abs(jm["objective"] - peer["objective"]),
        "varcomp": vc_rel_diff(peer_vc, jm_vc),
        # θ is relative to σ already (unitless) and may be 0 at the boundary: absolute difference.
        "theta_abs": abs_diff(jm["theta"], peer["theta"]) if which == "lme4" else None,
    }


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------


def write_case_data(df: pd.DataFrame, workdir: Path, label: str, need_csv: bool) -> tuple[Path, Path | None]:
    pkl = workdir / f"{label}.pkl"
    df.to_pickle(pkl)
    csv = None
    if need_csv:
        csv = workdir / f"{label}.csv"
        df.to_csv(csv, index=False)  # shortest round-trip repr: R reads the same doubles
    return pkl, csv


def run_tools(
    spec: dict,
    df: pd.DataFrame,
    workdir: Path,
    label: str,
    *,
    run_sm: bool | str,
    run_r: bool | str,
    sm_timeout: float = DEFAULT_TIMEOUT,
) -> dict:
    """Fits one data set with each tool; a str for run_sm/run_r is the reason it was skipped."""
    pkl, csv = write_case_data(df, workdir, label, run_r is True)
    full = {**spec, "data": str(pkl)}
    out: dict = {"n_obs": len(df)}
    log(f"  [{label}] jaxmixed ...")
    out["jaxmixed"] = run_python_worker("jaxmixed", full, workdir, f"{label}-jaxmixed", DEFAULT_TIMEOUT)
    log(f"  [{label}] jaxmixed: {brief(out['jaxmixed'], 'fit_reml_s')}")
    if run_sm is True:
        log(f"  [{label}] statsmodels ...")
        out["statsmodels"] = run_python_worker(
            "statsmodels", full, workdir, f"{label}-statsmodels", sm_timeout
        )
        log(f"  [{label}] statsmodels: {brief(out['statsmodels'], 'fit_s')}")
    else:
        out["statsmodels"] = {"status": "skipped", "error": run_sm or "skipped"}
    if run_r is True:
        log(f"  [{label}] lme4 ...")
        out["lme4"] = run_lme4(full, csv, workdir, f"{label}-lme4", DEFAULT_TIMEOUT)
        log(f"  [{label}] lme4: {brief(out['lme4'], 'fit_s')}")
    else:
        out["lme4"] = {"status": "skipped", "error": run_r or "skipped"}
    for peer in ("statsmodels", "lme4"):
        out[f"vs_{peer}"] = compare(spec, out["jaxmixed"], out[peer], peer)
    for path in (pkl, csv):
        if path is not None:
            path.unlink(missing_ok=True)
    return out


def brief(r: dict, key: str) -> str:
    if r.get("status") != "ok":
        return f"{r.get('status')}: {str(r.get('error', ''))[-300:]}"
    return f"{r[key]:.4g} s, peak RSS {r['maxrss_bytes'] / 2**20:.0f} MiB"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def environment(r_ok: bool, r_note: str) -> dict:
    import jax
    import statsmodels

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "jax": jax.__version__,
        "statsmodels": statsmodels.__version__,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "jaxmixed_dirty": bool(git("status", "--porcelain", "jaxmixed")),
        "lme4": "available" if r_ok else f"skipped: {r_note}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def scaling_sizes(quick: bool) -> list[int]:
    return [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]


def run_scaling(results: dict, args, workdir: Path, r_ok: bool, r_note: str) -> list[dict]:
    """Model (c) at n rows in n/100 groups; peers stop once their extrapolated time passes ~60 s."""
    rows = []
    last = {"statsmodels": None, "lme4": None}  # (n, seconds) of the previous size
    case_c = results["cases"].get("c")
    for n in scaling_sizes(args.quick):
        spec = slopes_spec(n, n // 100)
        reuse = case_c is not None and case_c["spec"]["make"] == spec["make"]
        if reuse:
            log(f"scaling n={n:,}: reusing case (c)")
            out = case_c
        else:
            log(f"scaling n={n:,} ({n // 100:,} groups)")
            decide = {}
            for peer, available in (("statsmodels", True), ("lme4", r_ok)):
                if not available:
                    decide[peer] = r_note
                elif last[peer] is not None and last[peer][1] * n / last[peer][0] > PEER_EXTRAPOLATION_LIMIT:
                    decide[peer] = f"extrapolated time over {PEER_EXTRAPOLATION_LIMIT:.0f} s"
                else:
                    decide[peer] = True
            df = make_data(spec["make"], args.quick)
            out = run_tools(
                spec, df, workdir, f"scale{n}", run_sm=decide["statsmodels"], run_r=decide["lme4"]
            )
        row = {"n": n, "groups": n // 100, "reused_case_c": reuse}
        jm = out["jaxmixed"]
        if jm.get("status") == "ok":
            row.update(
                jaxmixed_first_s=jm["first_call_s"],
                jaxmixed_steady_s=jm["fit_reml_s"],
                jaxmixed_core_s=jm["fit_statistics_s"],
                jaxmixed_onepass_s=jm["model_statistics_s"],
                jaxmixed_maxrss_bytes=jm["maxrss_bytes"],
            )
        for peer in ("statsmodels", "lme4"):
            r = out[peer]
            if r.get("status") == "ok":
                row[f"{peer}_s"] = r["fit_s"]
                row[f"{peer}_maxrss_bytes"] = r["maxrss_bytes"]
                last[peer] = (n, r["fit_s"])
            else:
                row[f"{peer}_note"] = r.get("error", r.get("status"))
        rows.append(row)
    return rows


def plot_scaling(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        ("jaxmixed_first_s", "jaxmixed, first call (with compilation)", "C0", "--", "o"),
        ("jaxmixed_steady_s", "jaxmixed, steady state (fit_reml)", "C0", "-", "o"),
        ("jaxmixed_core_s", "jaxmixed, compiled core fit (core.fit)", "C0", ":", "^"),
        ("jaxmixed_onepass_s", "jaxmixed, one pass over the data (core.model_statistics)", "C2", ":", "v"),
        ("statsmodels_s", "statsmodels MixedLM", "C1", "-", "s"),
        ("lme4_s", "lme4 (lmer)", "C3", "-", "D"),
    ]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for key, label, color, ls, marker in series:
        pts = [(r["n"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), color=color, ls=ls, marker=marker, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows n (groups = n / 100)")
    ax.set_ylabel("fit time (s)")
    ax.set_title("y ~ x1 + x2 + x3 + (x1 | g), REML")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def fmt_rel(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    return f"{x:.1e}"


def fmt_mib(b) -> str:
    return "–" if b is None else f"{b / 2**20:.0f}"


def peer_time(r: dict) -> str:
    if r.get("status") == "ok":
        return fmt_s(r["fit_s"])
    if r.get("status") == "timeout":
        return r["error"]
    if r.get("status") == "skipped":
        return "skipped"
    return "failed"


def ratio(r: dict, jm: dict) -> str:
    if r.get("status") != "ok" or jm.get("status") != "ok":
        return "–"
    return f"{r['fit_s'] / jm['fit_reml_s']:.1f}×"


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# jaxmixed benchmarks",
        "",
        f"{env['date']}; {env['platform']}, {env['cpu_count']} CPUs; Python {env['python']}, "
        f"jax {env['jax']}, statsmodels {env['statsmodels']}; lme4: {results.get('lme4_versions') or env['lme4']}; "
        f"jaxmixed at {env['git_commit']}{' (working tree modified)' if env['jaxmixed_dirty'] else ''}.",
        "",
        f"Command: `{env['command']}`",
        "",
        "## Fit time (seconds, REML)",
        "",
        "jaxmixed: (i) first call in a fresh process, compilation included; (ii) steady state of the "
        "whole `fit_reml` call (median of repeats); (iii) the compiled core fit `core.fit` alone, on "
        "precomputed statistics; (iv) the one pass over the data, `core.model_statistics`. "
        "Peers: one fit (median of up to 5 when a fit takes under a second); ratio = peer / jaxmixed (ii).",
        "",
        "| case | rows | (i) first call | (ii) fit_reml | (iii) core.fit | (iv) model_statistics "
        "| (ii) / (iv) | iterations | statsmodels | statsmodels / (ii) | lme4 | lme4 / (ii) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cases = results["cases"]
    for key, c in cases.items():
        jm = c["jaxmixed"]
        name = f"({key}) {c['spec']['title']}"
        if jm.get("status") != "ok":
            lines.append(
                f"| {name} | {c['n_obs']:,} | jaxmixed {jm.get('status')} | | | | | | "
                f"{peer_time(c['statsmodels'])} | | {peer_time(c['lme4'])} | |"
            )
            continue
        lines.append(
            f"| {name} | {c['n_obs']:,} | {fmt_s(jm['first_call_s'])} | {fmt_s(jm['fit_reml_s'])} "
            f"| {fmt_s(jm['fit_statistics_s'])} | {fmt_s(jm['model_statistics_s'])} "
            f"| {jm['fit_reml_s'] / jm['model_statistics_s']:.1f}× | {jm['n_iter']} "
            f"| {peer_time(c['statsmodels'])} | {ratio(c['statsmodels'], jm)} "
            f"| {peer_time(c['lme4'])} | {ratio(c['lme4'], jm)} |"
        )
    lines += [
        "",
        "### Where the steady-state time of jaxmixed goes (median seconds)",
        "",
        "| case | (ii) fit_reml | build_design | (iv) model_statistics | (iii) core.fit "
        "| rest (results, SEs, BLUPs) | (ii) − (iv) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, c in cases.items():
        jm = c["jaxmixed"]
        if jm.get("status") != "ok":
            continue
        rest = jm["fit_reml_s"] - jm["build_design_s"] - jm["model_statistics_s"] - jm["fit_statistics_s"]
        lines.append(
            f"| ({key}) | {fmt_s(jm['fit_reml_s'])} | {fmt_s(jm['build_design_s'])} "
            f"| {fmt_s(jm['model_statistics_s'])} | {fmt_s(jm['fit_statistics_s'])} | {fmt_s(max(rest, 0.0))} "
            f"| {fmt_s(jm['fit_reml_s'] - jm['model_statistics_s'])} |"
        )
    lines += [
        "",
        "## Agreement of the estimates (largest relative difference, peer as reference)",
        "",
        "fixef: fixed effects; objective: REML criterion (statsmodels: −2·llf); variance "
        "components: covariance entries incl. the residual variance, each difference divided by "
        "sqrt(var_i·var_j) of the peer; lme4 θ: largest absolute difference of lme4's θ (relative to σ already).",
        "",
        "| case | sm fixef | sm objective | sm var. comp. | lme4 fixef | lme4 objective | lme4 var. comp. "
        "| lme4 θ (abs.) | jaxmixed objective | converged |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, c in cases.items():
        sm, r4, jm = c["vs_statsmodels"], c["vs_lme4"], c["jaxmixed"]
        obj = f"{jm['objective']:.6f}" if jm.get("status") == "ok" else "–"
        conv = (
            ", ".join(
                f"{t}: {'yes' if c[t].get('converged', not c[t].get('messages')) else 'no'}"
                for t in ("jaxmixed", "statsmodels", "lme4")
                if c[t].get("status") == "ok"
            )
            or "–"
        )
        lines.append(
            f"| ({key}) | {fmt_rel(sm.get('fixef'))} | {fmt_rel(sm.get('objective'))} "
            f"| {fmt_rel(sm.get('varcomp'))} | {fmt_rel(r4.get('fixef'))} | {fmt_rel(r4.get('objective'))} "
            f"| {fmt_rel(r4.get('varcomp'))} | {fmt_rel(r4.get('theta_abs'))} | {obj} | {conv} |"
        )
    lines += [
        "",
        "## Peak memory (maximum resident set size of the fitting subprocess, MiB)",
        "",
        "| case | jaxmixed | statsmodels | lme4 (Rscript) |",
        "|---|---:|---:|---:|",
    ]
    for key, c in cases.items():
        cells = [
            fmt_mib(c[t].get("maxrss_bytes")) if c[t].get("status") != "skipped" else "–"
            for t in ("jaxmixed", "statsmodels", "lme4")
        ]
        lines.append(f"| ({key}) | " + " | ".join(cells) + " |")
    notes = []
    for key, c in cases.items():
        for tool in ("jaxmixed", "statsmodels", "lme4"):
            r = c[tool]
            if r.get("status") not in ("ok", "skipped"):
                notes.append(f"- ({key}) {tool}: {r.get('status')}: {str(r.get('error', '')).strip()[-400:]}")
            elif r.get("status") == "skipped" and r.get("error") not in (None, "skipped"):
                notes.append(f"- ({key}) {tool} skipped: {r['error']}")
            for w in r.get("warnings", []) + r.get("messages", []):
                notes.append(f"- ({key}) {tool} warned: {w}")
    if notes:
        lines += ["", "## Notes", "", *dict.fromkeys(notes)]
    if results.get("scaling"):
        lines += [
            "",
            "## Scaling: `y ~ x1 + x2 + x3 + (x1 | g)`, n rows in n/100 groups (seconds)",
            "",
            "| n | jaxmixed first call | jaxmixed steady | core.fit | model_statistics "
            "| statsmodels | lme4 | jaxmixed peak RSS (MiB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results["scaling"]:
            sm = fmt_s(r["statsmodels_s"]) if "statsmodels_s" in r else short_note(r.get("statsmodels_note"))
            r4 = fmt_s(r["lme4_s"]) if "lme4_s" in r else short_note(r.get("lme4_note"))
            lines.append(
                f"| {r['n']:,} | {fmt_s(r.get('jaxmixed_first_s'))} | {fmt_s(r.get('jaxmixed_steady_s'))} "
                f"| {fmt_s(r.get('jaxmixed_core_s'))} | {fmt_s(r.get('jaxmixed_onepass_s'))} | {sm} | {r4} "
                f"| {fmt_mib(r.get('jaxmixed_maxrss_bytes'))} |"
            )
        if results.get("scaling_plot"):
            lines += ["", f"![scaling]({results['scaling_plot']})"]
    return "\n".join(lines) + "\n"


def short_note(note) -> str:
    if not note:
        return "–"
    note = str(note)
    return note if len(note) < 60 and "\n" not in note else "failed (see latest.json)"


def save(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    (RESULTS / "latest.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--no-plot", action="store_true", help="skip the scaling runs and plot")
    parser.add_argument(
        "--skip-insteval-statsmodels",
        action="store_true",
        help="do not run statsmodels on InstEval (it may not finish in 15 minutes)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(*args.worker)
        return 0

    specs = case_specs(args.quick)
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(wanted) - set(specs)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from a,b,c,d")

    r_ok, r_note = lme4_available()
    if not r_ok:
        print(f"note: lme4 is skipped ({r_note})", flush=True)
    results: dict = {"environment": environment(r_ok, r_note), "quick": args.quick, "cases": {}}

    with tempfile.TemporaryDirectory(prefix="jaxmixed-bench-") as tmp:
        workdir = Path(tmp)
        for key in wanted:
            spec = specs[key]
            log(f"case ({key}) {spec['title']}")
            df = make_data(spec["make"], args.quick)
            run_sm: bool | str = True
            sm_timeout = DEFAULT_TIMEOUT
            if key == "d":
                sm_timeout = INSTEVAL_SM_TIMEOUT
                if args.skip_insteval_statsmodels:
                    run_sm = "--skip-insteval-statsmodels"
            out = run_tools(
                spec, df, workdir, key, run_sm=run_sm, run_r=True if r_ok else r_note, sm_timeout=sm_timeout
            )
            out["spec"] = spec
            results["cases"][key] = out
            if out["lme4"].get("status") == "ok":
                results["lme4_versions"] = out["lme4"]["versions"]
            save(results)
        if not args.no_plot:
            results["scaling"] = run_scaling(results, args, workdir, r_ok, r_note)
            plot_scaling(results["scaling"], RESULTS / "scaling.png")
            results["scaling_plot"] = "scaling.png"
    save(results)
    print(markdown(results), flush=True)
    log(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
