"""The parametric bootstrap of sleepstudy's fit, against lme4's ``bootMer``.

``m.bootstrap(n)`` in a fresh process: first call and steady calls;
percentile intervals beside the Wald intervals and lme4's percentile intervals
(``bootMer`` replicates, same quantile rule).
"""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd

from .. import _common as bench
from . import common

FORMULA = "Reaction ~ Days + (Days | Subject)"


def worker_bootstrap_jaxmixed(spec: dict) -> dict:
    """``fit_reml`` on sleepstudy, then ``bootstrap(n)``: first call (key 1), two steady calls (keys 2, 3)."""
    out = common.start_jax()
    import jaxmixed as jm

    df = jm.load_dataset("sleepstudy")
    out["fit_first_s"], m = bench.timed(jm.fit_reml, FORMULA, df)
    n = spec["n"]
    with bench.caught_warnings() as caught:
        out["first_s"], _ = bench.timed(m.bootstrap, n, key=1, verbose=False)
        steady = []
        for key in (2, 3):  # only the last call's replicates are kept
            seconds, boot = bench.timed(m.bootstrap, n, key=key, verbose=False)
            steady.append(seconds)
        ci = boot.conf_int()
    out["steady_times"] = steady
    out["steady_s"] = statistics.median(steady)
    out["warnings"] = bench.warning_lines(caught, 200)
    out["percentile"] = {str(k): [float(v) for v in row] for k, row in ci.iterrows()}
    out["wald"] = {str(k): [float(v) for v in row] for k, row in m.conf_int().iterrows()}
    out["original"] = {str(k): float(v) for k, v in boot.original.items()}
    out["n_converged"] = int(boot.converged.sum())
    out["n_singular"] = int(boot.singular.sum())
    return {**out, "memory": bench.peak_memory(), "versions": common.versions()}


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


def _run_lme4(ctx: common.Context, n_r: int):
    """lme4's bootMer with n_r replicates: (its timings, the replicates as parameters, error)."""
    if not ctx.r_ok:
        return None, None, None
    bench.log(f"  lme4 bootMer, nsim = {n_r} ...")
    reps_csv = ctx.workdir / "boot-lme4.csv"
    info, err = common.run_r(["boot", str(n_r), "1", str(reps_csv)], ctx, "lme4 bootMer", reps_csv)
    if err:
        bench.log(err)
        return None, None, err
    bench.log(f"  lme4: lmer {float(info['FIT']):.2f} s, bootMer {float(info['BOOT']):.2f} s for {n_r}")
    return info, _sleep_lme4_params(pd.read_csv(reps_csv)), None


def _about(n: int, n_r: int) -> str:
    return (
        f'`m = jm.fit_reml("{FORMULA}", sleepstudy)`, then `m.bootstrap({n}, key)` (parametric: '
        "simulate from the fit, refit; vmapped chunks) in a fresh process: the first call (compilation "
        "included) with key 1, steady = median of two more calls with keys 2 and 3. lme4: `bootMer(m, FUN = "
        'function(x) c(fixef(x), getME(x, "theta"), sigma(x)), nsim = '
        f"{n_r})` in the same run (θ converted to SDs and the correlation for the table)."
    )


def _time_table(jm: dict, n: int, n_r: int, r_info: dict | None) -> list[str]:
    first, per_jm = jm["first_s"], jm["steady_s"] / n
    rows = [
        ["jaxmixed `fit_reml` (first call)", bench.fmt_s(jm["fit_first_s"]), "–", "–", "–"],
        ["jaxmixed bootstrap, first call", bench.fmt_s(first), f"{n:,}", f"{1e3 * first / n:.3f}", "–"],
        ["jaxmixed bootstrap, steady", bench.fmt_s(jm["steady_s"]), f"{n:,}", f"{1e3 * per_jm:.3f}", "1"],
    ]
    if r_info:
        b = float(r_info["BOOT"])
        ratio = bench.fmt_ratio(b / n_r, per_jm)
        rows.append(["lme4 `bootMer`", bench.fmt_s(b), f"{n_r:,}", f"{1e3 * b / n_r:.2f}", ratio])
        rows.append([f"lme4 `bootMer`, extrapolated to {n:,}", bench.fmt_s(b * n / n_r), f"{n:,}", "–", "–"])
    summary = (
        f"Target: steady {common.target(jm['steady_s'], 2.0)}. Replicates converged: {jm['n_converged']:,}/{n:,}; "
        f"singular: {jm['n_singular']:,}."
    )
    columns = ["", "seconds", "replicates", "ms per replicate", "lme4 / jaxmixed per replicate"]
    return common.results_block(columns, rows, summary, jm["warnings"])


def _interval_row(name: str, lo: float, hi: float, jm: dict, r_params: pd.DataFrame | None) -> list[str]:
    """One parameter: estimate, jaxmixed's percentile and Wald intervals, lme4's percentile interval."""
    est = jm["original"].get(name, float("nan"))
    wald = jm["wald"].get(name)
    wcells = ["–", "–", "–"]
    if wald:
        wcells = [
            f"[{wald[0]:.4g}, {wald[1]:.4g}]",
            f"{wald[1] - wald[0]:.4g}",
            f"{(hi - lo) / (wald[1] - wald[0]):.3f}",
        ]
    rcells = ["–", "–"]
    if r_params is not None and name in r_params:
        rlo, rhi = np.nanquantile(r_params[name].to_numpy(float), [0.025, 0.975])
        rcells = [f"[{rlo:.4g}, {rhi:.4g}]", f"{rhi - rlo:.4g}"]
    bench.log(
        f"  {name}: percentile [{lo:.4g}, {hi:.4g}]"
        + (f", Wald [{wald[0]:.4g}, {wald[1]:.4g}]" if wald else "")
    )
    cell = name.replace("|", "\\|")  # a bar inside a markdown table cell
    return [cell, f"{est:.4g}", f"[{lo:.4g}, {hi:.4g}]", f"{hi - lo:.4g}", *wcells, *rcells]


def _interval_table(jm: dict, n_r: int, r_params: pd.DataFrame | None) -> list[str]:
    columns = ["parameter", "estimate", "jaxmixed percentile", "width", "Wald", "width", "percentile / Wald"]
    rows = [_interval_row(name, lo, hi, jm, r_params) for name, (lo, hi) in jm["percentile"].items()]
    return [
        "95% intervals: jaxmixed's percentile intervals (`BootstrapResults.conf_int()`, the steady call's "
        "replicates) and Wald intervals (`m.conf_int()`, fixed effects only); lme4's percentile intervals "
        "computed from bootMer's replicates with the same quantile rule (numpy, linear).",
        "",
        *bench.md_table([*columns, f"lme4 percentile ({n_r:,})", "width"], rows),
        "",
    ]


def case_bootstrap(ctx: common.Context) -> list[str]:
    """The bootstrap section of many.md: jaxmixed's bootstrap, then lme4's bootMer."""
    n, n_r = ctx.sz["boot_n"], ctx.sz["boot_r"]
    bench.log(f"\n== Bootstrap: sleepstudy, {FORMULA}, {n:,} replicates")
    jm, err = common.run_worker("bootstrap_jaxmixed", {"n": n}, ctx)
    bench.log(
        err
        or f"  jaxmixed: fit_reml first {jm['fit_first_s']:.2f} s; bootstrap first call {jm['first_s']:.2f} s, "
        f"steady {jm['steady_s']:.2f} s ({[round(t, 2) for t in jm['steady_times']]})"
    )
    r_info, r_params, lme_err = _run_lme4(ctx, n_r)
    lines = common.section_head(f"## Bootstrap: sleepstudy, {n:,} replicates", ctx, jm, _about(n, n_r))
    if err:
        return lines + common.failed("jaxmixed", err)
    lines += _time_table(jm, n, n_r, r_info) + _interval_table(jm, n_r, r_params)
    if r_info is None:
        lines += [f"lme4 not run: {lme_err or ctx.r_note}", ""]
    return lines


WORKERS = {"bootstrap_jaxmixed": worker_bootstrap_jaxmixed}
