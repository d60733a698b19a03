"""Tests of the fixed-effect terms: lmerTest's ``anova(m, type = 1 | 3)`` and lme4's ``drop1``.

``term_anova`` gives one F test per term of the fixed part (R's term labels,
``Design.fixed_terms``). Each term's hypothesis is a contrast matrix L
(k, p) over β̂, built as lmerTest builds it:

- type I (sequential): the rows of ``Dᵀ`` belonging to the term, where
  ``X'X = D U`` is the Doolittle (LU, no pivoting) decomposition; each term is
  tested after the terms before it.
- type III: lmerTest's ``get_contrasts_type3``. The full dummy coding of
  every term (R's ``model.matrix(~ 0 + term)``: one column per cell of its
  categorical factors) is expressed in a full-rank treatment-coded basis
  X_t, ``Lᵀ = X_t⁺ [1, dummies]``; from the highest-order term down, each
  term's columns of L are made orthogonal (over the cells) to the columns of
  the terms that contain it (lmerTest's rule: its factors among theirs, the
  same numeric factors); a term's hypothesis is then its columns of L, at the
  rows of X_t's own cells, mapped to the fit's coding by ``X_t⁺ X``. The
  hypotheses are therefore the same whatever the contrast coding (or
  reference level) of the fit.

The F test of each hypothesis is lmerTest's ``contest``
(:func:`._inference.contest`) with the ``ddf`` method's denominator df:
``"satterthwaite"`` or ``"kenward-roger"`` (pbkrtest's scaled F and df).

``drop1`` is lme4's ``drop1(m, test = "Chisq")``: each term that marginality
allows (no other term contains its factors) is removed in turn (its columns
of X dropped) and the model refitted; every fit is by maximum likelihood
(lme4's ``extractAIC`` refits a REML fit by ML), so the AIC and the
likelihood-ratio statistics are comparable.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..core._callers import user_stacklevel
from ..design._design import Design, FixedTerm, ModelArrays
from ..design._formulaic import full_dummies
from . import _inference
from ._api import refit
from ._tails import chi2_upper_tail

if TYPE_CHECKING:
    from ._results import MixedModelResults

__all__ = ["ANOVA_TYPES", "drop1", "term_anova", "term_hypotheses"]

ANOVA_TYPES = (1, 3)

_COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]


def term_anova(results: MixedModelResults, type: int = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
    """lmerTest's ``anova(m, type = type, ddf = ddf)``: one F test per fixed-effect term.

    Returns a table indexed by R's term labels (the intercept is not tested)
    with ``Sum Sq``, ``Mean Sq`` (``F·σ̂²``; with Kenward–Roger the unscaled F's,
    as lmerTest), ``NumDF``, ``DenDF``, ``F value``, ``Pr(>F)``. A term whose columns were all dropped as aliased is left out.
    """
    if type not in ANOVA_TYPES:
        raise ValueError(f"type must be one of {ANOVA_TYPES}, got {type!r}")
    ddf = _inference.checked_ddf(ddf)
    if ddf == "none":
        raise ValueError("anova's F tests need a denominator df: ddf='satterthwaite' or 'kenward-roger'")
    hypotheses = term_hypotheses(results.design, results.arrays.X, type)
    rows = [_inference.contest(results, L, ddf=ddf) for L in hypotheses.values()]
    if not rows:
        return pd.DataFrame(columns=_COLUMNS, index=pd.Index([], dtype=object), dtype=float)
    table = pd.concat(rows, ignore_index=True)
    return pd.DataFrame(table[_COLUMNS].to_numpy(), columns=_COLUMNS, index=pd.Index(list(hypotheses)))


def term_hypotheses(
    design: Design, X: Float[np.ndarray, "n p"], type: int = 3
) -> dict[str, Float[np.ndarray, "k p"]]:
    """Each tested term's contrast matrix L (k, p) over β̂ (lmerTest's type I or III).

    ``X`` (n, p): the fitted fixed-effects matrix (``design.fixed_names``'
    columns). Terms without columns (all aliased) are left out.
    """
    terms = [t for t in design.fixed_terms if not t.is_intercept and t.columns]
    if not design.fixed_terms and X.shape[1]:
        raise ValueError("the design records no fixed-effect terms")
    p = X.shape[1]
    if type == 1 or p <= 1 or len(terms) <= 1:  # lmerTest: type III of one term is type I's
        contrasts = _type1(X, terms)
    else:
        contrasts = _type3(design, X, terms)
    return {t.label: L for t, L in zip(terms, contrasts, strict=True) if len(L)}


def doolittle(a: Float[np.ndarray, "p p"], eps: float = 1e-6) -> Float[np.ndarray, "p p"]:
    """The unit lower-triangular D of ``a = D U`` (LU without pivoting), as lmerTest's
    ``doolittle``: a pivot below ``eps`` gives a zero column, entries below ``eps`` are 0."""
    n = a.shape[0]
    lower, upper = np.eye(n), np.zeros((n, n))
    for i in range(n):
        upper[i] = a[i] - lower[i, :i] @ upper[:i]
        if abs(upper[i, i]) >= eps:
            lower[i + 1 :, i] = (a[i + 1 :, i] - lower[i + 1 :, :i] @ upper[:i, i]) / upper[i, i]
    lower[np.abs(lower) < eps] = 0.0
    return lower


def _type1(X: Float[np.ndarray, "n p"], terms: Sequence[FixedTerm]) -> list[np.ndarray]:
    """Type I hypotheses: per term, its rows of ``Dᵀ`` (``X'X = D U``).

    Computed on the columns scaled to unit length (``X S⁻¹``, S the column norms:
    ``D_S = S⁻¹ D S``, so ``L = D_Sᵀ S = S Dᵀ``, each row a multiple of Dᵀ's, the same
    F test), so that the pivot and zero thresholds of :func:`doolittle` do not depend
    on the covariates' units.
    """
    p = X.shape[1]
    if p == 1:
        return [np.eye(1)[list(t.columns)] for t in terms]
    xtx = X.T @ X
    scale = np.sqrt(np.diag(xtx))
    scale = np.where(scale > 0, scale, 1.0)
    dt = doolittle(xtx / np.outer(scale, scale)).T * scale[None, :]
    return [dt[list(t.columns)] for t in terms]


def zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``: ``x`` rounded to ``digits`` significant digits of its largest entry."""
    mx = float(np.max(np.abs(x), initial=0.0))
    if not mx > 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def _contains(outer: FixedTerm, inner: FixedTerm) -> bool:
    """lmerTest's containment: ``inner``'s factors a proper subset of ``outer``'s,
    with the same numeric factors."""
    numeric = [{f for f, num in zip(t.factors, t.numeric, strict=True) if num} for t in (inner, outer)]
    return set(inner.factors) < set(outer.factors) and numeric[0] == numeric[1]


@dataclasses.dataclass(frozen=True)
class _CellCoding:
    """lmerTest's ``rdX`` (n, r): the intercept and each term's full dummy coding.

    ``owner`` (r,): per column, the index of its term in ``terms`` (-1: the intercept).
    """

    matrix: Float[np.ndarray, "n r"]
    owner: np.ndarray


def _cell_coding(design: Design, X: Float[np.ndarray, "n p"], terms: Sequence[FixedTerm]) -> _CellCoding:
    """The full dummy coding of the terms (numeric-only terms: their columns of X)."""
    blocks, owner = [], []
    if any(t.is_intercept for t in design.fixed_terms):
        blocks.append(np.ones((X.shape[0], 1)))
        owner.append(-1)
    for k, term in enumerate(terms):
        if term.expr is None:
            block = X[:, list(term.columns)]
        else:
            if design.fixed_frame is None:
                raise ValueError(f"the design keeps no data to code the term {term.label!r} by its cells")
            block = full_dummies(term, design.fixed_frame)
        blocks.append(block)
        owner += [k] * block.shape[1]
    matrix = np.concatenate(blocks, axis=1)
    empty = {terms[k].label if k >= 0 else "(Intercept)" for k, col in zip(owner, matrix.T, strict=True) if not col.any()}
    if empty:
        warnings.warn(
            f"missing cells for: {sorted(empty)}: interpret type III hypotheses with care",
            stacklevel=user_stacklevel(),
        )
    return _CellCoding(matrix, np.asarray(owner))


def _treatment_basis(cells: _CellCoding, X: Float[np.ndarray, "n p"]) -> tuple[np.ndarray, np.ndarray]:
    """A full-rank treatment-coded basis of X's column space, from the cell columns.

    Returns (positions of its columns among the cell columns (p,), the map
    (p, p) from its coefficients to X's). When every column of X is a cell column
    (treatment contrasts) that is X itself and the map the identity (lmerTest's
    path); else cells are taken in order, each term's block from its last cell
    (so its first level is the reference, as ``contr.treatment``), when not in the
    span of those taken (lmerTest remakes X with treatment contrasts).
    """
    matrix = cells.matrix
    matches = [np.flatnonzero(np.all(matrix == col[:, None], axis=0)) for col in X.T]
    if all(len(m) for m in matches):
        return np.asarray([m[0] for m in matches]), np.eye(X.shape[1])
    order = np.concatenate([np.flatnonzero(cells.owner == k)[::-1] for k in dict.fromkeys(cells.owner)])
    chosen: list[int] = []
    scale = np.linalg.norm(matrix, axis=0)
    for j in order:
        basis = matrix[:, chosen]
        resid = matrix[:, j] - (basis @ np.linalg.lstsq(basis, matrix[:, j], rcond=None)[0] if chosen else 0.0)
        if scale[j] > 0 and np.linalg.norm(resid) > 1e-7 * scale[j]:
            chosen.append(int(j))
    chosen.sort()
    basis = matrix[:, chosen]
    return np.asarray(chosen), zapsmall(np.linalg.lstsq(basis, X, rcond=None)[0])


def _type3(design: Design, X: Float[np.ndarray, "n p"], terms: Sequence[FixedTerm]) -> list[np.ndarray]:
    """Type III hypotheses (lmerTest's ``get_contrasts_type3``; see the module)."""
    cells = _cell_coding(design, X, terms)
    chosen, to_x = _treatment_basis(cells, X)
    basis = cells.matrix[:, chosen]
    L = zapsmall(np.linalg.lstsq(basis, cells.matrix, rcond=None)[0].T)  # (r, p_t)
    mine = [np.flatnonzero(cells.owner[chosen] == k) for k in range(len(terms))]
    # Highest order first (stable, as R's order(decreasing = TRUE) keeps ties in order).
    for k in sorted(range(len(terms)), key=lambda k: -len(terms[k].factors)):
        outer = [j for j, t in enumerate(terms) if _contains(t, terms[k])]
        if outer and len(mine[k]):
            a = L[:, np.concatenate([mine[j] for j in outer])]
            b = L[:, mine[k]]
            L[:, mine[k]] = zapsmall(b - a @ np.linalg.lstsq(a, b, rcond=None)[0])
    L = L[chosen]  # (p_t, p_t): rows at X_t's own cells
    out = []
    for cols in mine:
        Lk = L[:, cols].T
        Lk = Lk[np.abs(Lk).sum(axis=1) > 1e-8]
        out.append(Lk @ to_x)
    return out


def drop1(results: MixedModelResults, test: str = "Chisq") -> pd.DataFrame:
    """lme4's ``drop1(m, test = "Chisq")``: each droppable term removed in turn.

    The terms that marginality allows are those whose factors are not all in
    another term. Every model (the full one first) is fitted by maximum
    likelihood. Returns a table indexed ``<none>`` then the term labels:
    ``npar`` (parameters removed; NaN for ``<none>``), ``AIC``, and with
    ``test="Chisq"`` ``LRT`` (twice the log-likelihood lost) and ``Pr(Chi)``
    (its χ² upper tail with ``npar`` df).
    """
    if test not in ("Chisq", "none"):
        raise ValueError(f"test must be 'Chisq' or 'none', got {test!r}")
    terms = results.design.fixed_terms
    if not any(t.is_intercept for t in terms) and any(not all(t.numeric) for t in terms):
        # R refits `update(m, . ~ . - term)`, which codes the remaining factors anew
        # (the first one takes the intercept's place); removing columns would not.
        raise ValueError(
            "drop1 of a model without an intercept and with categorical terms is not supported: "
            "fit the reduced models with their formulas and compare them with jaxmixed.anova"
        )
    options = dataclasses.replace(results.options, reml=False)
    full = refit(results, options)
    labels, npar, aic, loglik = ["<none>"], [np.nan], [full.aic], [full.loglik]
    for term in droppable_terms(results.design):
        design, arrays = without_term(results.design, results.arrays, term)
        reduced = refit(results, options, design=design, arrays=arrays)
        labels.append(term.label)
        npar.append(float(full.n_params - reduced.n_params))
        aic.append(reduced.aic)
        loglik.append(reduced.loglik)
    table = pd.DataFrame({"npar": npar, "AIC": aic}, index=pd.Index(labels))
    if test == "Chisq":
        lrt = 2.0 * (full.loglik - np.asarray(loglik))
        lrt[0] = np.nan
        p = np.full(len(lrt), np.nan)
        p[1:] = chi2_upper_tail(lrt[1:], np.asarray(npar[1:]))
        table = table.assign(LRT=lrt, **{"Pr(Chi)": p})
    return table


def droppable_terms(design: Design) -> list[FixedTerm]:
    """R's ``drop.scope``: the terms (not the intercept) whose factors are not all
    among another term's."""
    terms = [t for t in design.fixed_terms if not t.is_intercept]
    return [
        t for t in terms if not any(o is not t and set(t.factors) <= set(o.factors) for o in terms)
    ]


def without_term(design: Design, arrays: ModelArrays, term: FixedTerm) -> tuple[Design, ModelArrays]:
    """The model without ``term``: its columns dropped from X and the names."""
    keep = [k for k in range(len(design.fixed_names)) if k not in term.columns]
    new_position = {old: new for new, old in enumerate(keep)}
    names = tuple(design.fixed_names[k] for k in keep)
    terms = tuple(
        dataclasses.replace(t, columns=tuple(new_position[c] for c in t.columns))
        for t in design.fixed_terms
        if t is not term
    )
    reduced = dataclasses.replace(
        design, fixed_names=names, all_fixed_names=names, dropped_fixed=(), fixed_terms=terms
    )
    return reduced, dataclasses.replace(arrays, X=arrays.X[:, keep])
