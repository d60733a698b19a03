"""Mixed models whose fixed part is a function ``f(x)``: the pure losses.

The model is ``y = f(x) + β₀ + Zb + ε`` with lme4's random part (``b ~
N(0, σ²ΛΛᵀ)`` per level of each grouping factor, ``ε ~ N(0, σ²)``) and ``f``
any function of a row of features (an equinox network). Two losses:

- :func:`joint_loss`, the **profiled criterion of the residual**: the core's
  ``objective`` (``_objective``) of ``r = y − f(x)`` with ``X = [1]``, so β₀
  and σ² are profiled out exactly and only the network and φ (the
  log-Cholesky parameters of Λ̃) are trained. The design statistics (of ``1``
  and Z) do not depend on the network and are computed once; a step costs
  one forward pass, the response statistics of ``r`` (segment sums) and one
  evaluation of the criterion. REML here is REML for β₀ only: X is fixed, so
  the criterion has no ``log|XᵀV⁻¹X|`` term that the network could lower by
  making its features collinear (which REML with ``X = H(x)`` would reward).
- :func:`group_loss`, the **unprofiled ML deviance summed over groups** of one
  grouping factor (σ a parameter, β₀ the network's own bias), for minibatches
  of whole groups: the deviance of independent groups is a sum, so a batch
  of groups scaled by the number of batches is an unbiased estimate of it.

Shapes: n rows, d features, one scalar output per row.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._covariance import CovarianceStructure, lambda_from_phi
from ._linalg import batched_solve_lower
from ._objective import objective
from ._precision import highest_precision
from ._statistics import DesignStatistics, ModelStatistics, response_statistics

__all__ = [
    "GroupLayout",
    "NeuralData",
    "group_layout",
    "group_loss",
    "joint_loss",
    "joint_statistics",
    "network_output",
]


class NeuralData(eqx.Module):
    """The training rows of a mixed model with a network fixed part.

    Attributes:
        x: (n, d) features (standardised by the caller).
        y: (n,) response.
        mask: (n,) bool: real rows; the others are padding (X, Z and y 0), so
            that data sets of similar size share compiled code.
        design: the :class:`DesignStatistics` of ``X = [1]`` and the formula's
            random part over these rows (``design_statistics(rows, n_obs)``).
    """

    x: Float[Array, "n d"]
    y: Float[Array, " n"]
    mask: Bool[Array, " n"]
    design: DesignStatistics


@highest_precision
def network_output(model: Callable, x: Float[Array, "n d"]) -> Float[Array, " n"]:
    """``f(x)`` (n,) of a model mapping one row (d,) to a scalar (shape () or (1,))."""
    out = jax.vmap(model)(x)
    return out.reshape(x.shape[0])


# One compiled forward pass shared by every caller (training, prediction, estimators).
jit_network_output = eqx.filter_jit(network_output)


@highest_precision
def joint_statistics(model: Callable, data: NeuralData) -> ModelStatistics:
    """The core's statistics of the residual ``y − f(x)`` (design shared; 0 on padding)."""
    f = jnp.where(data.mask, network_output(model, data.x), 0.0)
    return ModelStatistics(data.design, response_statistics(data.design, data.y, offset=f))


@highest_precision
def joint_loss(
    model: Callable, phi: Float[Array, " n_params"], data: NeuralData, reml: bool = True
) -> Float[Array, ""]:
    """lme4's criterion (REML or ML deviance) of ``y − f(x)`` at φ, β₀ and σ² profiled.

    Differentiable with respect to the model's arrays and φ.
    """
    return objective(phi, joint_statistics(model, data), reml)


class GroupLayout(eqx.Module):
    """The rows of each level of one grouping factor, padded to a common length.

    ``rows`` (G, m): row indices (padding repeats row 0); ``mask`` (G, m):
    which entries are real rows. m is the largest group size.
    """

    rows: jax.Array
    mask: jax.Array


def group_layout(codes: np.ndarray, n_levels: int) -> GroupLayout:
    """Host: the :class:`GroupLayout` of level codes (n,) in ``0..n_levels-1``."""
    codes = np.asarray(codes)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=n_levels)
    width = int(counts.max())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(codes)) - np.repeat(starts, counts)
    rows = np.zeros((n_levels, width), np.int32)
    mask = np.zeros((n_levels, width), bool)
    rows[codes[order], position] = order
    mask[codes[order], position] = True
    return GroupLayout(jnp.asarray(rows), jnp.asarray(mask))


@highest_precision
def group_loss(
    model: Callable,
    phi: jax.Array,
    log_sigma: jax.Array,
    x: jax.Array,
    y: jax.Array,
    z: jax.Array,
    layout: GroupLayout,
    groups: jax.Array,
    *,
    structure: CovarianceStructure,
    z_scale: jax.Array,
    scale: jax.Array | float = 1.0,
) -> jax.Array:
    """The ML deviance ``−2 log L`` of the groups ``groups`` (B,), times ``scale``.

    Per group g (rows ``r_g = y_g − f(x_g)``, random-effects rows ``Z_g``;
    ``Λ = diag(z_scale) Λ̃(φ)`` in the user's units of Z):
    ``n_g log(2πσ²) + log|I + ΛᵀZ_gᵀZ_gΛ| + (r_gᵀr_g − ‖L⁻¹ΛᵀZ_gᵀr_g‖²)/σ²``
    with ``L Lᵀ = I + ΛᵀZ_gᵀZ_gΛ``. A group index of -1 contributes nothing
    (padding of the last batch). Summed over every group once (scale 1) this
    is the full deviance at (f, φ, σ).

    Args:
        x (n, d), y (n,), z (n, q): all rows; layout: their groups.
        groups: (B,) level indices of this batch.
        structure: the factor's covariance structure; z_scale (q,): the
            standardisation of Z's columns (φ's units, as in the core).
    """
    real = groups >= 0
    g = jnp.where(real, groups, 0)
    rows, mask = layout.rows[g], layout.mask[g] & real[:, None]  # (B, m)
    f = network_output(model, x[rows.reshape(-1)]).reshape(rows.shape)
    r = jnp.where(mask, y[rows] - f, 0.0)
    zg = jnp.where(mask[..., None], z[rows], 0.0)  # (B, m, q)
    lam = z_scale[:, None] * lambda_from_phi(phi, structure)
    zl = zg @ lam  # (B, m, q)
    q = lam.shape[0]
    m_mat = jnp.eye(q, dtype=r.dtype) + jnp.einsum("bmi,bmj->bij", zl, zl)
    chol = jnp.linalg.cholesky(m_mat)
    c = batched_solve_lower(chol, jnp.einsum("bmi,bm->bi", zl, r)[..., None])[..., 0]
    n_g = jnp.sum(mask, axis=1).astype(r.dtype)
    sigma2 = jnp.exp(2.0 * log_sigma)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    quad = (jnp.sum(r * r, axis=1) - jnp.sum(c * c, axis=1)) / sigma2
    dev = n_g * jnp.log(2.0 * jnp.pi * sigma2) + jnp.where(real, log_det, 0.0) + quad
    return scale * jnp.sum(dev)
