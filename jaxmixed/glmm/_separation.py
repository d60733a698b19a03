"""Complete and quasi-complete separation of a GLMM's fixed effects (infinite estimates).

The rule. The likelihood of a binomial or Poisson GLMM rises without bound along a
direction d of the fixed effects (d ≠ 0, Xd ≠ 0) when moving β along d never lowers any
row's conditional likelihood, whatever the random effects:

- binomial rows whose every trial succeeded (y = 1) need (Xd)ᵢ ≥ 0,
- rows whose every trial failed (y = 0) need (Xd)ᵢ ≤ 0,
- rows with both successes and failures need (Xd)ᵢ = 0;
- Poisson rows with y = 0 need (Xd)ᵢ ≤ 0 and rows with y > 0 need (Xd)ᵢ = 0.

Then each row's conditional likelihood, and so the marginal likelihood (an average of
their product over the random effects), does not fall along d and rises for the rows with
(Xd)ᵢ ≠ 0: the maximum likelihood estimate lies at infinity and the fitted β̂ is wherever
the optimiser stopped, with a huge standard error. Whether such d exists is a linear
program (Konis's test for logistic regression, here with the Poisson rows added): maximise
Σᵢ sᵢ(Xd)ᵢ (sᵢ = +1 for y = 1 rows, −1 for y = 0 rows) over the box |dⱼ| ≤ 1 of the
columns scaled to unit maximum, subject to the sign constraints. A positive optimum
(above round-off) is separation; then, per coefficient j, maximising and minimising dⱼ
over the same constraints says which coefficients can go to infinity (those with a
nonzero bound). The test reads the data, not the fit, so it does not depend on where the
optimiser stopped (the fitted-probability rule, μ̂ within 1e-8 of 0 or 1, does: an
L-BFGS fit stops once the gradient is small, often at |η̂| ≈ 15, μ̂ ≈ 1e-7). The random
effects need no test: their penalty keeps their modes finite.

A certificate of overlap, for many responses at once. By LP duality no such d exists
exactly when Σᵢ cᵢxᵢ = 0 for some coefficients cᵢ with sᵢcᵢ > 0 on every row with
sᵢ ≠ 0 (any sign elsewhere). A fit supplies a candidate: cᵢ = aᵢ(yᵢ − μ̂ᵢ) has those
signs, and Σᵢ cᵢxᵢ is about the score of β, near 0 at the optimum; the least-squares
correction δ = −X(XᵀX)⁻¹Σᵢcᵢxᵢ makes it exactly 0, and if the signs survive, the
response is not separated (:func:`overlap_certified`, one p×p solve per response). Where
they do not, the LP decides (:func:`separated_responses`): the answer is the LP's
either way, at a fraction of its cost (the LP takes about 2 ms per response; the
fit's means are only a candidate, so the answer still does not depend on where the
optimiser stopped).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from jaxtyping import Bool, Float
from scipy.optimize import linprog

__all__ = ["SeparationWarning", "overlap_certified", "separated_coefficients", "separated_responses"]

# The LP's optimum (Σ|Xd| over the separated rows, columns scaled to max |x| = 1) that is
# separation rather than round-off of the solver (HiGHS works to ~1e-9).
_TOL = 1e-6
# The certificate's coefficients must keep their signs by this much (relative to the
# row's prior weight): a fitted mean within it of 0 or 1 is left to the LP.
_MARGIN = 1e-6


class SeparationWarning(UserWarning):
    """A fixed effect's maximum likelihood estimate is infinite (complete or quasi-complete
    separation): its estimate and standard error mean nothing."""


def _row_signs(y: Float[np.ndarray, " n"], binomial: bool) -> Float[np.ndarray, " n"]:
    """sᵢ: +1 where (Xd)ᵢ may only grow (all successes), −1 where it may only fall (no
    successes / no events), 0 where it must stay."""
    if binomial:
        return np.where(y >= 1.0, 1.0, np.where(y <= 0.0, -1.0, 0.0))
    return np.where(y <= 0.0, -1.0, 0.0)


def separated_coefficients(
    X: Float[np.ndarray, "n p"], y: Float[np.ndarray, " n"], names: list[str], *, binomial: bool
) -> list[str]:
    """The names of the fixed effects whose estimates can go to ±infinity (see the
    module docstring); [] when the fixed part is not separated. ``y``: proportions
    (binomial) or counts (Poisson)."""
    X = np.asarray(X, float)
    if X.shape[1] == 0:
        return []
    scale = np.max(np.abs(X), axis=0)
    xs = X / np.where(scale > 0, scale, 1.0)
    s = _row_signs(np.asarray(y, float), binomial)
    free = s != 0
    if not free.any():
        return []
    # s·(Xd) ≥ 0 on the free rows: −s·X d ≤ 0; Xd = 0 on the others
    a_ub, a_eq = -(s[free, None] * xs[free]), xs[~free]
    args = {
        "A_ub": a_ub,
        "b_ub": np.zeros(len(a_ub)),
        "A_eq": a_eq if len(a_eq) else None,
        "b_eq": np.zeros(len(a_eq)) if len(a_eq) else None,
        "bounds": [(-1.0, 1.0)] * X.shape[1],
        "method": "highs",
    }
    total = linprog(-(s[free] @ xs[free]), **args)
    if total.status != 0 or -total.fun <= _TOL:
        return []
    out = []
    for j, name in enumerate(names):
        unit = np.zeros(X.shape[1])
        unit[j] = 1.0
        reach = [linprog(sign * unit, **args) for sign in (-1.0, 1.0)]
        if any(r.status == 0 and abs(r.fun) > _TOL for r in reach):
            out.append(name)
    return out


def separation_message(names: list[str], table: pd.DataFrame) -> str:
    """The warning's text: the coefficients, their estimates and standard errors, and what to do."""
    shown = ", ".join(f"{n} (estimate {table.loc[n, 'Estimate']:.4g}, SE {table.loc[n, 'Std. Error']:.4g})" for n in names)
    verb = "goes" if len(names) == 1 else "go"
    return (
        f"complete or quasi-complete separation: the likelihood keeps rising as {shown} {verb} to "
        "±infinity (some levels or ranges of the predictors have only successes or only failures, "
        "or only zero counts), so these estimates and their standard errors mean nothing. Drop or "
        "merge the offending levels, or use a penalised (e.g. Bayesian) fit"
    )


def overlap_certified(
    X: Float[np.ndarray, "n p"],
    ys: Float[np.ndarray, "K n"],
    mus: Float[np.ndarray, "K n"],
    weights: Float[np.ndarray, " n"],
    *,
    binomial: bool,
) -> Bool[np.ndarray, " K"]:
    """Which responses of ``ys`` (K, n) are certified not separated, from their fitted means
    ``mus`` (K, n) (the module docstring's certificate); False means "not certified", not
    "separated"."""
    X, ys, mus = np.asarray(X, float), np.asarray(ys, float), np.asarray(mus, float)
    a = np.asarray(weights, float)
    if X.shape[1] == 0:
        return np.ones(len(ys), bool)
    coef = a * (ys - mus)  # (K, n)
    gram = X.T @ X
    correction = np.linalg.solve(gram, X.T @ coef.T).T @ X.T  # (K, n): X(XᵀX)⁻¹Xᵀc per response
    coef = coef - correction
    s = _row_signs(ys, binomial)
    kept = (s == 0) | (s * coef > _MARGIN * a)
    return np.all(kept & np.isfinite(coef), axis=1)


def separated_responses(
    X: Float[np.ndarray, "n p"],
    ys: Float[np.ndarray, "K n"],
    mus: Float[np.ndarray, "K n"],
    weights: Float[np.ndarray, " n"],
    names: list[str],
    *,
    binomial: bool,
) -> dict[int, list[str]]:
    """Response k -> its separated fixed effects, for the responses that have any: the
    certificate first, the LP (:func:`separated_coefficients`) where it fails."""
    certified = overlap_certified(X, ys, mus, weights, binomial=binomial)
    out = {}
    for k in np.flatnonzero(~certified):
        found = separated_coefficients(X, ys[k], names, binomial=binomial)
        if found:
            out[int(k)] = found
    return out
