"""W4: many responses over one design (40 subjects x 8 observations), against lme4 and statsmodels.

``fit_reml_many`` on every response in a fresh process (first call, then
steady calls with new responses); every response also fitted by a fresh
``lmer`` and a fresh statsmodels ``MixedLM``, whose REML criteria are compared
with jaxmixed's.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pandas as pd

from .. import _common as bench
from . import common

SEED = 20250401
FORMULA = "y ~ x1 + x2 + (1 | subject)"


def w4_design() -> pd.DataFrame:
    """40 subjects x 8 observations; x1 per observation, x2 per subject."""
    rng = np.random.default_rng([SEED, 0])
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
        rng = np.random.default_rng([SEED, 1 + draw, j])
        beta = rng.normal([10.0, 1.0, -0.5], 1.0)
        sigma = rng.uniform(0.5, 2.0)
        ratio = 0.0 if rng.random() < 0.1 else math.exp(rng.uniform(math.log(0.05), math.log(5.0)))
        b = rng.standard_normal(codes.max() + 1) * sigma * math.sqrt(ratio)
        out[:, j] = x @ beta + b[codes] + sigma * rng.standard_normal(len(design))
    return out


def worker_w4_jaxmixed(spec: dict) -> dict:
    """``fit_reml_many`` on k responses: the first call, then one steady call per new draw."""
    out = common.start_jax()
    import jaxmixed as jm

    design = w4_design()
    k = spec["k"]
    names = [f"r_{j}" for j in range(k)]

    def fit(draw: int):
        df = pd.concat([design, pd.DataFrame(w4_responses(design, k, draw), columns=names)], axis=1)
        return bench.timed(jm.fit_reml_many, FORMULA, df, responses=names, verbose=False)

    with bench.caught_warnings() as caught:
        out["first_s"], tab = fit(0)
        out["memory_after_first"] = bench.peak_memory()
        steady = [fit(draw)[0] for draw in range(1, 1 + spec["steady"])]
    out["steady_times"] = steady
    out["steady_s"] = statistics.median(steady)
    out["warnings"] = bench.warning_lines(caught, 200)
    return {**out, **common.table_summary(tab), "versions": common.versions()}


def _statsmodels_fit(d: pd.DataFrame) -> dict:
    """One fresh MixedLM fit: seconds, the result (None when it raised), the optimiser that gave it."""
    import statsmodels.formula.api as smf

    with bench.caught_warnings() as caught:
        t0 = time.perf_counter()
        try:  # default method list: bfgs, then lbfgs, then cg
            res = smf.mixedlm("y ~ x1 + x2", d, groups="subject").fit(reml=True)
        except Exception:  # noqa: BLE001 - a failed fit counts as one
            res = None
        seconds = time.perf_counter() - t0
    retries = sum("Retrying MixedLM optimization" in str(w.message) for w in caught)
    method = "error" if res is None else ("bfgs", "lbfgs", "cg")[min(retries, 2)]
    return {"s": seconds, "res": res, "method": method, "warned": bool(caught)}


def worker_w4_statsmodels(spec: dict) -> dict:
    """A fresh statsmodels MixedLM per response: times, REML criteria (−2·llf), optimisers."""
    import statsmodels

    design = w4_design()
    ys = w4_responses(design, spec["k"], 0)
    fits = [_statsmodels_fit(design.assign(y=ys[:, j])) for j in range(spec["k"])]
    methods = [f["method"] for f in fits]
    return {
        "total_s": float(sum(f["s"] for f in fits)),
        "times": [f["s"] for f in fits],
        "objective": [float("nan") if f["res"] is None else -2.0 * float(f["res"].llf) for f in fits],
        "converged": [f["res"] is not None and bool(getattr(f["res"], "converged", True)) for f in fits],
        "methods": {m: methods.count(m) for m in sorted(set(methods))},
        "errors": methods.count("error"),
        "n_warned": sum(f["warned"] for f in fits),
        "memory": bench.peak_memory(),
        "versions": {"statsmodels": statsmodels.__version__},
    }


def _about(k: int) -> str:
    return (
        f"`{FORMULA}`: 40 subjects x 8 observations (x1 per observation, x2 per subject), "
        f"{k:,} responses, each with its own coefficients, residual SD and subject/residual variance ratio "
        "(log-uniform in [0.05, 5], exactly 0 for about 10%). `jm.fit_reml_many(formula, df, "
        "responses=[...])`: first call in a fresh process (compilation included; importing jaxmixed and "
        "JAX's backend start-up excluded), steady = median of further calls with new responses, same shapes. "
        "lme4: a fresh `lmer(REML = TRUE)` per response (model construction plus fit, summed). "
        "statsmodels: a fresh `smf.mixedlm(...).fit(reml=True)` per response (its default optimiser list: "
        "bfgs, then lbfgs, then cg)."
    )


def _run_statsmodels(ctx: common.Context, k: int):
    """statsmodels on the first responses (none with --no-statsmodels): (how many, answer, error)."""
    k_sm = min(ctx.sz["w4_sm"], k) if ctx.args.statsmodels else 0
    if not k_sm:
        return 0, None, None
    bench.log(f"  statsmodels on {k_sm:,} responses ...")
    sm, err = common.run_worker("w4_statsmodels", {"k": k_sm}, ctx)
    bench.log(err or f"  statsmodels: {sm['total_s']:.2f} s for {k_sm} fits, methods {sm['methods']}")
    return k_sm, sm, err


def _run_lme4(ctx: common.Context, k: int):
    """A fresh lmer per response: (per-response table, info, error), all None without lme4."""
    if not ctx.r_ok:
        return None, None, None
    bench.log(f"  lme4 on {k:,} responses ...")
    design = w4_design()
    lme, info, err = common.lme4_fits(ctx, "w4", design, w4_responses(design, k, 0), FORMULA, ["subject"])
    bench.log(err or f"  lme4: {info['total_s']:.2f} s for {k} fresh lmer fits")
    return lme, info, err


def _time_table(jm: dict, k: int, lme_info: dict | None, sm: dict | None, k_sm: int) -> list[str]:
    first, steady = jm["first_s"], jm["steady_s"]
    rows = [
        ["jaxmixed, first call", bench.fmt_s(first), f"{1e3 * first / k:.2f}", "1", "–"],
        ["jaxmixed, steady", bench.fmt_s(steady), f"{1e3 * steady / k:.3f}", "–", "1"],
    ]
    peers = [("lme4", lme_info["total_s"])] if lme_info else []
    if sm:
        peers.append(
            (f"statsmodels{'' if k_sm == k else f' (extrapolated from {k_sm})'}", sm["total_s"] * k / k_sm)
        )
    rows += [
        [name, bench.fmt_s(t), f"{1e3 * t / k:.1f}", bench.fmt_ratio(t, first), bench.fmt_ratio(t, steady)]
        for name, t in peers
    ]
    columns = ["tool", "seconds, all responses", "per response (ms)", "ratio to jaxmixed first"]
    summary = (
        f"Targets: first call {common.target(first, 2.0)}; steady {common.target(steady, 0.1)}. "
        f"jaxmixed: import {jm['import_s']:.2f} s, backend start {jm['backend_s']:.2f} s (not counted); "
        f"{common.iterations(jm)}; {jm['converged'].count(True):,}/{k:,} converged; messages {jm['messages']}; "
        f"peak memory {bench.fmt_mib(jm['memory_after_first']['vmhwm'], unit=True)} after the first call."
    )
    return common.results_block([*columns, "ratio to jaxmixed steady"], rows, summary, jm["warnings"])


def _lme4_check(jm: dict, lme: pd.DataFrame, k: int) -> list[str]:
    chk = common.lme4_check(jm["objective"], jm["singular"], lme)
    missing = f", {chk['missing']} missing (a failed fit)" if chk["missing"] else ""
    singular = f"jaxmixed {chk['jm_singular']}, lme4 {chk['lme4_singular']}"
    bench.log(
        f"  vs lme4: jaxmixed worse in {chk['jm_worse']} / {chk['compared']}, better in {chk['jm_better']}, "
        f"max |rel| {chk['max_abs_rel']:.1e}; singular agree {chk['singular_agree']}/{k} ({singular})"
    )
    return [
        f"Against lme4 (a fresh `lmer` per response; REML criterion `REMLcrit`, `isSingular` "
        f"with its default tolerance 1e-4), {chk['compared']:,} responses compared{missing}:",
        "",
        f"- jaxmixed's objective above lme4's by more than {common.REL_TOL:g} (relative): "
        f"**{chk['jm_worse']}** (should be 0); below lme4's by more than {common.REL_TOL:g}: {chk['jm_better']}.",
        f"- largest relative difference |jaxmixed − lme4| / |lme4|: {chk['max_abs_rel']:.1e} "
        f"(largest excess of jaxmixed: {chk['max_worse_rel']:.1e}, response r_{chk['worst']}).",
        f"- singular flags agree on {chk['singular_agree']:,}/{k:,}; flagged singular: {singular}; "
        f"about {round(0.1 * k)} were simulated with no subject variance.",
        f"- lme4 fits with convergence warnings (other than the singular-fit note): {chk['lme4_warned']}.",
        "",
    ]


def _constants(sm_obj: np.ndarray, lme: pd.DataFrame | None, jm_obj: np.ndarray) -> str:
    """statsmodels' −2·llf, lme4's REMLcrit and jaxmixed's objective on response r_0: the same criterion."""
    if lme is None or not np.isfinite(sm_obj[0]):
        return ""
    r0 = float(lme["objective"].iloc[0])
    return (
        f"Constants: on response r_0, statsmodels' −2·llf = {sm_obj[0]:.10g}, lme4's REMLcrit = "
        f"{r0:.10g}, jaxmixed's objective = {jm_obj[0]:.10g} (relative difference statsmodels − lme4 "
        f"{(sm_obj[0] - r0) / abs(r0):.1e}): −2·llf of statsmodels' REML fit is the same criterion "
        "as lme4's REMLcrit (a different constant would differ by O(n))."
    )


def _statsmodels_check(jm: dict, sm: dict, lme: pd.DataFrame | None, k: int, k_sm: int) -> list[str]:
    sm_obj = np.asarray(sm["objective"], float)
    jm_obj = np.asarray(jm["objective"][:k_sm], float)
    rel = (sm_obj - jm_obj) / np.abs(jm_obj)
    worse = np.isfinite(rel) & (rel > common.REL_TOL)
    conv = np.asarray(sm["converged"], bool)
    const = _constants(sm_obj, lme, jm_obj)
    bench.log(
        f"  statsmodels: worse than jaxmixed in {int(worse.sum())}/{k_sm} "
        f"({int((worse & conv).sum())} of them 'converged'); {const[:160]}"
    )
    return [
        f"statsmodels ({k_sm:,} responses{'' if k_sm == k else ', a subset'}; REML criterion = −2·llf):",
        "",
        f"- worse than jaxmixed's optimum by more than {common.REL_TOL:g} (relative): **{int(worse.sum())}**, "
        f"of which {int((worse & conv).sum())} report `converged`; fits that raised: {sm['errors']}; "
        f"fits with warnings: {sm['n_warned']}.",
        f"- largest relative excess over jaxmixed: {np.nanmax(rel):.1e}; better than jaxmixed by more than "
        f"{common.REL_TOL:g}: {int((np.isfinite(rel) & (rel < -common.REL_TOL)).sum())}.",
        f"- optimiser that gave the result (statsmodels retries with the next one when one does not "
        f"converge): {sm['methods']}.",
        "",
        *([const, ""] if const else []),
    ]


def case_w4(ctx: common.Context) -> list[str]:
    """W4's section of many.md: jaxmixed, then statsmodels and lme4, each in its own process."""
    k = ctx.sz["w4_k"]
    bench.log(f"\n== W4: {k:,} responses, 40 subjects x 8, {FORMULA}")
    jm, err = common.run_worker("w4_jaxmixed", {"k": k, "steady": ctx.sz["w4_steady"]}, ctx)
    bench.log(
        err
        or f"  jaxmixed: import {jm['import_s']:.2f} s, backend {jm['backend_s']:.2f} s, first call "
        f"{jm['first_s']:.2f} s, steady {jm['steady_s']:.3f} s (calls {[round(t, 3) for t in jm['steady_times']]})"
    )
    k_sm, sm, sm_err = _run_statsmodels(ctx, k)
    lme, lme_info, lme_err = _run_lme4(ctx, k)
    lines = common.section_head(f"## W4: {k:,} responses over one design", ctx, jm, _about(k))
    if err:
        return lines + common.failed("jaxmixed", err)
    lines += _time_table(jm, k, lme_info, sm, k_sm) + ["### Optimum check", ""]
    lines += _lme4_check(jm, lme, k) if lme is not None else [f"lme4 not run: {lme_err or ctx.r_note}", ""]
    if sm:
        lines += _statsmodels_check(jm, sm, lme, k, k_sm)
    elif sm_err:
        lines += common.failed("statsmodels", sm_err)
    return lines


WORKERS = {"w4_jaxmixed": worker_w4_jaxmixed, "w4_statsmodels": worker_w4_statsmodels}
