"""Timing of the network and EM fits on the mixedML simulation, with peers alongside.

One data set of the paper's simulation study (``jm.mixedml_simulation``:
4,728 rows, 200 clusters, a random intercept and 10 correlated random slopes;
``--case nonlinear`` adds the squared terms). Each jaxmixed fit is timed twice
in one process: the first call (compilation included) and a second call with
another seed and the same shapes (steady state). Peers in the same run:
statsmodels' ``MixedLM`` on the linear model (the paper's EM wrapped
statsmodels), and scikit-learn's SVR by EM. "One pass" is a compiled forward
and backward pass of the MLP over all rows: the floor of one joint epoch.

Run on an idle machine: ``python benchmarks/mixedml_benchmark.py``; the
results go to ``benchmarks/results/mixedml.md``.
"""

# ruff: noqa: E402  (the imports below need sys.path first, when run as a script)

from __future__ import annotations

import argparse
import datetime
import os
import sys
import warnings
from pathlib import Path

if not __package__:  # as a script, benchmarks/ is first on sys.path; the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import equinox as eqx
import jax
import jax.numpy as jnp

import jaxmixed as jm
from benchmarks._common import (
    RESULTS,
    check_idle,
    log,
    md_table,
    no_compilation_cache,
    per_call_seconds,
    timed,
)

XS = " + ".join(f"x{k}" for k in range(1, 11))
FORMULA = f"y ~ {XS} + w1 + w2 + w3 + (1 + {XS} | cluster)"
OUT = RESULTS / "mixedml.md"


def _mlp(seed: int):
    return eqx.nn.MLP(13, "scalar", 32, 2, activation=jax.nn.softplus, key=jax.random.key(seed))


def jaxmixed_fits(df) -> dict[str, callable]:
    return {
        "fit_reml (linear model)": lambda s: jm.fit_reml(FORMULA, df.sample(frac=1.0, random_state=s)),
        "MLP joint, REML": lambda s: jm.fit_mixed_nn(_mlp(s), FORMULA, df, key=s, verbose=False),
        "MLP EM, REML": lambda s: jm.fit_mixed_nn(_mlp(s), FORMULA, df, mode="em", key=s, verbose=False),
    }


def one_pass_seconds(df) -> float:
    """A compiled forward and backward pass of the MLP (MSE) over all rows (median, after a warm-up)."""
    with jax.enable_x64(True):
        x = jnp.asarray(df[[f"x{k}" for k in range(1, 11)] + ["w1", "w2", "w3"]].to_numpy())
        y = jnp.asarray(df.y.to_numpy())
        net = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, _mlp(0))
        grad = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.mean((jax.vmap(m)(x) - y) ** 2)))
        return per_call_seconds(lambda: jax.block_until_ready(grad(net)))


def peers(df) -> dict[str, float]:
    out = {}
    try:
        import statsmodels.formula.api as smf

        def fit_statsmodels():
            model = smf.mixedlm(f"y ~ {XS} + w1 + w2 + w3", df, groups="cluster", re_formula=f"~ {XS}")
            return model.fit(reml=True)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["statsmodels MixedLM (linear model, REML)"], _ = timed(fit_statsmodels)
    except ImportError:
        pass
    try:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR

        svr = make_pipeline(StandardScaler(), SVR(C=10.0))
        seconds, _ = timed(jm.fit_mixed_em, svr, FORMULA, df, max_rounds=30, verbose=False)
        out["SVR EM, REML (scikit-learn SVR, 30 rounds at most)"] = seconds
    except ImportError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["linear", "nonlinear"], default="nonlinear")
    args = parser.parse_args()
    no_compilation_cache()  # a first call includes its compilation, not a load from disk
    check_idle()
    df = jm.mixedml_simulation(nonlinear=args.case == "nonlinear", seed=0)
    rows = []
    for name, fn in jaxmixed_fits(df).items():
        first, _ = timed(fn, 0)
        steady, fit = timed(fn, 1)
        epochs = len(fit.history) * 10 if hasattr(fit, "history") and "round" not in fit.history else None
        rows.append((name, first, steady, epochs))
        log(f"{name}: first {first:.2f} s, steady {steady:.2f} s")
    per_pass = one_pass_seconds(df)
    peer = peers(df)
    cells = [
        [name, f"{first:.2f}", f"{steady:.2f}", f"{steady / (epochs * per_pass):.1f}" if epochs else "—"]
        for name, first, steady, epochs in rows
    ]
    cells += [[name, f"{seconds:.2f}", "—", "—"] for name, seconds in peer.items()]
    lines = [
        f"# mixedML simulation ({args.case} case): seconds per fit",
        "",
        f"{datetime.date.today()}, {os.cpu_count()} CPU cores, float64, {len(df)} rows, 200 clusters, "
        "(1 + x1..x10 | cluster). First call includes compilation; steady: a second call, same shapes.",
        "",
        *md_table("fit | first call (s) | steady (s) | steady / one pass per epoch", cells, "llll"),
        "",
        f"One compiled forward+backward pass of the MLP over all rows: {1e3 * per_pass:.2f} ms.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
