"""Responses drawn from a fitted model (lme4's ``simulate``), in JAX.

For the fitted model ``y = Xβ̂ + Σ_f Z_f b_f + ε`` with, per level of factor
f, ``b = σ̂ Λ̂_f u`` and ``u ~ N(0, I)``, and ``εᵢ ~ N(0, σ̂²/wᵢ)``: one draw
per key, new random effects and new residuals each time (lme4's
``simulate(m, use.u = FALSE)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._fit import FitResult
from ._precision import highest_precision
from ._statistics import ModelData
from ._typing import HostOrDevice

__all__ = ["factor_codes", "simulate", "simulate_draws", "simulate_one"]


def factor_codes(data: ModelData) -> tuple[HostOrDevice, ...]:
    """Per factor, the (n,) level codes of the rows, read from the design index.

    Factor 1's are stored directly; a later factor's level is its first dense
    column's position within its block: ``(column − offset) // q_f``.
    """
    index = data.index
    codes = [index.codes]
    start = 0
    for offset, _, q in index.layout.blocks:
        assert index.dense is not None  # later factors live in the dense columns
        codes.append((index.dense.dense_cols[:, start] - offset) // q)
        start += q
    return tuple(codes)


@highest_precision
def simulate_one(key: PRNGKeyArray, data: ModelData, result: FitResult) -> Float[Array, " n"]:
    """One response (n,) drawn from the fitted model ``result`` over ``data``'s design.

    ``data`` holds the raw rows (``prepare``/``model_data``: X, Z and prior
    weights in the user's units); ``result`` a fit of that design. Padded rows
    (weight 1, X = Z = 0) get pure noise: drop them.
    """
    keys = jax.random.split(key, len(data.Z) + 1)
    dtype = data.X.dtype
    sigma = result.sigma
    y = jnp.asarray(data.X) @ result.beta
    for k, (z, codes, lam, b) in enumerate(
        zip(data.Z, factor_codes(data), result.lambdas, result.b, strict=True)
    ):
        u = jax.random.normal(keys[k], b.shape, dtype)  # (J_f, q_f)
        effects = sigma * u @ lam.T
        y = y + jnp.einsum("nq,nq->n", z, effects[codes])
    noise = jax.random.normal(keys[-1], y.shape, dtype)
    return y + sigma * noise / jnp.sqrt(data.weights)


@highest_precision
def simulate(key: PRNGKeyArray, data: ModelData, result: FitResult, n: int) -> Float[Array, "draws n"]:
    """``n`` responses (n, rows) drawn from the fitted model.

    Draw k uses ``jax.random.fold_in(key, k)``, so it does not depend on how
    many draws are made or how they are split into batches.
    """
    return simulate_draws(key, jnp.arange(n), data, result)


def simulate_draws(
    key: PRNGKeyArray, draws: Int[Array, " draws"], data: ModelData, result: FitResult
) -> Float[Array, "draws n"]:
    """The draws numbered ``draws`` (m,) of :func:`simulate`: (m, rows)."""
    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(draws)
    return jax.vmap(lambda k: simulate_one(k, data, result))(keys)
