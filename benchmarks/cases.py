"""The cases of the peer comparison and the data they fit.

A :class:`Case` names its model three ways (jaxmixed's and lme4's formula,
statsmodels' version) and how to make its data (:func:`make_data`). Simulated
data are drawn with numpy from a fixed seed, so every run fits the same rows.
The models of lme4's datasets are those of ``jaxmixed._datasets.REFERENCE_MODELS``,
the list the tests check against lme4.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from jaxmixed._datasets import ReferenceModel

SEED = 20240611
XS10 = tuple(f"x{i}" for i in range(1, 11))
SLOPES_FORMULA = "y ~ x1 + x2 + x3 + (x1 | g)"


@dataclass(frozen=True)
class StatsmodelsModel:
    """The case's model as ``smf.mixedlm(formula, df, groups=df[groups], re_formula=..., vc_formula=...)``.

    ``groups=None``: one group holding all rows, the crossed factors as
    variance components (``vc_formula``).
    """

    formula: str
    groups: str | None
    re_formula: str
    vc_formula: dict[str, str] | None = None


@dataclass(frozen=True)
class Case:
    """One model and its data.

    Attributes:
        title: the row label of the report.
        formula: jaxmixed's and lme4's formula (REML fits).
        sm: statsmodels' version of the model.
        factors: columns R reads as factors.
        make: the data recipe: ``("dataset", name)``, ``("mixedml", clusters)``,
            ``("slopes", rows, groups)`` or ``("insteval",)`` (see :func:`make_data`).
    """

    title: str
    formula: str
    sm: StatsmodelsModel
    factors: tuple[str, ...]
    make: tuple

    def to_json(self) -> dict:
        """The case as the JSON the workers read (and ``latest.json`` keeps as ``spec``)."""
        return dataclasses.asdict(self)


def reference_model(key: str) -> ReferenceModel:
    """The model ``key`` of ``REFERENCE_MODELS`` (lme4's example datasets)."""
    # Imported here: compare_versions' workers import this module under an
    # older jaxmixed tree, and must not import jaxmixed before they check it.
    from jaxmixed._datasets import REFERENCE_MODELS

    return next(m for m in REFERENCE_MODELS if m.key == key)


# --------------------------------------------------------------------------------------
# Simulations
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
    df = pd.DataFrame(x, columns=list(XS10))
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
    """lme4's InstEval; with ``quick``, the ratings of the first 400 students."""
    import jaxmixed as jm

    df = jm.load_dataset("InstEval")[["s", "d", "service", "dept", "y"]]
    if quick:
        df = df[df["s"].cat.codes < 400].copy()
        for col in ["s", "d", "service", "dept"]:
            df[col] = df[col].cat.remove_unused_categories()
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------


def slopes_case(n: int, n_groups: int) -> Case:
    """``y ~ x1 + x2 + x3 + (x1 | g)`` on n simulated rows in n_groups groups (case c, scaling)."""
    return Case(
        title=f"{n:,} rows, {n_groups:,} groups, random intercept and slope",
        formula=SLOPES_FORMULA,
        sm=StatsmodelsModel("y ~ x1 + x2 + x3", "g", "~x1"),
        factors=("g",),
        make=("slopes", n, n_groups),
    )


def case_specs(quick: bool) -> dict[str, Case]:
    """The cases a, b, c, d; ``quick``: smaller data (a smoke run)."""
    n_clusters = 50 if quick else 200
    n_c, groups_c = (100_000, 1_000) if quick else (1_000_000, 10_000)
    xs = " + ".join(XS10)
    sleep = reference_model("sleepstudy_slopes_reml")
    insteval = reference_model("insteval_crossed_reml")
    return {
        "a": Case(
            title=sleep.dataset,
            formula=sleep.formula,
            sm=StatsmodelsModel("Reaction ~ Days", "Subject", "~Days"),
            factors=("Subject",),
            make=("dataset", sleep.dataset),
        ),
        "b": Case(
            title=f"mixedML simulation ({n_clusters} clusters, 11 correlated random effects)",
            formula=f"y ~ {xs} + w1 + w2 + w3 + ({xs} | g)",
            sm=StatsmodelsModel(f"y ~ {xs} + w1 + w2 + w3", "g", f"~{xs}"),
            factors=("g",),
            make=("mixedml", n_clusters),
        ),
        "c": slopes_case(n_c, groups_c),
        "d": Case(
            title=insteval.dataset + (" (first 400 students)" if quick else ""),
            formula=insteval.formula,
            # one group holding all rows, the crossed factors as variance components
            sm=StatsmodelsModel(
                "y ~ 1 + service",
                None,
                "0",
                {"s": "0 + C(s)", "d": "0 + C(d)", "dept:service": "0 + C(dept):C(service)"},
            ),
            factors=("s", "d", "service", "dept"),
            make=("insteval",),
        ),
    }


def make_data(make: tuple | list, quick: bool) -> pd.DataFrame:
    """The data of a case's recipe (:attr:`Case.make`)."""
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
