"""Example datasets bundled with jaxmixed.

The CSV files are lme4's (and MASS's, for nlschools) example datasets,
exported unchanged from R 4.2.2; see ``data/README.md`` in the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pandas as pd

__all__ = ["REFERENCE_MODELS", "ReferenceModel", "list_datasets", "load_dataset", "mixedml_simulation"]

# Columns that R treats as factors: read them as categoricals.
_FACTORS = {
    "sleepstudy": ["Subject"],
    "Dyestuff": ["Batch"],
    "Dyestuff2": ["Batch"],
    "Penicillin": ["plate", "sample"],
    "Pastes": ["batch", "cask", "sample"],
    "cbpp": ["herd", "period"],
    "InstEval": ["s", "d", "studage", "lectage", "service", "dept"],
    "nlschools": ["class", "COMB"],
    # R orders temperature (an ordered factor, polynomial contrasts); here it is a
    # plain factor, so it gets treatment contrasts, as factor(temperature, ordered = FALSE).
    "cake": ["replicate", "recipe", "temperature"],
}


def list_datasets() -> list[str]:
    """Names of the bundled datasets.

    Examples:
        >>> import jaxmixed as jm
        >>> jm.list_datasets()[:4]
        ['Dyestuff', 'Dyestuff2', 'InstEval', 'Pastes']
    """
    return sorted(_FACTORS)


def load_dataset(name: str) -> pd.DataFrame:
    """Loads a bundled dataset (``"sleepstudy"``, ``"InstEval"``, …) as a DataFrame.

    Columns R treats as factors are pandas categoricals.

    Examples:
        >>> import jaxmixed as jm
        >>> sleep = jm.load_dataset("sleepstudy")
        >>> sleep.shape, list(sleep.columns)
        ((180, 3), ['Reaction', 'Days', 'Subject'])
        >>> list(sleep["Subject"].cat.categories[:3])
        ['308', '309', '310']
    """
    if name not in _FACTORS:
        raise ValueError(f"unknown dataset {name!r}; available: {list_datasets()}")
    path = resources.files("jaxmixed") / "data" / f"{name}.csv"
    with path.open("r") as fh:
        df = pd.read_csv(fh, dtype={c: str for c in _FACTORS[name]})
    for col in _FACTORS[name]:
        values = df[col]
        # Integer-coded factors sort numerically, as R's factor() sorts them.
        if values.str.fullmatch(r"-?\d+").all():
            cats = sorted(values.unique(), key=int)
        else:
            cats = sorted(values.unique())
        df[col] = pd.Categorical(values, categories=cats)
    return df


def mixedml_simulation(
    n_clusters: int = 200, *, nonlinear: bool = False, feature_cov: float = 0.1, seed: int = 0
) -> pd.DataFrame:
    """The simulation study of the mixedML paper (Kilian, Ye & Kelava), as a DataFrame.

    Clusters of 22–25 rows (uniform); 10 level-1 features ``x1..x10``
    (normal, unit variances, pairwise covariances ``feature_cov``, 0.1 or 0.3
    in the paper); 3 level-2 features ``w1..w3`` (constant within a cluster,
    same distribution); ``y = 5 + Σxₖ + Σwₖ + b₀ + Σ bₖxₖ + ε`` with a random
    intercept and 10 random slopes ``b ~ N(0, I₁₁)`` per ``cluster`` and
    ``ε ~ N(0, 3.5²)``. ``nonlinear=True`` adds ``Σ_{k≤5} xₖ²`` (coefficients
    1, like the others). The oracle model: ``y ~ x1 + … + w3 (+ I(xk**2)) +
    (1 + x1 + … + x10 | cluster)``.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = rng.integers(22, 26, n_clusters)
    cluster = np.repeat(np.arange(n_clusters), sizes)
    n = len(cluster)

    def correlated(rows: int, k: int) -> np.ndarray:
        cov = np.full((k, k), feature_cov) + (1.0 - feature_cov) * np.eye(k)
        return rng.normal(size=(rows, k)) @ np.linalg.cholesky(cov).T

    x = correlated(n, 10)
    w = correlated(n_clusters, 3)[cluster]
    b = rng.normal(size=(n_clusters, 11))
    z = np.concatenate([np.ones((n, 1)), x], axis=1)
    y = 5.0 + x.sum(1) + w.sum(1) + np.einsum("nq,nq->n", z, b[cluster]) + 3.5 * rng.normal(size=n)
    if nonlinear:
        y = y + (x[:, :5] ** 2).sum(1)
    frame = {"y": y, **{f"x{k + 1}": x[:, k] for k in range(10)}, **{f"w{k + 1}": w[:, k] for k in range(3)}}
    frame["cluster"] = cluster
    return pd.DataFrame(frame)


@dataclass(frozen=True)
class ReferenceModel:
    """One model of lme4's example datasets that jaxmixed is checked against.

    These are the models of ``tests/data/lme4_reference.json`` (lme4's fits,
    keyed by ``key``): ``tests/test_api.py`` compares jaxmixed's fits with
    them, and the benchmarks time the same models.

    Attributes:
        key: the model's key in ``lme4_reference.json``.
        dataset: a bundled dataset (:func:`load_dataset`).
        formula: the lme4 formula.
        reml: REML (True) or maximum likelihood.
    """

    key: str
    dataset: str
    formula: str
    reml: bool


# One list, shared by the tests and the benchmarks: tests/data/lme4_reference.json
# holds lme4's fit of each, in this order.
REFERENCE_MODELS: tuple[ReferenceModel, ...] = (
    ReferenceModel("sleepstudy_slopes_reml", "sleepstudy", "Reaction ~ Days + (Days | Subject)", True),
    ReferenceModel("sleepstudy_slopes_ml", "sleepstudy", "Reaction ~ Days + (Days | Subject)", False),
    ReferenceModel("sleepstudy_uncorr_reml", "sleepstudy", "Reaction ~ Days + (Days || Subject)", True),
    ReferenceModel("sleepstudy_intercept_reml", "sleepstudy", "Reaction ~ Days + (1 | Subject)", True),
    ReferenceModel("dyestuff_reml", "Dyestuff", "Yield ~ 1 + (1 | Batch)", True),
    ReferenceModel("dyestuff_ml", "Dyestuff", "Yield ~ 1 + (1 | Batch)", False),
    ReferenceModel("dyestuff2_reml_singular", "Dyestuff2", "Yield ~ 1 + (1 | Batch)", True),
    ReferenceModel("penicillin_crossed_reml", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", True),
    ReferenceModel("pastes_nested_reml", "Pastes", "strength ~ 1 + (1 | batch/cask)", True),
    ReferenceModel(
        "insteval_crossed_reml", "InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", True
    ),
)
