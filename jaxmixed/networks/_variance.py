"""The random part during EM: its state, its two updates, its likelihood.

Each EM round (``_em``) fits the variance components to ``y − f(x)`` with
``X = [1]``, either exactly with the core (:func:`profiled_variance`: one
profiled fit, warm-started at the previous θ; ML or REML) or by one step of
mixedML's EM formulas (:func:`formula_variance`; one grouping factor). Both
give β₀ and b̂ too, in a :class:`VarianceState` of host arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core._em_step import EMStep, em_step, theta_of
from ..core._fit import FitResult, jit_fit_data
from ..core._options import FitOptions
from ..core._precision import highest_precision
from ..core._statistics import ModelData
from ._data import TrainingSet
from ._options import TrainOptions

__all__ = ["VarianceState", "formula_variance", "generalised_loglik", "initial_variance", "profiled_variance"]


class VarianceState(eqx.Module):
    """The random part during EM (host arrays): θ (user units), Λ per factor
    (q_f, q_f), β₀ (1,), σ, b̂ per factor (J_f, q_f) and the criterion (NaN
    when the EM formulas made it)."""

    theta: Float[np.ndarray, " n_params"]
    lambdas: tuple[Float[np.ndarray, "q q"], ...]
    beta: Float[np.ndarray, " 1"]
    sigma: Float[np.ndarray, ""]
    b: tuple[Float[np.ndarray, "J q"], ...]
    objective: Float[np.ndarray, ""]


def _start_theta(rows: ModelData) -> Float[Array, " n_params"]:
    """lme4's start, θ = 1 on the diagonals (user units) and 0 elsewhere."""
    pieces = [np.asarray(s.rows) == np.asarray(s.cols) for s in rows.structures]
    return jnp.asarray(np.concatenate(pieces), rows.X.dtype)


def profiled_variance(
    train: TrainingSet, f: Float[Array, " n"], current: VarianceState, options: TrainOptions
) -> VarianceState:
    """The core's exact fit of ``y − f(x)`` (``X = [1]``), warm-started at θ."""
    start = FitOptions(reml=options.reml, start=jnp.asarray(current.theta))
    fit = jit_fit_data(train.model_rows(), train.y, start, offset=f, n_obs=train.n_obs)
    fit = jax.tree.map(np.asarray, fit)
    return VarianceState(fit.theta, fit.lambdas, fit.beta, fit.sigma, fit.b, fit.objective)


@eqx.filter_jit
@highest_precision
def _em_update(
    lam: Float[Array, "q q"], sigma2: Float[Array, ""], r: Float[Array, " n"], train: TrainingSet, reml: bool
) -> EMStep:
    rows = train.model_rows()
    return em_step(
        lam, sigma2, r, train.z[0], train.codes[0], train.mask,
        n_levels=rows.index.n_levels, structure=rows.structures[0], reml=reml,
    )  # fmt: skip


def formula_variance(
    train: TrainingSet, f: Float[Array, " n"], current: VarianceState, options: TrainOptions
) -> VarianceState:
    """One EM step of mixedML's Table 1 (ML or REML; one grouping factor)."""
    lam, sigma = jnp.asarray(current.lambdas[0]), jnp.asarray(current.sigma)
    step = jax.tree.map(np.asarray, _em_update(lam, sigma**2, train.y - f, train, options.reml))
    theta = theta_of(step.lam, train.model_rows().structures[0])
    nan = np.asarray(np.nan)
    return VarianceState(theta, (step.lam,), step.beta[None], np.sqrt(step.sigma2), (step.b,), nan)


def initial_variance(train: TrainingSet, n_levels: Sequence[int]) -> VarianceState:
    """lme4's start (Λ = I in user units) and σ² = the response's variance; b̂ = 0.

    Only θ (profiled update) or Λ and σ (EM formulas) start the first round.
    """
    rows = train.model_rows()
    theta = np.asarray(_start_theta(rows))
    lams = tuple(np.eye(s.q) for s in rows.structures)
    y = np.asarray(train.y)[np.asarray(train.mask)]
    b = tuple(np.zeros((n_f, s.q)) for n_f, s in zip(n_levels, rows.structures, strict=True))
    return VarianceState(theta, lams, np.zeros(1), np.asarray(y.std()), b, np.asarray(np.nan))


def generalised_loglik(
    fit: FitResult | VarianceState, residual: Float[np.ndarray, " n"], n_levels: Sequence[int]
) -> float:
    """MERF's and mixedML's generalised log-likelihood (−2 times; smaller is better).

    ``‖e‖²/σ² + n log σ² + Σ_f Σ_j (b̂_jᵀD_f⁺b̂_j + log|D_f|₊)`` with ``e`` the
    residual after fixed and random parts (``residual``, (n,)) and
    ``D_f = σ²ΛΛᵀ`` (pseudo-inverse and pseudo-determinant at a boundary,
    where D is singular); ``fit`` has ``sigma``, ``lambdas`` and ``b`` (a
    FitResult or a :class:`VarianceState`); ``n_levels`` per factor: the real
    levels (the rest pad ``fit.b`` with 0).
    """
    sigma2 = float(fit.sigma) ** 2
    value = float(residual @ residual) / sigma2 + len(residual) * np.log(sigma2)
    for lam, b, n_f in zip(fit.lambdas, fit.b, n_levels, strict=True):
        d = sigma2 * np.asarray(lam) @ np.asarray(lam).T
        vals, vecs = np.linalg.eigh(d)
        keep = vals > 1e-12 * max(vals.max(), 1e-300)
        proj = np.asarray(b) @ vecs[:, keep]
        value += float(np.sum(proj**2 / vals[keep])) + n_f * float(np.sum(np.log(vals[keep])))
    return value
