"""The rows a learned fixed part is trained and checked on, and the sums over them.

A :class:`TrainingSet` holds training or held-out rows on the device, padded
with zero rows to a size shared by similar data sets (``core._padding``), so
that they share compiled steps; ``mask`` marks the real rows. The random part
``Zb̂`` and the mean squared error over the real rows are computed here for
every training mode.
"""

from __future__ import annotations

from typing import Protocol

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, Bool, Float, Int

from ..core._padding import LINEAR_BITS, bucket
from ..core._precision import highest_precision
from ..core._statistics import ModelData
from ..core._typing import HostOrDevice

__all__ = ["RandomEffects", "TrainingSet", "masked_mse", "plain_rows", "random_part", "jit_random_part"]


class TrainingSet(eqx.Module):
    """Rows for training or validation.

    ``x`` (n, p) features; ``y`` (n,); ``mask`` (n,): real rows (the rest
    pad the arrays to a size shared by similar data sets, with x, y, z = 0);
    ``z`` per factor (n, q_f) and ``codes`` per factor (n,) (level, -1 for a
    level absent from training); ``rows``: the core's :class:`ModelData` of
    ``X = [1]`` and the random part (None for validation rows and for a
    network without random part); ``n_obs``: the number of real rows.
    """

    x: Float[Array, "n p"]
    y: Float[Array, " n"]
    mask: Bool[Array, " n"]
    z: tuple[Float[Array, "n q"], ...]
    codes: tuple[Int[Array, " n"], ...]
    rows: ModelData | None
    n_obs: Float[Array, ""]

    def model_rows(self) -> ModelData:
        """``rows``, which training rows of a model with a random part always carry."""
        assert self.rows is not None, "training rows of a mixed model carry the core's ModelData"
        return self.rows


def plain_rows(
    x: Float[np.ndarray, "n p"], y: Float[np.ndarray, " n"], dtype: DTypeLike = jnp.float64
) -> TrainingSet:
    """Rows with no random part (for ``train_plain``): x (n, p), y (n,), padded with
    zero rows to ``bucket(n, LINEAR_BITS)`` (``core._padding``'s rule for rows), so that
    data sets of similar size (cross-validation folds) share compiled steps."""
    n = len(y)
    size = bucket(n, LINEAR_BITS)
    pad = [(0, size - n)]
    return TrainingSet(
        x=jnp.asarray(np.pad(np.asarray(x), pad + [(0, 0)]), dtype),
        y=jnp.asarray(np.pad(np.asarray(y), pad), dtype),
        mask=jnp.asarray(np.arange(size) < n),
        z=(),
        codes=(),
        rows=None,
        n_obs=jnp.asarray(n, dtype),
    )


class RandomEffects(Protocol):
    """Conditional modes per factor (J_f, q_f): a core ``FitResult`` or EM's ``VarianceState``."""

    @property
    def b(self) -> tuple[Float[HostOrDevice, "J q"], ...]: ...


def random_part(fit: RandomEffects, data: TrainingSet) -> Float[Array, " n"]:
    """``Zb̂`` (n,) of the rows of ``data``; 0 for a level absent from training."""
    total = jnp.zeros(data.y.shape, data.y.dtype)
    for b, z, codes in zip(fit.b, data.z, data.codes, strict=True):
        contrib = jnp.einsum("nq,nq->n", z, b[jnp.maximum(codes, 0)])
        total = total + jnp.where(codes >= 0, contrib, 0.0)
    return total


jit_random_part = eqx.filter_jit(highest_precision(random_part))


def masked_mse(data: TrainingSet, pred: Float[Array, " n"], target: Float[Array, " n"] | None = None) -> Float[Array, ""]:
    """Mean of ``(target − pred)²`` (scalar) over the real rows of ``data``; ``target``
    (n,) defaults to the response ``data.y``."""
    err = jnp.where(data.mask, (data.y if target is None else target) - pred, 0.0)
    return jnp.sum(err * err) / data.n_obs
