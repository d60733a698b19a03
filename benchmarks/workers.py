"""What a worker subprocess runs: one function per tool, each on one model and its data.

A worker reads a spec (JSON: the case's fields plus ``data``, the path of a
pickled DataFrame), fits, and writes its answer as JSON with its own peak
memory (``peak_rss_bytes``). The parent starts it as
``python -m benchmarks --worker KIND SPEC OUT`` (``measure.run_python_worker``),
so each process imports only what its tool needs, after the parent's timings.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd

from ._common import (
    caught_warnings,
    json_worker,
    library_versions,
    no_compilation_cache,
    timed,
    timed_repeats,
    vm_hwm,
    warning_lines,
)


def _name(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _fit_timings(formula: str, df: pd.DataFrame, reml: bool, **repeats) -> dict:
    """The first ``fit_reml`` call in this process (compilation included), then the steady state."""
    import jax.numpy as jnp

    import jaxmixed as jm

    jnp.zeros(1).block_until_ready()  # JAX backend start-up is not part of any fit
    with caught_warnings() as caught:
        first, res = timed(jm.fit_reml, formula, data=df, reml=reml)
        steady = timed_repeats(lambda: jm.fit_reml(formula, data=df, reml=reml), **repeats)
    return {"result": res, "first": first, "steady": steady, "warnings": warning_lines(caught)}


def _core_timings(formula: str, df: pd.DataFrame) -> dict:
    """The steps of a fit by hand, through the pure layer.

    The design (host), the one pass over the data (statistics), the compiled
    core fit on those statistics; fit_reml compiles statistics and fit as one
    program, so each jitted step here compiles anew: the statistics pass gets
    one untimed warm-up call, the core fit's first call is kept.
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from jaxmixed import core
    from jaxmixed import design as jmd

    design_times = timed_repeats(lambda: jmd.build_design(formula, df), budget=10.0)
    design, arrays = jmd.build_design(formula, df)
    statistics_jit = eqx.filter_jit(core.model_statistics)
    fit_jit = eqx.filter_jit(core.fit)
    options = core.FitOptions(reml=True)
    with jax.enable_x64(True):
        data = jmd.prepare(design, arrays)
        y = jnp.asarray(arrays.y)

        def stats_once():
            return jax.block_until_ready(statistics_jit(data, y))

        stats = stats_once()
        stats_times = timed_repeats(stats_once, budget=10.0)

        def core_once():
            return jax.block_until_ready(fit_jit(stats, options))

        core_first, opt = timed(core_once)  # compilation of the core fit included
        core_times = timed_repeats(core_once)
    return {
        "build_design_s": statistics.median(design_times),
        "model_statistics_s": statistics.median(stats_times),
        "model_statistics_times": stats_times,
        "fit_statistics_s": statistics.median(core_times),
        "fit_statistics_times": core_times,
        "fit_statistics_first_s": core_first,
        "fit_statistics_objective": float(opt.objective),
    }


def _estimates(res) -> dict:
    """A fitted model's numbers, as JSON."""
    return {
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
            {"grp": _name(r.grp), "var1": _name(r.var1), "var2": _name(r.var2), "vcov": float(r.vcov)}
            for r in res.varcorr.itertuples()
        ],
    }


def _fit_record(fit: dict, **extra) -> dict:
    """A worker's answer: first call, steady times, ``extra`` timings, estimates, warnings."""
    return {
        "first_call_s": fit["first"],
        "fit_reml_s": statistics.median(fit["steady"]),
        "fit_reml_times": fit["steady"],
        **extra,
        **_estimates(fit["result"]),
        "warnings": fit["warnings"],
        "versions": library_versions(),
    }


def worker_jaxmixed(spec: dict) -> dict:
    """The peer comparison's jaxmixed: ``fit_reml`` first call and steady state, then the core steps."""
    df = pd.read_pickle(spec["data"])
    fit = _fit_timings(spec["formula"], df, True)
    return _fit_record(fit, **_core_timings(spec["formula"], df))


def worker_jaxmixed_fit(spec: dict) -> dict:
    """The real-models suite's jaxmixed: ``fit_reml`` first call and steady state only.

    The steady state is the median of ``spec["repeats"]`` further calls (default 5; as
    lme4's in the same suite); the core steps are the peer comparison's business.
    """
    df = pd.read_pickle(spec["data"])
    n = int(spec.get("repeats", 5))
    fit = _fit_timings(spec["formula"], df, spec.get("reml", True), min_repeats=n, max_repeats=n, budget=0.0)
    return _fit_record(fit)


def worker_statsmodels(spec: dict) -> dict:
    """statsmodels' MixedLM: model construction plus ``fit(reml=True)``, median of up to 5 fast fits."""
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
    groups = sm["groups"] or "_one_group"
    fitted = []

    def fit_once():
        model = smf.mixedlm(sm["formula"], df, groups=df[groups], **kwargs)
        fitted[:] = [model, model.fit(reml=True)]

    with caught_warnings() as caught:
        # repeat only fast fits: median of up to 5 when one takes < 1 s
        times = timed_repeats(fit_once, min_repeats=1, max_repeats=5, budget=2.0)
    model, result = fitted
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
        "cov_re": np.asarray(result.cov_re, dtype=float).tolist(),
        "vcomp_names": list(model.exog_vc.names),
        "vcomp": [float(v) for v in np.atleast_1d(result.vcomp)],
        "scale": float(result.scale),
        "warnings": warning_lines(caught),
        "versions": {"statsmodels": statsmodels.__version__},
    }


WORKERS = {
    "jaxmixed": worker_jaxmixed,
    "jaxmixed-fit": worker_jaxmixed_fit,
    "statsmodels": worker_statsmodels,
}


def worker_main(kind: str, spec_path: str, out_path: str) -> None:
    """Runs the worker ``kind`` on the spec at spec_path; writes its answer to out_path."""
    no_compilation_cache()  # "first call" means compilation included, not a load from disk
    json_worker(lambda spec: {**WORKERS[kind](spec), "peak_rss_bytes": vm_hwm()}, spec_path, out_path)
