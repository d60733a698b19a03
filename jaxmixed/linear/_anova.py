"""Likelihood-ratio tests of nested models: ``jaxmixed.anova(fit0, fit1, ...)``, as lme4's ``anova``.

The fits are linear mixed models (``fit_reml``) or GLMMs of one family, link and nAGQ
(``fit_glmm``). They must be of the same rows of the same response (and prior
weights), and each model's
fixed-effect columns and random-effects terms must lie within the next's
(ordered by their number of parameters, as lme4 orders them). REML fits are
refitted by maximum likelihood first (REML criteria of models with different
fixed effects are not comparable), as lme4 does by default; the table's index
says so. For consecutive rows, ``Chisq`` is twice the log-likelihood gain,
``Df`` the number of parameters added, and ``Pr(>Chisq)`` its upper tail in
the χ² distribution with ``Df`` degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..core._options import FitOptions
from ..design._design import Design, ModelArrays
from ._api import refit
from ._tails import chi2_upper_tail

__all__ = ["anova"]


class _Fit(Protocol):
    """What a likelihood-ratio test reads from a fit: ``MixedModelResults`` and
    ``GLMMResults`` both have it."""

    design: Design
    arrays: ModelArrays
    formula: Any

    @property
    def reml(self) -> bool: ...
    @property
    def nobs(self) -> int: ...
    @property
    def n_params(self) -> int: ...
    @property
    def loglik(self) -> float: ...
    @property
    def aic(self) -> float: ...
    @property
    def bic(self) -> float: ...


def anova(*fits: _Fit, refit_ml: bool = True, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Likelihood-ratio tests of two or more nested fits of the same data.

    Args:
        fits: ``MixedModelResults``, or ``GLMMResults`` of one family, link and nAGQ
            (lme4's ``anova`` of ``glmer`` fits), of the same response and rows.
        refit_ml: refit REML fits by maximum likelihood first (default, as lme4;
            GLMMs are maximum likelihood fits already).
        names: a label per fit (default: its formula, else ``model k``).

    Returns:
        One row per model, ordered by ``npar``: ``npar``, ``AIC``, ``BIC``,
        ``logLik``, ``deviance``, ``Chisq``, ``Df``, ``Pr(>Chisq)`` (NaN in
        the first row).

    Examples:
        Does the slope on ``Days`` need its own variance? (lme4: Chisq 42.14 on 2 df.)

        >>> import jaxmixed as jm
        >>> sleep = jm.load_dataset("sleepstudy")
        >>> m0 = jm.fit_reml("Reaction ~ Days + (1 | Subject)", sleep)
        >>> m1 = jm.fit_reml("Reaction ~ Days + (Days | Subject)", sleep)
        >>> table = jm.anova(m0, m1)
        >>> table[["npar", "Chisq", "Df"]].round(2).to_numpy().tolist()
        [[4.0, nan, nan], [6.0, 42.14, 2.0]]
    """
    if len(fits) < 2:
        raise ValueError("anova needs at least two fits to compare")
    labels = _labels(fits, names)
    _check_same_kind(fits)
    _check_same_data(fits)
    refitted = refit_ml and any(f.reml for f in fits)
    if refitted:
        fits = tuple(refit(f, FitOptions(reml=False)) if f.reml else f for f in fits)  # type: ignore[arg-type]
    elif len({f.reml for f in fits}) > 1:
        raise ValueError("the fits mix REML and ML: compare them with refit_ml=True")
    order = sorted(range(len(fits)), key=lambda k: fits[k].n_params)
    ordered = [fits[k] for k in order]
    _check_nested(ordered, [labels[k] for k in order])
    return _table(ordered, [labels[k] for k in order], refitted)


def _labels(fits: Sequence[_Fit], names: Sequence[str] | None) -> list[str]:
    """The given names (one distinct label per fit), else the formulas, else ``model k``."""
    if names is not None:
        labels = [str(n) for n in names]
        if len(labels) != len(fits) or len(set(labels)) != len(labels):
            raise ValueError(f"names must give one distinct label per fit, got {labels}")
        return labels
    formulas = [f.formula for f in fits]
    if all(formulas) and len(set(formulas)) == len(formulas):
        return [str(f) for f in formulas]
    return [f"model {k + 1}" for k in range(len(fits))]


def _table(fits: list[_Fit], labels: list[str], refitted: bool) -> pd.DataFrame:
    npar = np.asarray([f.n_params for f in fits], float)
    loglik = np.asarray([f.loglik for f in fits])
    chisq = np.concatenate([[np.nan], 2.0 * np.diff(loglik)])
    df = np.concatenate([[np.nan], np.diff(npar)])
    p = np.concatenate([[np.nan], chi2_upper_tail(chisq[1:], df[1:])])
    table = pd.DataFrame(
        {
            "npar": npar.astype(int),
            "AIC": [f.aic for f in fits],
            "BIC": [f.bic for f in fits],
            "logLik": loglik,
            "deviance": -2.0 * loglik,
            "Chisq": chisq,
            "Df": df,
            "Pr(>Chisq)": p,
        },
        index=pd.Index(labels, name="model (refitted by ML)" if refitted else "model"),
    )
    return table


def _kind(fit: _Fit) -> str:
    """"linear mixed model", or the GLMM's family, link and nAGQ."""
    family = getattr(fit, "family", None)
    if family is None:
        return "linear mixed model"
    return f"GLMM {family.name}({family.link.name}), nAGQ = {getattr(fit, 'nagq', 1)}"


def _check_same_kind(fits: Sequence[_Fit]) -> None:
    """One kind of model: likelihoods of other families (or approximations) do not compare."""
    kinds = [_kind(f) for f in fits]
    if len(set(kinds)) > 1:
        raise ValueError(f"the fits are of different kinds ({', '.join(sorted(set(kinds)))}): compare models of one")


def _check_same_data(fits: Sequence[_Fit]) -> None:
    first = fits[0]
    for k, fit in enumerate(fits[1:], start=2):
        same = fit.nobs == first.nobs and np.array_equal(np.asarray(fit.arrays.y), np.asarray(first.arrays.y))
        same = same and _same_weights(fit.arrays.weights, first.arrays.weights)
        if not same:
            raise ValueError(
                f"fit {k} is not of the same data as fit 1 ({fit.nobs} against {first.nobs} rows, or another "
                "response or other weights): likelihood-ratio tests compare models of the same rows"
            )


def _same_weights(a, b) -> bool:
    """Equal prior weights (None: all 1)."""
    if a is None and b is None:
        return True
    n = len(a) if a is not None else len(b)
    return np.array_equal(np.ones(n) if a is None else np.asarray(a), np.ones(n) if b is None else np.asarray(b))


def _check_nested(fits: list[_Fit], labels: list[str]) -> None:
    """Each model's fixed columns and random terms within the next's (a clear error otherwise)."""
    for small, big, a, b in zip(fits, fits[1:], labels, labels[1:], strict=False):
        fixed = set(small.design.fixed_names) - set(big.design.fixed_names)
        random = _random_terms(small) - _random_terms(big)
        if fixed or random:
            missing = sorted(fixed) + sorted(f"({t[1]} | {t[0]})" for t in random)
            raise ValueError(f"{a!r} is not nested in {b!r}: {missing} are not in the larger model")


def _random_terms(fit: _Fit) -> set[tuple[tuple[str, ...], str]]:
    """(grouping columns, column) of every random effect of the model."""
    return {(info.columns, col) for info in fit.design.factors for col in info.column_names}
