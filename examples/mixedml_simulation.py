"""The simulation study of the mixedML paper (its Tables 3 and 4), with jaxmixed.

Data (``jm.mixedml_simulation``): 200 clusters of 22–25 rows, 10 level-1 and 3
level-2 features, a random intercept and 10 random slopes with covariance I,
residual SD 3.5; the linear case, and the non-linear case that adds the
squares of the first five level-1 features. k-fold cross-validation over rows
(clusters seen in training) with ``jaxmixed.sklearn.cross_validate_mixed``,
for each method: the four MSEs of the paper on training and test rows, the
variance components, σ, the fixed effects (linear models) and seconds per
fold (the first fold includes compilation).

Methods: ``fit_reml`` (the linear model; in the non-linear case also the
"oracle" that knows the squared terms), an MLP (2×32, softplus) trained
jointly with the variance components (REML), the same by EM (ML and REML),
and scikit-learn's SVR (standardised features, C = 10) by EM (REML; at most 20
rounds, tol 1e-3: each round refits the SVR).

Run: ``python examples/mixedml_simulation.py [--folds 10] [--case linear|nonlinear|both]``.
It prints the tables and writes them to ``examples/results/mixedml_simulation.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

import jaxmixed as jm
from jaxmixed.sklearn import MixedEMRegressor, MixedLMRegressor, MixedNNRegressor, cross_validate_mixed

LEVEL1 = [f"x{k}" for k in range(1, 11)]
LEVEL2 = ["w1", "w2", "w3"]
SLOPES = list(range(10))  # random slopes on the level-1 features (columns 0..9 of X)
RESULTS = Path(__file__).parent / "results" / "mixedml_simulation.md"


def methods(case: str, quick: bool = False) -> dict[str, tuple[object, bool]]:
    """name → (unfitted estimator, whether X gets the squared terms)."""
    epochs = 300 if quick else 1000
    net = {"width": 32, "depth": 2, "activation": "softplus", "random_slopes": SLOPES, "max_epochs": epochs}
    out = {"fit_reml (linear)": (MixedLMRegressor(random_slopes=SLOPES), False)}
    if case == "nonlinear":
        out["fit_reml oracle (with squares)"] = (MixedLMRegressor(random_slopes=SLOPES), True)
    else:  # a network without hidden layers is the linear model: its estimates should be fit_reml's
        linear = {**net, "depth": 0, "validation_fraction": 0.0, "max_epochs": 1500}
        out["linear network joint, REML"] = (MixedNNRegressor(mode="joint", **linear), False)
        out["linear network EM, REML"] = (MixedNNRegressor(mode="em", **linear), False)
    out["MLP joint, REML"] = (MixedNNRegressor(mode="joint", **net), False)
    out["MLP EM, ML"] = (MixedNNRegressor(mode="em", reml=False, **net), False)
    out["MLP EM, REML"] = (MixedNNRegressor(mode="em", **net), False)
    svr = make_pipeline(StandardScaler(), SVR(C=10.0))
    out["SVR EM, REML"] = (MixedEMRegressor(svr, random_slopes=SLOPES, max_rounds=20, tol=1e-3), False)
    return out


def features(df: pd.DataFrame, squares: bool) -> np.ndarray:
    cols = [df[c].to_numpy() for c in LEVEL1 + LEVEL2]
    if squares:
        cols += [df[c].to_numpy() ** 2 for c in LEVEL1[:5]]
    return np.column_stack(cols)


def components(model) -> dict[str, float]:
    """Variance components, σ and (linear models) fixed effects of one fitted estimator."""
    res = getattr(model, "results_", None) or getattr(model, "model_", None)
    vc = res.varcorr
    variances = vc.loc[vc.var2.isna() & (vc.grp != "Residual"), "vcov"].to_numpy()
    out = {
        "var(intercept)": variances[0],
        "mean var(slopes)": variances[1:].mean(),
        "sigma": res.sigma,
        "converged": float(res.converged),
    }
    beta = None
    if hasattr(res, "fixed_effects"):
        beta = res.fixed_effects.to_numpy()
    elif getattr(model, "depth", None) == 0:  # linear network: f(x) + β₀ = β₀' + xᵀβ
        beta = res.fixed_predict(np.eye(14, 13, k=-1))  # rows: 0, then each unit vector
        beta[1:] -= beta[0]
    if beta is not None:
        out["intercept"] = beta[0]
        out["mean slope (x, w)"] = beta[1:14].mean()
        out["max |slope − 1|"] = np.abs(beta[1:14] - 1.0).max()
    return out


def run_case(case: str, folds: int, quick: bool = False, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-validates every method on one simulated data set: (MSE table, estimates table)."""
    df = jm.mixedml_simulation(nonlinear=case == "nonlinear", seed=seed)
    y, groups = df.y.to_numpy(), df.cluster.to_numpy()
    mse_rows, est_rows = [], []
    for name, (estimator, squares) in methods(case, quick).items():
        frame, fitted = cross_validate_mixed(
            estimator, features(df, squares), y, groups, cv="rows", n_splits=folds, return_estimators=True
        )
        for split in ("train", "test"):
            part = frame[frame.split == split]
            cols = ["mse_within", "mse_out", "mse_plain", "mse_plain_onehot"]
            mse_rows.append({"method": name, "split": split, **part[cols].mean().to_dict()})
        seconds = frame[frame.split == "test"].seconds.to_numpy()
        est = pd.DataFrame([components(m) for m in fitted]).mean().to_dict()
        est_rows.append(
            {
                "method": name,
                **est,
                "s first fold": seconds[0],
                "s other folds (median)": np.median(seconds[1:]),
            }
        )
        print(f"  {case}: {name} done ({seconds.sum():.1f} s)", flush=True)
    return pd.DataFrame(mse_rows), pd.DataFrame(est_rows)


def markdown(frame: pd.DataFrame) -> str:
    """A DataFrame as a markdown table (numbers to 3 decimals)."""
    cells = [
        [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)
    ]
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    return "\n".join([head, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def report(tables: dict[str, tuple[pd.DataFrame, pd.DataFrame]], folds: int) -> str:
    """Markdown with both tables per case and how they were made."""
    lines = [
        "# mixedML simulation study with jaxmixed",
        "",
        f"{folds}-fold cross-validation over rows (clusters seen in training), one simulated data set "
        f"per case (seed 0; 200 clusters, {len(jm.mixedml_simulation())} rows). Run "
        f"{datetime.date.today()} on {platform.machine()} with {os.cpu_count()} CPU cores, "
        "float64. MSEs are means over folds; seconds are the mixed model's fit per fold "
        "(the first fold includes compilation).",
        "Truth: intercept 5, every coefficient 1, random-effect variances 1, σ = 3.5.",
    ]
    for case, (mse, est) in tables.items():
        lines += ["", f"## {case} case", "", "Mean squared errors:", "", markdown(mse)]
        lines += ["", "Estimates (means over folds) and time:", "", markdown(est)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--case", choices=["linear", "nonlinear", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="fewer epochs (a smoke run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cases = ["linear", "nonlinear"] if args.case == "both" else [args.case]
    warnings.filterwarnings("ignore", category=jm.ConvergenceWarning)  # the "converged" column counts them
    tables = {case: run_case(case, args.folds, args.quick) for case in cases}
    text = report(tables, args.folds)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
