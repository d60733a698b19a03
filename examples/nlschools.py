"""Grouped cross-validation on Snijders & Bosker's nlschools (the mixedML paper's Tables 5 and 6).

MASS's ``nlschools``: the language score ``lang`` of 2,287 Dutch pupils in 133
classes, with the pupil's verbal IQ and family SES. Each class gets the means
of IQ and SES over its pupils (``IQ_mean``, ``SES_mean``: all pupils of the
class, a property of the class known whether or not the class is in the
training folds; no response enters them). All four variables are then centred
at their mean over pupils (grand-mean centring, not within-class centring).
Centring by constants changes neither the linear mixed model below (its fixed
part has every interaction and its random-effects covariance is unstructured,
so the fit is the same, only the coefficients refer to the average pupil) nor
the networks (which standardise their inputs); it keeps the interaction
columns well conditioned.

1. The linear mixed model with all interactions,
   ``lang ~ IQ * SES * IQ_mean * SES_mean + (1 + IQ + SES | class)``, fitted
   by REML on all rows: fixed effects and variance components are printed.
2. :func:`jaxmixed.sklearn.cross_validate_mixed` with ``cv="groups"`` (test
   classes unseen in training) and ``cv="rows"`` (rows at random, classes
   seen) for four mixed models, each with a random intercept and random
   slopes on IQ and SES by class: the linear model above (its 15 interaction
   columns as X), an MLP (softplus, width 32, depth 2) on the four variables
   trained jointly with the variance components, the same MLP by mixedML's
   EM, and scikit-learn's SVR (after a StandardScaler) by EM.
3. The mean over folds of the four MSEs (within-class prediction, population
   prediction, the plain fixed part, the plain fixed part with one-hot class
   columns) on test and training rows, and the seconds per fold, go to
   ``examples/results/nlschools.md`` and ``examples/results/nlschools.png``.

Run: ``python examples/nlschools.py`` (10 folds) or ``--quick`` (3 folds,
shorter training) or ``--folds K``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from formulaic import model_matrix
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

import jaxmixed as jm
from jaxmixed.sklearn import MixedEMRegressor, MixedLMRegressor, MixedNNRegressor, cross_validate_mixed

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen

RESULTS = Path(__file__).resolve().parent / "results"
FEATURES = ["IQ", "SES", "IQ_mean", "SES_mean"]
FORMULA = "lang ~ IQ * SES * IQ_mean * SES_mean + (1 + IQ + SES | class)"
MSES = ["mse_within", "mse_out", "mse_plain", "mse_plain_onehot"]
LABELS = {
    "mse_within": "within (with class effects)",
    "mse_out": "population (no class effects)",
    "mse_plain": "plain fixed part",
    "mse_plain_onehot": "plain + one-hot class",
}
SPLITS = {"groups": "classes unseen (GroupKFold)", "rows": "rows at random (KFold)"}


def load_nlschools() -> pd.DataFrame:
    """nlschools with the class means of IQ and SES; the four variables grand-mean centred."""
    df = jm.load_dataset("nlschools")
    for name in ("IQ", "SES"):
        df[f"{name}_mean"] = df.groupby("class", observed=True)[name].transform("mean")
    for name in FEATURES:
        df[name] = df[name] - df[name].mean()
    return df


def print_full_fit(df: pd.DataFrame) -> None:
    """The paper's Table 5 model fitted by REML on all rows: fixed effects and variance components."""
    start = time.perf_counter()
    fit = jm.fit_reml(FORMULA, data=df)
    print(
        f"{FORMULA}\nREML on all {len(df)} rows, {time.perf_counter() - start:.1f} s (compilation included)"
    )
    print(f"converged: {fit.converged}; singular: {fit.singular}; theta: {np.round(fit.theta.to_numpy(), 4)}")
    table = pd.DataFrame({"estimate": fit.fixed_effects, "std_error": fit.fixed_effects_se})
    table["t"] = table["estimate"] / table["std_error"]
    print("\nFixed effects:")
    print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    print("\nVariance components:")
    print(fit.varcorr.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print()


def interaction_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The 15 columns of ``IQ * SES * IQ_mean * SES_mean`` (main effects and all interactions)."""
    matrix = model_matrix("IQ * SES * IQ_mean * SES_mean", df)
    return pd.DataFrame(np.asarray(matrix), columns=list(matrix.columns)).drop(columns="Intercept")


def methods(df: pd.DataFrame, quick: bool) -> dict[str, tuple[object, pd.DataFrame]]:
    """The four mixed models by name, each with its X (random slopes: the IQ and SES columns)."""
    linear_x, raw_x = interaction_columns(df), df[FEATURES].reset_index(drop=True)
    linear_slopes = [linear_x.columns.get_loc("IQ"), linear_x.columns.get_loc("SES")]
    raw_slopes = [FEATURES.index("IQ"), FEATURES.index("SES")]
    # --quick: shorter training. mode="em" ignores max_epochs (it runs rounds of 20
    # epochs, up to 100 rounds), so patience is what shortens it.
    training = {"max_epochs": 300, "patience": 50} if quick else {}
    network = {"width": 32, "depth": 2, "activation": "softplus", "random_slopes": raw_slopes, **training}
    svr = make_pipeline(StandardScaler(), SVR())
    return {
        "LMM, all interactions": (MixedLMRegressor(random_slopes=linear_slopes), linear_x),
        "MLP, joint": (MixedNNRegressor(mode="joint", **network), raw_x),
        "MLP, EM": (MixedNNRegressor(mode="em", **network), raw_x),
        "SVR, EM": (MixedEMRegressor(svr, random_slopes=raw_slopes, max_rounds=10 if quick else 100), raw_x),
    }


def run_all(df: pd.DataFrame, n_splits: int, quick: bool) -> pd.DataFrame:
    """``cross_validate_mixed`` of every method and split kind: one long frame of folds."""
    y, groups = df["lang"].to_numpy(dtype=float), df["class"].to_numpy()
    frames = []
    for cv in SPLITS:
        for name, (estimator, X) in methods(df, quick).items():
            start = time.perf_counter()
            folds = cross_validate_mixed(estimator, X, y, groups, cv=cv, n_splits=n_splits, random_state=0)
            print(f"  cv={cv:6s} {name:22s} {time.perf_counter() - start:7.1f} s in all")
            frames.append(folds.assign(cv=cv, method=name))
    return pd.concat(frames, ignore_index=True)


def summarise(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean over folds of each MSE on test and training rows (with the test ones' SE over folds), s/fold."""
    keys = ["cv", "method"]
    order = list(dict.fromkeys(folds["method"]))
    test = folds[folds["split"] == "test"].groupby(keys, sort=False)
    train = folds[folds["split"] == "train"].groupby(keys, sort=False)
    table = test[MSES].mean().add_prefix("test_")
    table = table.join((test[MSES].std().div(np.sqrt(test.size()), axis=0)).add_prefix("test_se_"))
    table = table.join(train[MSES].mean().add_prefix("train_"))
    table["seconds"] = test["seconds"].mean()
    table["first_fold_seconds"] = test["seconds"].first()
    table = table.reset_index()
    table["cv"] = pd.Categorical(table["cv"], list(SPLITS))
    table["method"] = pd.Categorical(table["method"], order)
    return table.sort_values(["cv", "method"], ignore_index=True)


def markdown_table(table: pd.DataFrame) -> str:
    """The summary as a GitHub markdown table (test MSEs, training MSEs, seconds per fold)."""
    head = ["split", "method", "test within", "test out", "test plain", "test plain+1hot"]
    head += ["train within", "train out", "train plain", "train plain+1hot", "s/fold", "fold 1 s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for row in table.itertuples(index=False):
        cells = [row.cv, str(row.method), f"{row.test_mse_within:.2f} ± {row.test_se_mse_within:.2f}"]
        cells += [f"{getattr(row, f'test_{m}'):.2f}" for m in MSES[1:]]
        cells += [f"{getattr(row, f'train_{m}'):.2f}" for m in MSES]
        cells += [f"{row.seconds:.1f}", f"{row.first_fold_seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    """A one-line description of this machine."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or platform.machine()
    return f"{os.cpu_count()}-core CPU ({cpu}), {platform.system()}, Python {platform.python_version()}"


def write_markdown(
    table: pd.DataFrame, n_splits: int, quick: bool, total: float, var_y: float, *, out: Path = RESULTS
) -> str:
    """Writes ``nlschools.md`` into ``out`` (default ``examples/results``); returns the table's text."""
    text = markdown_table(table)
    mode = " (--quick: shorter training)" if quick else ""
    notes = [
        "# nlschools: grouped cross-validation of four mixed models",
        "",
        f"Made by `examples/nlschools.py`{mode} on {datetime.date.today().isoformat()}, "
        f"{machine()}, jaxmixed {jm.__version__}; {n_splits} folds per split kind; "
        f"{total / 60:.1f} min in all.",
        "",
        "Model: `lang ~ f(IQ, SES, IQ_mean, SES_mean) + (1 + IQ + SES | class)`, the four variables "
        "grand-mean centred, class means over all pupils of the class. Mean over folds of the mean "
        "squared error of `lang` "
        f"(variance {var_y:.1f}); ± is the standard error over folds. "
        "*within*: with the class's random effects (an unseen class gets the population prediction); "
        "*out*: the population prediction; *plain*: the fixed part fitted without random effects "
        "(LinearRegression, the MLP alone, SVR alone); *plain+1hot*: the same with one-hot class "
        "columns (an unseen class: all zeros). *groups*: GroupKFold, test classes unseen; *rows*: "
        "KFold over rows (shuffled, seed 0), classes seen.",
        "",
        "Methods (random intercept and slopes on IQ and SES by class in each): *LMM*: "
        "`MixedLMRegressor` (REML) on the 15 columns of `IQ * SES * IQ_mean * SES_mean`; *MLP*: "
        "`MixedNNRegressor(width=32, depth=2, activation='softplus')` on the four variables, "
        "`mode='joint'` or `'em'`, early stopping on 10% of the training rows; *SVR*: "
        "`MixedEMRegressor(make_pipeline(StandardScaler(), SVR()))` (default SVR: RBF, C=1, "
        "epsilon=0.1) on the four variables.",
        "",
        "*s/fold*: mean wall time of the mixed fit per fold (the plain fits are not timed); "
        "*fold 1 s*: its first fold. Timings include JAX's compilation: mostly in a method's first "
        "fold (fits of similar size reuse compiled code), but `fit_reml` compiles again for each new "
        "number of rows, so every fold of the LMM pays it.",
        "",
        text,
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "nlschools.md").write_text("\n".join(notes))
    return text


def plot(table: pd.DataFrame, path: Path) -> None:
    """Grouped bars of the four test MSEs per method, one panel per split kind."""
    fig, axes = plt.subplots(1, len(SPLITS), figsize=(12, 4.5), sharey=True)
    width = 0.8 / len(MSES)
    for ax, (cv, title) in zip(axes, SPLITS.items(), strict=True):
        part = table[table["cv"] == cv]
        positions = np.arange(len(part))
        for k, mse in enumerate(MSES):
            offsets = positions + (k - (len(MSES) - 1) / 2) * width
            ax.bar(
                offsets, part[f"test_{mse}"], width, yerr=part[f"test_se_{mse}"], capsize=2, label=LABELS[mse]
            )
        ax.set_xticks(positions, [str(m) for m in part["method"]], rotation=15)
        ax.set_title(f"cv={cv!r}: {title}")
        ax.grid(axis="y", alpha=0.3)
    low = np.floor(table[[f"test_{m}" for m in MSES]].min().min() * 0.85)
    axes[0].set_ylim(max(0.0, low), None)  # shows the differences; the axis does not start at 0
    axes[0].set_ylabel(f"test MSE of lang, mean ± SE over folds\n(axis from {low:g})")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(MSES), frameon=False)
    fig.suptitle("nlschools: lang ~ f(IQ, SES, class means) + (1 + IQ + SES | class)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Parses the options, fits the full model, cross-validates, writes and prints the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=10, help="folds per split kind (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 folds and shorter training")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where nlschools.md and .png go")
    args = parser.parse_args()
    n_splits = 3 if args.quick else args.folds
    df = load_nlschools()
    print_full_fit(df)
    start = time.perf_counter()
    folds = run_all(df, n_splits, args.quick)
    table = summarise(folds)
    total = time.perf_counter() - start
    text = write_markdown(table, n_splits, args.quick, total, float(df["lang"].var()), out=args.out)
    plot(table, args.out / "nlschools.png")
    print(f"\n{text}\n\n{total / 60:.1f} min; written to {args.out / 'nlschools.md'} and nlschools.png")


if __name__ == "__main__":
    main()
