"""Host side of a network fit before training: features, rows, held-out split, seed, model.

The formula's fixed part without its intercept gives the features
(:func:`features`); :func:`training_set` gathers the rows of an index with
the design's random part, padded as ``fit_reml`` pads (``core._padding``);
:func:`split_rows` draws the held-out rows; :func:`check_model` makes sure
the network maps a row of features to a scalar.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Float, Int

from ..core._padding import LINEAR_BITS, bucket, pad_to_buckets, padded_levels
from ..core._statistics import ModelData, model_data
from ..design._design import Design, ModelArrays
from ._data import TrainingSet

__all__ = ["cast_model", "check_model", "features", "pad_rows", "seed_of", "split_rows", "training_set"]


def features(design: Design, arrays: ModelArrays) -> tuple[Float[np.ndarray, "n p"], tuple[str, ...]]:
    """The fixed part's columns without the intercept: (n, p) and their names."""
    # "(Intercept)" from a formula, "Intercept" array input's default column.
    keep = [k for k, name in enumerate(design.fixed_names) if name not in ("(Intercept)", "Intercept")]
    names = tuple(design.fixed_names[k] for k in keep)
    if not names:
        raise ValueError(
            f"the formula {design.formula!r} names no features for the fixed part: "
            "write them on the right of ~, e.g. 'y ~ x1 + x2 + (1 | g)'"
        )
    return arrays.X[:, keep], names


def pad_rows(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` (n, …) with zero rows appended up to ``size`` rows."""
    return np.concatenate([a, np.zeros((size - len(a),) + a.shape[1:], a.dtype)])


def _random_rows(
    arrays: ModelArrays, design: Design, index: Int[np.ndarray, " n"], dtype: DTypeLike
) -> ModelData:
    """The core's ModelData of ``X = [1]`` and the random part of rows ``index``, padded
    as ``fit_reml`` pads (``core._padding``): levels to ``padded_levels``, rows (X = Z = 0,
    weight 1), cross entries and pairs to their buckets. On the device."""
    z, codes = [zf[index] for zf in arrays.Z], [c[index] for c in arrays.codes]
    levels = padded_levels([f.n_levels for f in design.factors])
    ones = np.ones((len(index), 1))
    data = model_data(ones, z, codes, levels, design.structures, dtype=dtype, on_device=False)
    return jax.device_put(pad_to_buckets(data))


def training_set(
    x: Float[np.ndarray, "N p"],
    y: Float[np.ndarray, " N"],
    arrays: ModelArrays,
    design: Design,
    index: Int[np.ndarray, " n"],
    dtype: DTypeLike,
    rows: bool = True,
) -> TrainingSet:
    """Rows ``index`` of x (N, p), y (N,) and the design's random part, padded with zeros.

    With ``rows`` (default) the core's ModelData of ``X = [1]`` and the random
    part is built and padded by the shared mechanism (:func:`_random_rows`),
    and x, y, z and the codes are padded to its rows; held-out rows
    (``rows=False``) need only x, y, z and codes, padded to the same bucket
    of rows (``pad_to_buckets``' rule, ``bucket(n, LINEAR_BITS)``), so that
    similar data sets share compiled steps.
    """
    n = len(index)
    data = _random_rows(arrays, design, index, dtype) if rows else None
    size = data.X.shape[0] if data is not None else bucket(n, LINEAR_BITS)
    return TrainingSet(
        x=jnp.asarray(pad_rows(x[index], size), dtype),
        y=jnp.asarray(pad_rows(y[index], size), dtype),
        mask=jnp.asarray(np.arange(size) < n),
        z=tuple(jnp.asarray(pad_rows(zf[index], size), dtype) for zf in arrays.Z),
        codes=tuple(jnp.asarray(pad_rows(c[index], size), jnp.int32) for c in arrays.codes),
        rows=data,
        n_obs=jnp.asarray(n, dtype),
    )


def split_rows(
    n: int, fraction: float, seed: int
) -> tuple[Int[np.ndarray, " n_train"], Int[np.ndarray, " n_valid"] | None]:
    """Training and held-out row indices (sorted) of ``n`` rows: a random ``fraction``
    held out (None when it rounds to no row), drawn from ``seed``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
    n_valid = int(round(fraction * n))
    if n_valid == 0:
        return np.arange(n), None
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def seed_of(key: jax.Array | int | None) -> int:
    """An int seed from a ``jax.random`` key (new or legacy), an int, or None (0)."""
    if key is None:
        return 0
    if isinstance(key, int | np.integer):
        return int(key)
    data = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return int(np.uint32(data.ravel()[-1]))


def check_model(model: Any, d: int, names: tuple[str, ...], dtype: DTypeLike) -> None:
    """Raises unless ``model`` is callable and maps a row (d,) to shape () or (1,)."""
    if not callable(model):
        raise TypeError(f"model must be a callable equinox Module, got {type(model).__name__}")
    try:
        out = jax.eval_shape(model, jax.ShapeDtypeStruct((d,), dtype))
    except Exception as err:  # noqa: BLE001 - any failure here is a shape mismatch to report
        raise ValueError(
            f"the model could not be applied to one row of the {d} features {list(names)} "
            f"(a vector of shape ({d},)): {type(err).__name__}: {err}"
        ) from None
    shape = getattr(out, "shape", None)
    if shape not in ((), (1,)):
        raise ValueError(
            f"the model must map a row of features (shape ({d},)) to a scalar (shape () or (1,)); "
            f"it returned shape {shape}: give it one output, e.g. eqx.nn.MLP(..., out_size='scalar')"
        )


def cast_model(model: Any, dtype: DTypeLike) -> Any:
    """``model`` with its floating-point arrays in ``dtype``."""
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model)
