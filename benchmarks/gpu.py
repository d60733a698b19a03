"""``python -m benchmarks --suite gpu``: jaxmixed on one accelerator, timed, its results
checked against stored CPU results.

One process, one device (the default backend's first). Each case is timed as its first
call (compilation included, the disk caches off) and the median of three more; the fits
with a stored CPU result (``results/gpu_reference.json``) report how far they are from
it, float64 against the CPU's float64 and float32 against the CPU's float32 (the
library's products run at HIGHEST precision: JAX's TF32 default on NVIDIA GPUs put
sleepstudy's float32 criterion 1.2e-4 off). Under three minutes on one H100.

    python -m benchmarks --suite gpu                    # on the GPU machine
    python -m benchmarks --suite gpu --write-reference  # on a CPU: store the reference
    python -m benchmarks --suite gpu --quick            # small sizes (a smoke run)

Cases: sleepstudy (float64, float32); 1,000,000 rows ``y ~ x1 + x2 + x3 + (x1 | g)``
in 10,000 groups (float64, float32); InstEval's crossed model; the mixedML model;
20,000 responses of 500 rows with crossed factors by ``fit_reml_many`` with its
default chunks; 10,000 bootstrap replicates of sleepstudy.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import RESULTS, fmt_rel, fmt_s, log, md_table, no_compilation_cache, timed, write_results
from .cases import SLOPES_FORMULA, XS10, load_insteval, reference_model, simulate_mixedml, simulate_slopes

REFERENCE = RESULTS / "gpu_reference.json"
SLEEP = "Reaction ~ Days + (Days | Subject)"
MANY = "y ~ x + (1 | individual) + (1 | batch)"


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"rows": 100_000, "groups": 1_000, "responses": 2_000, "replicates": 1_000, "clusters": 50}
    return {"rows": 1_000_000, "groups": 10_000, "responses": 20_000, "replicates": 10_000, "clusters": 200}


def many_data(n_responses: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """500 rows: 100 individuals × 5, crossed with 25 batches; ``n_responses`` responses
    simulated from ``y ~ x + (1 | individual) + (1 | batch)`` (sds 1, 0.5; residual 1)."""
    rng = np.random.default_rng(seed)
    individual = np.repeat(np.arange(100), 5)
    batch = rng.integers(0, 25, 500)
    x = rng.standard_normal(500)
    frame = pd.DataFrame({"x": x, "individual": individual.astype(str), "batch": batch.astype(str)})
    b_i = rng.standard_normal((n_responses, 100))[:, individual]
    b_b = 0.5 * rng.standard_normal((n_responses, 25))[:, batch]
    ys = 1.0 + 0.5 * x + b_i + b_b + rng.standard_normal((n_responses, 500))
    frame["y"] = ys[0]
    return frame, ys.T


def _summary(fit) -> dict:
    return {
        "objective": float(fit.objective),
        "theta": np.asarray(fit.fit_result.theta, float).tolist(),
        "beta": np.asarray(fit.fixed_effects, float).tolist(),
        "converged": bool(fit.converged),
    }


def _agreement(mine: dict, ref: dict | None) -> dict:
    """Relative criterion difference, largest θ difference, largest relative β difference."""
    if ref is None:
        return {}
    beta, ref_beta = np.asarray(mine["beta"]), np.asarray(ref["beta"])
    return {
        "objective_rel": abs(mine["objective"] - ref["objective"]) / abs(ref["objective"]),
        "theta_abs": float(np.max(np.abs(np.asarray(mine["theta"]) - np.asarray(ref["theta"])))),
        "beta_rel": float(np.max(np.abs(beta - ref_beta) / np.maximum(np.abs(ref_beta), 1e-12))),
    }


def _timed_case(call: Callable[[], object], repeats: int = 3) -> tuple[float, float, object]:
    """(first call, median of ``repeats`` more, the last result)."""
    first, out = timed(call)
    times = []
    for _ in range(repeats):
        t, out = timed(call)
        times.append(t)
    return first, statistics.median(times), out


def fit_cases(quick: bool) -> dict[str, Callable[[], object]]:
    """The fits whose results are compared with the CPU's: name → a call returning the fit."""
    import jax.numpy as jnp

    import jaxmixed as jm

    n = _sizes(quick)
    sleep = jm.load_dataset("sleepstudy")
    slopes = simulate_slopes(n["rows"], n["groups"], seed=0)
    insteval = load_insteval(quick)
    mixedml = simulate_mixedml(n["clusters"], seed=0)
    xs = " + ".join(XS10)
    mixedml_formula = f"y ~ {xs} + w1 + w2 + w3 + ({xs} | g)"
    return {
        "sleepstudy float64": lambda: jm.fit_reml(SLEEP, sleep),
        "sleepstudy float32": lambda: jm.fit_reml(SLEEP, sleep, dtype=jnp.float32),
        f"{n['rows']:,} rows float64": lambda: jm.fit_reml(SLOPES_FORMULA, slopes),
        f"{n['rows']:,} rows float32": lambda: jm.fit_reml(SLOPES_FORMULA, slopes, dtype=jnp.float32),
        "InstEval float64": lambda: jm.fit_reml(reference_model("insteval_crossed_reml").formula, insteval),
        "mixedML float64": lambda: jm.fit_reml(mixedml_formula, mixedml),
    }


def batch_cases(quick: bool) -> dict[str, Callable[[], object]]:
    """Many fits as one computation, with the default chunks: name → a call."""
    import jaxmixed as jm

    n = _sizes(quick)
    frame, ys = many_data(n["responses"])
    sleep = jm.fit_reml(SLEEP, jm.load_dataset("sleepstudy"))
    return {
        f"fit_reml_many, {n['responses']:,} responses × 500 rows": lambda: jm.fit_reml_many(
            MANY, frame, ys, verbose=False
        ),
        f"bootstrap, {n['replicates']:,} replicates of sleepstudy": lambda: sleep.bootstrap(
            n["replicates"], key=0, verbose=False
        ),
    }


def write_reference(quick: bool, path: Path = REFERENCE) -> int:
    """Runs the fit cases here (a CPU) and stores their results."""
    import jax

    if jax.default_backend() != "cpu":
        log(f"the reference is the CPU's; this process runs on {jax.default_backend()}")
        return 2
    ref = {name: _summary(call()) for name, call in fit_cases(quick).items()}
    ref["_about"] = {"quick": quick, "jax": jax.__version__, "machine": platform.platform()}
    path.write_text(json.dumps(ref, indent=1) + "\n")
    log(f"wrote {path}")
    return 0


def run_gpu(quick: bool, results_dir: Path = RESULTS) -> int:
    """Every case on the default device; writes ``gpu.md`` and ``gpu.json``."""
    no_compilation_cache()
    import jax

    import jaxmixed as jm

    ref = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
    if ref.get("_about", {}).get("quick", quick) != quick:
        ref = {}  # stored at other sizes: nothing to compare
    device = jax.devices()[0]
    results: dict = {"device": str(device.device_kind), "backend": jax.default_backend(), "cases": {}}
    for name, call in fit_cases(quick).items():
        first, steady, fit = _timed_case(call)
        mine = _summary(fit)
        row = {"first_s": first, "steady_s": steady, **mine, **_agreement(mine, ref.get(name))}
        results["cases"][name] = row
        log(f"{name}: first {fmt_s(first)} s, steady {fmt_s(steady)} s, objective {mine['objective']:.10g}")
    for name, call in batch_cases(quick).items():
        try:
            first, steady, out = _timed_case(call, repeats=1)
            converged = float(np.mean(np.asarray(out.converged, bool)))
            results["cases"][name] = {"first_s": first, "steady_s": steady, "converged_share": converged}
        except Exception as exc:  # a failure is a result here (the chunk that does not fit)
            results["cases"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        log(f"{name}: {results['cases'][name]}")
    text = report(results, jm.__version__, jax.__version__)
    write_results(results_dir, "gpu", results, text)
    print(text)
    return 0


def report(results: dict, version: str, jax_version: str) -> str:
    rows = []
    for name, r in results["cases"].items():
        if "error" in r:
            rows.append([name, "–", "–", "–", "–", r["error"][:80]])
            continue
        rows.append(
            [
                name,
                fmt_s(r["first_s"]),
                fmt_s(r["steady_s"]),
                fmt_rel(r.get("objective_rel")),
                fmt_rel(r.get("theta_abs")),
                "yes" if r.get("converged", r.get("converged_share", 0) == 1.0) else "no",
            ]
        )
    lines = [
        f"# jaxmixed on {results['device']} ({results['backend']})",
        "",
        f"jaxmixed {version}, jax {jax_version}. Seconds: the first call (compilation included, disk "
        "caches off) and the median of three more (one for the batches). Agreement: against the "
        "CPU's results of the same dtype (`gpu_reference.json`): the criterion's relative "
        "difference and the largest absolute difference of θ.",
        "",
        *md_table("case | first | steady | criterion vs CPU | θ vs CPU | converged", rows),
        "",
    ]
    return "\n".join(lines)
