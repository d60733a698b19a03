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

from __future__ import annotations

import argparse
import datetime
import os
import time
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

import jaxmixed as jm

XS = " + ".join(f"x{k}" for k in range(1, 11))
FORMULA = f"y ~ {XS} + w1 + w2 + w3 + (1 + {XS} | cluster)"
OUT = Path(__file__).parent / "results" / "mixedml.md"


def _mlp(seed: int):
    return eqx.nn.MLP(13, "scalar", 32, 2, activation=jax.nn.softplus, key=jax.random.key(seed))


def _timed(fn, seed: int) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(seed)
    return time.perf_counter() - start, out


def jaxmixed_fits(df) -> dict[str, callable]:
    return {
        "fit_reml (linear model)": lambda s: jm.fit_reml(FORMULA, df.sample(frac=1.0, random_state=s)),
        "MLP joint, REML": lambda s: jm.fit_mixed_nn(_mlp(s), FORMULA, df, key=s, verbose=False),
        "MLP EM, REML": lambda s: jm.fit_mixed_nn(_mlp(s), FORMULA, df, mode="em", key=s, verbose=False),
    }


def one_pass_seconds(df, repeats: int = 50) -> float:
    """A compiled forward and backward pass of the MLP (MSE) over all rows."""
    with jax.enable_x64(True):
        x = jnp.asarray(df[[f"x{k}" for k in range(1, 11)] + ["w1", "w2", "w3"]].to_numpy())
        y = jnp.asarray(df.y.to_numpy())
        net = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, _mlp(0))
        grad = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.mean((jax.vmap(m)(x) - y) ** 2)))
        jax.block_until_ready(grad(net))
        start = time.perf_counter()
        for _ in range(repeats):
            out = grad(net)
        jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def peers(df) -> dict[str, float]:
    out = {}
    try:
        import statsmodels.formula.api as smf

        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smf.mixedlm(f"y ~ {XS} + w1 + w2 + w3", df, groups="cluster", re_formula=f"~ {XS}").fit(reml=True)
        out["statsmodels MixedLM (linear model, REML)"] = time.perf_counter() - start
    except ImportError:
        pass
    try:
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR

        svr = make_pipeline(StandardScaler(), SVR(C=10.0))
        start = time.perf_counter()
        jm.fit_mixed_em(svr, FORMULA, df, max_rounds=30, verbose=False)
        out["SVR EM, REML (scikit-learn SVR, 30 rounds at most)"] = time.perf_counter() - start
    except ImportError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["linear", "nonlinear"], default="nonlinear")
    args = parser.parse_args()
    df = jm.mixedml_simulation(nonlinear=args.case == "nonlinear", seed=0)
    rows = []
    for name, fn in jaxmixed_fits(df).items():
        first, _ = _timed(fn, 0)
        steady, fit = _timed(fn, 1)
        epochs = len(fit.history) * 10 if hasattr(fit, "history") and "round" not in fit.history else None
        rows.append((name, first, steady, epochs))
        print(f"{name}: first {first:.2f} s, steady {steady:.2f} s", flush=True)
    per_pass = one_pass_seconds(df)
    peer = peers(df)
    lines = [
        f"# mixedML simulation ({args.case} case): seconds per fit",
        "",
        f"{datetime.date.today()}, {os.cpu_count()} CPU cores, float64, {len(df)} rows, 200 clusters, "
        "(1 + x1..x10 | cluster). First call includes compilation; steady: a second call, same shapes.",
        "",
        "| fit | first call (s) | steady (s) | steady / one pass per epoch |",
        "|---|---|---|---|",
    ]
    for name, first, steady, epochs in rows:
        ratio = f"{steady / (epochs * per_pass):.1f}" if epochs else "—"
        lines.append(f"| {name} | {first:.2f} | {steady:.2f} | {ratio} |")
    for name, seconds in peer.items():
        lines.append(f"| {name} | {seconds:.2f} | — | — |")
    lines += ["", f"One compiled forward+backward pass of the MLP over all rows: {1e3 * per_pass:.2f} ms."]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
