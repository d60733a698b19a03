"""Genomics scale: 20,000 responses x 500 samples, two crossed factors; lme4 on the first 200.

``fit_reml_many`` with an (n, K) matrix of responses in a fresh process: time
and peak memory; lme4 on the first responses, extrapolated, and their
objectives compared.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import _common as bench
from . import common

SEED = 20250402
FORMULA = "y ~ x + (1 | individual) + (1 | batch)"


def genomics_design() -> pd.DataFrame:
    """100 individuals x 5 samples; sample s of individual i in batch (i + 2s) mod 10."""
    rng = np.random.default_rng([SEED, 0])
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


def _log_uniform_or_zero(rng: np.random.Generator, low: float, high: float) -> float:
    """0 with probability 0.1, else log-uniform in [low, high]."""
    return 0.0 if rng.random() < 0.1 else math.exp(rng.uniform(math.log(low), math.log(high)))


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
        rng = np.random.default_rng([SEED, 1 + draw, j])
        b0, b1 = rng.normal(5.0, 2.0), rng.normal(0.0, 0.5)
        sigma = rng.uniform(0.3, 2.0)
        r_ind = _log_uniform_or_zero(rng, 0.02, 4.0)
        r_bat = _log_uniform_or_zero(rng, 0.01, 1.0)
        u = rng.standard_normal(ind.max() + 1) * sigma * math.sqrt(r_ind)
        v = rng.standard_normal(bat.max() + 1) * sigma * math.sqrt(r_bat)
        out[:, col] = b0 + b1 * x + u[ind] + v[bat] + sigma * rng.standard_normal(n)
    return out


def worker_genomics_jaxmixed(spec: dict) -> dict:
    """``fit_reml_many`` on k responses: first call and peak memory, then one steady call."""
    out = common.start_jax()
    import jaxmixed as jm

    design = genomics_design()
    k = spec["k"]
    out["simulate_s"], ys = bench.timed(genomics_responses, design, k, 0)
    with bench.caught_warnings() as caught:
        out["first_s"], tab = bench.timed(jm.fit_reml_many, FORMULA, design, responses=ys, verbose=False)
        out["memory_after_first"] = bench.peak_memory()
        if spec.get("steady", True):
            ys = genomics_responses(design, k, 1)
            out["steady_s"], _ = bench.timed(jm.fit_reml_many, FORMULA, design, responses=ys, verbose=False)
    out["warnings"] = bench.warning_lines(caught, 200)
    summary = common.table_summary(tab)
    out["objective_head"] = summary.pop("objective")[: spec["n_check"]]
    out["singular_head"] = summary.pop("singular")[: spec["n_check"]]
    out["n_singular"] = int(tab["singular"].sum())
    out["n_converged"] = int(summary.pop("converged").count(True))
    out["n_fits"] = len(tab)
    return {**out, **summary, "memory": bench.peak_memory(), "versions": common.versions()}


def _about(k: int, k_r: int) -> str:
    return (
        f"`{FORMULA}`: 100 individuals x 5 samples; sample s of individual i in batch (i + 2s) mod 10 "
        "(10 batches of 50, each individual in 5 batches). Responses: intercept ~ N(5, 2), slope ~ N(0, 0.5), "
        "residual SD 0.3–2, variance ratios individual/residual log-uniform in [0.02, 4] and batch/residual in "
        "[0.01, 1], each exactly 0 for about 10%. `jm.fit_reml_many(formula, covariates, responses=Y)` with Y "
        "an (n, K) matrix, in a fresh process: first call (compilation included; import and backend start-up "
        "excluded), then a second call with new responses (steady). Peak memory of that process "
        "(VmHWM; `ru_maxrss` alongside) after the first call, data included. lme4: a fresh `lmer` per response "
        f"on the first {k_r} responses, extrapolated linearly to {k:,}."
    )


def _run_lme4(ctx: common.Context, k: int, k_r: int):
    """lme4 on the first k_r responses: (per-response table, info, error), all None without lme4."""
    if not ctx.r_ok:
        return None, None, None
    bench.log(f"  lme4 on the first {k_r} responses ...")
    design = genomics_design()
    ys = genomics_responses(design, k_r, 0)
    lme, info, err = common.lme4_fits(ctx, "genomics", design, ys, FORMULA, ["individual", "batch"])
    bench.log(
        err
        or f"  lme4: {info['total_s']:.2f} s for {k_r} fits -> {info['total_s'] * k / k_r:.0f} s for {k:,}"
    )
    return lme, info, err


def _time_table(jm: dict, k: int, k_r: int, lme_info: dict | None) -> list[str]:
    mem = jm["memory_after_first"]
    memory = (
        f"{bench.fmt_mib(mem['vmhwm'], unit=True)} (ru_maxrss {bench.fmt_mib(mem['ru_maxrss'], unit=True)})"
    )
    rows = [
        ["jaxmixed, first call", bench.fmt_s(jm["first_s"]), f"{1e3 * jm['first_s'] / k:.2f}", memory, "–"]
    ]
    if "steady_s" in jm:
        rows.append(
            ["jaxmixed, steady", bench.fmt_s(jm["steady_s"]), f"{1e3 * jm['steady_s'] / k:.2f}", "–", "–"]
        )
    if lme_info:
        t = lme_info["total_s"] * k / k_r
        ratios = (
            f"{bench.fmt_ratio(t, jm['first_s'])} (first), {bench.fmt_ratio(t, jm.get('steady_s'))} (steady)"
        )
        rows.append(
            [
                f"lme4, {k_r} fits × {k // k_r} (extrapolated)",
                bench.fmt_s(t),
                f"{1e3 * t / k:.1f}",
                "–",
                ratios,
            ]
        )
    summary = (
        f"Target: first call {common.target(jm['first_s'], 60.0)}. Simulating the responses (numpy, not counted): "
        f"{bench.fmt_s(jm['simulate_s'])} s. {jm['n_converged']:,}/{jm['n_fits']:,} converged, {jm['n_singular']:,} "
        f"singular; {common.iterations(jm)}; messages {jm['messages']}."
    )
    columns = "tool | seconds | per response (ms) | peak memory | lme4 / jaxmixed"
    return common.results_block(columns, rows, summary, jm["warnings"])


def _lme4_check(jm: dict, lme: pd.DataFrame, k_r: int) -> list[str]:
    chk = common.lme4_check(jm["objective_head"], jm["singular_head"], lme)
    bench.log(
        f"  vs lme4: jaxmixed worse in {chk['jm_worse']}/{chk['compared']}, max |rel| {chk['max_abs_rel']:.1e}, "
        f"singular agree {chk['singular_agree']}/{k_r}"
    )
    return [
        f"Optimum check on the first {k_r} responses against lme4: jaxmixed's objective above lme4's by "
        f"more than {common.REL_TOL:g} (relative): **{chk['jm_worse']}**; below: {chk['jm_better']}; largest "
        f"|relative difference| {chk['max_abs_rel']:.1e}; singular flags agree on {chk['singular_agree']}/{k_r} "
        f"(jaxmixed {chk['jm_singular']}, lme4 {chk['lme4_singular']} singular); lme4 fits with convergence "
        f"warnings (other than the singular-fit note): {chk['lme4_warned']}.",
        "",
    ]


def case_genomics(ctx: common.Context) -> list[str]:
    """The genomics section of many.md: jaxmixed on every response, lme4 on the first ones."""
    k, k_r = ctx.sz["gen_k"], ctx.sz["gen_lme4"]
    bench.log(f"\n== Genomics: {k:,} responses x 500 samples, {FORMULA}")
    jm, err = common.run_worker("genomics_jaxmixed", {"k": k, "n_check": k_r}, ctx)
    if err:
        bench.log(err)
    else:
        mem = jm["memory_after_first"]
        bench.log(
            f"  jaxmixed: first call {jm['first_s']:.2f} s, steady {jm.get('steady_s', float('nan')):.2f} s, "
            f"peak VmHWM {bench.fmt_mib(mem['vmhwm'], unit=True)}, ru_maxrss {bench.fmt_mib(mem['ru_maxrss'], unit=True)}"
        )
    lme, lme_info, lme_err = _run_lme4(ctx, k, k_r)
    title = f"## Genomics: {k:,} responses x 500 samples, two crossed factors"
    lines = common.section_head(title, ctx, jm, _about(k, k_r))
    if err:
        return lines + common.failed("jaxmixed", err)
    lines += _time_table(jm, k, k_r, lme_info)
    return lines + (
        _lme4_check(jm, lme, k_r) if lme is not None else [f"lme4 not run: {lme_err or ctx.r_note}", ""]
    )


WORKERS = {"genomics_jaxmixed": worker_genomics_jaxmixed}
