"""Sufficient statistics in two parts: the design's and the response's.

The profiled criterion (``_objective``) needs only cross-products of the
columns of X, Z and y summed within levels. They split by what they depend on:

- :class:`DesignStatistics` (``design_statistics``): everything made from X, Z,
  the level codes and prior weights: ``Z₁ᵀZ₁`` and ``Z₁ᵀX`` per level of
  factor 1, the dense blocks of the other factors, the sparse cross-tabulation
  ``Z₁ᵀZ₂`` and its pair map. Built once per design.
- :class:`ResponseStatistics` (``response_statistics``): ``Xᵀy``, ``Z₁ᵀy`` per
  level, ``Z₂ᵀy`` and ``yᵀy``. Linear in y (after the scaling below), computed
  in JAX: they differentiate with respect to y and ``jax.vmap`` over many
  responses while the design part is shared, not copied.

Both are computed from *standardised* rows, so that the fit does not depend
on the units of any column:

- X (with √w applied) is replaced by the Q of its thin QR factorisation,
  ``√W X = Q R``: the criterion is then evaluated in an orthogonalised form
  whose accuracy does not degrade with the condition number of X, and
  ``β = R⁻¹ β̃``, ``log|XᵀV⁻¹X| = log|QᵀV⁻¹Q| + 2 log|det R|``.
- Each column of Z is divided by its root mean square: ``Z = Z̃ S⁻¹`` gives
  ``Λ = S Λ̃`` (rows of Λ scale), ``b = S b̃``; the criterion is unchanged.
- y is divided by its largest absolute value, replaced by its residual from
  the projection on Q (the model is equivariant: β shifts back), and divided
  by that residual's root mean square ``s``; the criterion changes by
  ``2 dof log s`` and β, b, σ scale by ``s``.

The integer structure (which entries of ``Z₁ᵀZ₂`` are non-zero, which pairs of
them share a level of factor 1) is found on the host once, by
:func:`design_index`; all values are computed in JAX from it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from ._covariance import CovarianceStructure
from ._linalg import PairSum
from ._typing import HostOrDevice

__all__ = [
    "DenseLayout",
    "DenseIndex",
    "DesignIndex",
    "DesignStatistics",
    "ModelData",
    "ModelStatistics",
    "ResponseStatistics",
    "Standardization",
    "design_index",
    "design_statistics",
    "model_data",
    "model_statistics",
    "response_statistics",
]


@dataclasses.dataclass(frozen=True)
class DenseLayout:
    """Where the factors after the first sit in the dense block.

    ``blocks[k] = (offset, n_levels, q)`` for factor k+2: its random effects
    occupy columns ``offset + level * q + i`` of the Q₂ dense columns.
    """

    blocks: tuple[tuple[int, int, int], ...] = ()

    @property
    def size(self) -> int:
        return sum(j * q for _, j, q in self.blocks)


class DenseIndex(eqx.Module):
    """The integer structure of the dense part: the factors after the first.

    Shapes (n rows; K = Σ_{f≥2} q_f dense columns per row; E stored non-zeros
    of ``Z₁ᵀZ₂``; P pairs of them sharing a level of factor 1, upper triangle):

    - ``dense_cols`` (n, K): the dense columns each row touches.
    - ``entry`` (n, K): which stored non-zero of ``Z₁ᵀZ₂`` each of them adds to.
    - ``cross_level``, ``cross_column`` (E,): that non-zero's level and column.
    - ``pair_first``, ``pair_second``, ``pair_target``, ``pair_level`` (P,):
      the pairs sorted by their target entry of the Q₂×Q₂ matrix; the
      ``*_by_level`` arrays hold the same pairs sorted by level.
    """

    dense_cols: Int[HostOrDevice, "n K"]
    entry: Int[HostOrDevice, "n K"]
    cross_level: Int[HostOrDevice, " E"]
    cross_column: Int[HostOrDevice, " E"]
    pair_first: Int[HostOrDevice, " P"]
    pair_second: Int[HostOrDevice, " P"]
    pair_target: Int[HostOrDevice, " P"]
    pair_level: Int[HostOrDevice, " P"]
    first_by_level: Int[HostOrDevice, " P"]
    second_by_level: Int[HostOrDevice, " P"]
    target_by_level: Int[HostOrDevice, " P"]
    level_by_level: Int[HostOrDevice, " P"]

    @property
    def n_entries(self) -> int:
        """E, the stored non-zeros of ``Z₁ᵀZ₂``."""
        return self.cross_level.shape[0]

    @property
    def n_pairs(self) -> int:
        """P, the pairs of non-zeros that share a level of factor 1."""
        return self.pair_target.shape[0]


class DesignIndex(eqx.Module):
    """The integer structure of a design, found once on the host.

    ``codes`` (n,): level of factor 1 of each row; ``dense``: the structure of
    the factors after the first (:class:`DenseIndex`), None with one grouping
    factor; ``n_levels``: J₁; ``layout``: where the later factors sit in the
    dense block.
    """

    codes: Int[HostOrDevice, " n"]
    dense: DenseIndex | None
    n_levels: int = eqx.field(static=True)
    layout: DenseLayout = eqx.field(static=True)


class ModelData(eqx.Module):
    """The numeric model, row by row: what the statistics are made from.

    ``X`` (n, p); ``Z`` per factor (n, q_f), factor 1 (most levels) first;
    ``weights`` (n,) prior weights (residual variance σ²/wᵢ), ones by default;
    ``index`` the host-built :class:`DesignIndex`; ``structures`` each factor's
    covariance structure.
    """

    X: Float[HostOrDevice, "n p"]
    Z: tuple[Float[HostOrDevice, "n q"], ...]
    weights: Float[HostOrDevice, " n"]
    index: DesignIndex
    structures: tuple[CovarianceStructure, ...] = eqx.field(static=True)


class Standardization(eqx.Module):
    """How the standardised problem maps back to the user's units.

    ``r_factor`` (p, p): ``√W X = Q R``; ``z_scale`` per factor (q_f,): the
    factor ``S`` with ``Λ = S Λ̃``; ``log_det_r``: ``log|det R|``;
    ``sum_log_weights``: ``Σ log wᵢ``.
    """

    r_factor: jax.Array
    z_scale: tuple[jax.Array, ...]
    log_det_r: jax.Array
    sum_log_weights: jax.Array


class DesignStatistics(eqx.Module):
    """The statistics of the standardised design (no array depends on y).

    Shapes (p fixed effects; factor 1 with J₁ levels and q₁ effects; Q₂ dense
    columns for the other factors; E, P as in :class:`DesignIndex`):

    - ``ZtZ`` (J₁, q₁, q₁), ``ZtX`` (J₁, q₁, p): per-level sums for factor 1.
    - ``dense_ZtZ`` (Q₂, Q₂), ``dense_ZtX`` (Q₂, p): the other factors.
    - ``cross_values`` (E, q₁): the non-zeros of ``Z₁ᵀZ₂``.
    - ``pairs``: the map from per-level weights (J₁, q₁²) to the upper
      triangle of ``Σ_j C_jᵀ W_j C_j`` (see :class:`~jaxmixed.core._linalg.PairSum`);
      None with one grouping factor.
    - ``rows``: the standardised rows (``Q``, ``Z̃``, √w) that response
      statistics are made from; ``scaling``: the map back to user units.
    - ``n_obs``: n, as an array.
    ``XᵀX`` is the identity (Q has orthonormal columns) and is not stored.
    """

    ZtZ: jax.Array
    ZtX: jax.Array
    dense_ZtZ: jax.Array
    dense_ZtX: jax.Array
    cross_values: jax.Array
    pairs: PairSum | None
    rows: ModelData
    scaling: Standardization
    n_obs: jax.Array

    @property
    def index(self) -> DesignIndex:
        """The design's integer structure."""
        return self.rows.index

    @property
    def structures(self) -> tuple[CovarianceStructure, ...]:
        """Each factor's covariance structure."""
        return self.rows.structures

    @property
    def dense_layout(self) -> DenseLayout:
        """Where the factors after the first sit in the dense block."""
        return self.rows.index.layout

    @property
    def n_fixed(self) -> int:
        """p, the number of fixed effects."""
        return self.ZtX.shape[-1]

    @property
    def n_params(self) -> int:
        """The length of θ (and φ) over all factors."""
        return sum(s.n_params for s in self.structures)


class ResponseStatistics(eqx.Module):
    """The statistics of one standardised response ỹ (see the module docstring).

    ``Xty`` (p,): ``Qᵀỹ`` (zero up to round-off: ỹ is a residual from Q);
    ``yty``: ``ỹᵀỹ``; ``Zty`` (J₁, q₁); ``dense_Zty`` (Q₂,). ``y_scale``: the
    factor ỹ was divided by (the user's units are ``y_scale·ỹ``); ``beta_shift``
    (p,): ``Q``-coefficients of the projection that was removed, in units of ỹ;
    ``spread``: the residual's root mean square relative to ``max|y|`` (0 for
    a response that the fixed effects fit exactly: nothing to fit).
    """

    Xty: jax.Array
    yty: jax.Array
    Zty: jax.Array
    dense_Zty: jax.Array
    y_scale: jax.Array
    beta_shift: jax.Array
    spread: jax.Array


class ModelStatistics(eqx.Module):
    """Design and response statistics together: what the objective needs."""

    design: DesignStatistics
    response: ResponseStatistics

    @property
    def structures(self) -> tuple[CovarianceStructure, ...]:
        """Each factor's covariance structure."""
        return self.design.structures

    @property
    def n_fixed(self) -> int:
        """p, the number of fixed effects."""
        return self.design.n_fixed

    @property
    def n_params(self) -> int:
        """The length of θ (and φ) over all factors."""
        return self.design.n_params


# --------------------------------------------------------------------------------------
# Host: the integer structure of the design
# --------------------------------------------------------------------------------------


def _available_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def dense_block_bytes(q2: int, n_pairs: int, q1: int = 1, itemsize: int = 8) -> int:
    """Memory an objective evaluation with its gradient needs for the dense part.

    The Schur complement, its Cholesky factor, its inverse and their cotangents
    are about six Q₂×Q₂ arrays; each stored pair holds q₁² products and four
    indices, in two orders, plus a value and its cotangent per evaluation.
    """
    return 6 * q2 * q2 * itemsize + n_pairs * (2 * (q1 * q1 * itemsize + 16) + 2 * itemsize)


def _layout(n_levels: Sequence[int], q: Sequence[int]) -> DenseLayout:
    blocks, offset = [], 0
    for j, qf in zip(n_levels[1:], q[1:], strict=True):
        blocks.append((offset, int(j), int(qf)))
        offset += int(j) * int(qf)
    return DenseLayout(tuple(blocks))


def design_index(
    codes: Sequence[np.ndarray],
    n_levels: Sequence[int],
    q: Sequence[int],
    *,
    memory_limit: int | None = None,
    itemsize: int = 8,
) -> DesignIndex:
    """The integer structure of a design (host: numpy arrays), checked against memory.

    Args:
        codes: per factor, (n,) level codes in ``[0, n_levels[f])``; factor 1
            (the one with the most levels) first.
        n_levels: per factor, its number of levels. q: per factor, q_f.
        memory_limit: bytes allowed for the dense block of the factors after
            the first; default half the machine's memory.
        itemsize: bytes per float of the statistics (8 for float64).
    """
    layout = _layout(n_levels, q)
    q2, q1 = layout.size, int(q[0])
    codes1 = np.asarray(codes[0], np.int64)
    n = len(codes1)
    if q2 == 0:  # one grouping factor: no dense part
        return DesignIndex(codes1.astype(np.int32), None, n_levels=int(n_levels[0]), layout=layout)
    cols = _dense_columns(codes, layout)
    # Non-zeros of Z₁ᵀZ₂, keyed by (level of factor 1, dense column): level-major.
    key = codes1[:, None] * q2 + cols
    unique_key, entry = np.unique(key.ravel(), return_inverse=True)
    cross_level = unique_key // q2
    cross_column = unique_key % q2
    per_level = np.bincount(cross_level, minlength=n_levels[0])
    _check_memory(q2, per_level, q1, itemsize, memory_limit)
    first, second = _cross_pairs(per_level, cross_level, cross_column)
    target = cross_column[first] * q2 + cross_column[second]
    by_target = np.argsort(target, kind="stable")
    index_type = np.int32 if q2 * q2 < 2**31 else np.int64

    def as_int(a: np.ndarray, t: type[np.signedinteger] = np.int32) -> np.ndarray:
        return a.astype(t)

    dense = DenseIndex(
        dense_cols=as_int(cols, index_type),
        entry=as_int(entry.reshape(n, -1)),
        cross_level=as_int(cross_level),
        cross_column=as_int(cross_column),
        pair_first=as_int(first[by_target]),
        pair_second=as_int(second[by_target]),
        pair_target=as_int(target[by_target], index_type),
        pair_level=as_int(cross_level[first][by_target]),
        first_by_level=as_int(first),
        second_by_level=as_int(second),
        target_by_level=as_int(target, index_type),
        level_by_level=as_int(cross_level[first]),
    )
    return DesignIndex(as_int(codes1), dense, n_levels=int(n_levels[0]), layout=layout)


def _dense_columns(codes: Sequence[np.ndarray], layout: DenseLayout) -> np.ndarray:
    """(n, K): the dense columns each row touches, factor by factor after the first."""
    return np.concatenate(
        [
            (off + np.asarray(codes[f + 1], np.int64) * qf)[:, None] + np.arange(qf)[None, :]
            for f, (off, _, qf) in enumerate(layout.blocks)
        ],
        axis=1,
    )


def _check_memory(q2: int, per_level: np.ndarray, q1: int, itemsize: int, memory_limit: int | None) -> None:
    """A clear error when the dense block and its cross pairs would not fit in memory."""
    n_pairs = int(np.sum(per_level.astype(np.int64) * (per_level + 1) // 2))
    limit = _available_memory() // 2 if memory_limit is None else memory_limit
    need = dense_block_bytes(q2, n_pairs, q1, itemsize)
    if need > limit:
        raise MemoryError(
            f"the random effects of the factors after the first need a dense block "
            f"of {q2} x {q2} with {n_pairs} cross pairs: about {_bytes(need)}, "
            f"over the limit of {_bytes(limit)} (raise memory_limit to allow it)"
        )


def _cross_pairs(
    per_level: np.ndarray, cross_level: np.ndarray, cross_column: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(first, second): every pair of stored non-zeros sharing a level of factor 1.

    Entries are sorted by level; the Q₂×Q₂ sum is symmetric, so only the pairs
    on or above its diagonal are kept.
    """
    starts = np.concatenate([[0], np.cumsum(per_level)[:-1]])
    reps = per_level[cross_level]
    first = np.repeat(np.arange(len(cross_level)), reps)
    within = np.arange(len(first)) - np.repeat(np.cumsum(reps) - reps, reps)
    second = np.repeat(starts[cross_level], reps) + within
    upper = cross_column[first] <= cross_column[second]
    return first[upper], second[upper]


def model_data(
    X: np.ndarray,
    Z: Sequence[np.ndarray],
    codes: Sequence[np.ndarray],
    n_levels: Sequence[int],
    structures: Sequence[CovarianceStructure],
    *,
    weights: np.ndarray | None = None,
    dtype=jnp.float64,
    memory_limit: int | None = None,
    on_device: bool = True,
) -> ModelData:
    """Packs a design's arrays (host) into a :class:`ModelData`.

    Args:
        X: (n, p). Z, codes: per factor (n, q_f) and (n,), factor 1 (most
            levels) first. n_levels, structures: per factor.
        weights: (n,) positive prior weights, default ones.
        dtype: float dtype (float64 needs ``jax.enable_x64``).
        memory_limit: see :func:`design_index`.
        on_device: True (default): JAX arrays on the default device; False:
            numpy arrays (to be padded on the host, or passed to a compiled
            function, which places them itself: cheaper for small fits).
    """
    _check_dtype(dtype)
    index = design_index(
        codes,
        n_levels,
        [np.shape(z)[1] for z in Z],
        memory_limit=memory_limit,
        itemsize=jnp.dtype(dtype).itemsize,
    )
    n = np.shape(X)[0]
    w = np.ones(n) if weights is None else weights
    np_type = np.dtype(jnp.dtype(dtype).name)
    data = ModelData(
        X=np.asarray(X, np_type),
        Z=tuple(np.asarray(z, np_type) for z in Z),
        weights=np.asarray(w, np_type),
        index=index,
        structures=tuple(structures),
    )
    return jax.device_put(data) if on_device else data


def _check_dtype(dtype) -> None:
    if jax.dtypes.canonicalize_dtype(dtype) != jnp.dtype(dtype):
        raise ValueError(
            f"{jnp.dtype(dtype)} statistics need JAX's 64-bit mode: call this inside "
            "`with jax.enable_x64(True):` (fit_reml does so itself), or pass dtype=jnp.float32"
        )


# --------------------------------------------------------------------------------------
# JAX: values
# --------------------------------------------------------------------------------------


def _rms_scale(z: HostOrDevice, n_obs: jax.Array) -> jax.Array:
    """1 / root mean square of each column of z (n, q) over ``n_obs`` real rows; 1 for a zero column."""
    rms = jnp.sqrt(jnp.sum(z * z, axis=0) / n_obs)
    return jnp.where(rms > 0, 1.0 / jnp.where(rms > 0, rms, 1.0), 1.0)


def _thin_qr(x: HostOrDevice) -> tuple[jax.Array, jax.Array]:
    """``x = Q R`` with Q (n, p) orthonormal columns, R (p, p) upper triangular."""
    if x.shape[1] == 0:
        return jnp.asarray(x), jnp.zeros((0, 0), x.dtype)
    return jnp.linalg.qr(x, mode="reduced")


def _dense_rows(rows: ModelData) -> jax.Array:
    """(n, K) values of each row's dense non-zeros (factors after the first)."""
    if len(rows.Z) == 1:
        return jnp.zeros((rows.X.shape[0], 0), rows.X.dtype)
    return jnp.concatenate(rows.Z[1:], axis=1)


def _dense_sum(dense: DenseIndex, q2: int, vals: jax.Array, rhs: jax.Array) -> jax.Array:
    """``Z₂ᵀ rhs``: (Q₂, k) from (n, K) dense values and rhs (n, k)."""
    contrib = vals[:, :, None] * rhs[:, None, :]
    return jax.ops.segment_sum(contrib.reshape(-1, rhs.shape[1]), dense.dense_cols.reshape(-1), q2)


def _pair_sum_map(index: DenseIndex, cross_values: jax.Array) -> PairSum:
    q1 = cross_values.shape[1]

    def products(first, second):
        return (cross_values[first][:, :, None] * cross_values[second][:, None, :]).reshape(-1, q1 * q1)

    return PairSum(
        target=index.pair_target,
        level=index.pair_level,
        products=products(index.pair_first, index.pair_second),
        level_sorted=index.level_by_level,
        target_by_level=index.target_by_level,
        products_by_level=products(index.first_by_level, index.second_by_level),
    )


def design_statistics(data: ModelData, n_obs: jax.Array | int | None = None) -> DesignStatistics:
    """The design's statistics, standardised (see the module docstring).

    Pure JAX: differentiable with respect to ``X``, ``Z`` and the weights.
    Costs one pass over the rows plus a thin QR of X (O(np²)).

    ``n_obs``: the number of real rows when ``data`` was padded (to reuse
    compiled code across data sizes) with rows whose X, Z and response are
    0 and weight 1: such rows add nothing to any sum, and only the row count
    (the residual degrees of freedom) needs the real number. Default: all rows.
    """
    index = data.index
    sqrt_w = jnp.sqrt(data.weights)
    q_mat, r_factor = _thin_qr(data.X * sqrt_w[:, None])
    n_obs = jnp.asarray(q_mat.shape[0] if n_obs is None else n_obs, q_mat.dtype)
    z_scale = tuple(_rms_scale(z * sqrt_w[:, None], n_obs) for z in data.Z)
    z = tuple(zf * sqrt_w[:, None] * s for zf, s in zip(data.Z, z_scale, strict=True))
    rows = ModelData(q_mat, z, sqrt_w, index, data.structures)
    z1 = z[0]
    j1 = index.n_levels
    ztz = jax.ops.segment_sum(z1[:, :, None] * z1[:, None, :], index.codes, j1)
    ztx = jax.ops.segment_sum(z1[:, :, None] * q_mat[:, None, :], index.codes, j1)
    vals = _dense_rows(rows)
    q2 = index.layout.size
    dense = index.dense
    if dense is not None:
        flat = dense.dense_cols[:, :, None] * q2 + dense.dense_cols[:, None, :]
        outer = vals[:, :, None] * vals[:, None, :]
        dense_ztz = jax.ops.segment_sum(outer.reshape(-1), flat.reshape(-1), q2 * q2).reshape(q2, q2)
        dense_ztx = _dense_sum(dense, q2, vals, q_mat)
        per_row = (z1[:, None, :] * vals[:, :, None]).reshape(-1, z1.shape[1])
        cross_values = jax.ops.segment_sum(per_row, dense.entry.reshape(-1), dense.n_entries)
    else:
        dense_ztz = jnp.zeros((0, 0), q_mat.dtype)
        dense_ztx = jnp.zeros((0, q_mat.shape[1]), q_mat.dtype)
        cross_values = jnp.zeros((0, z1.shape[1]), q_mat.dtype)
    diag_r = jnp.diagonal(r_factor)
    scaling = Standardization(
        r_factor=r_factor,
        z_scale=z_scale,
        log_det_r=jnp.sum(jnp.log(jnp.abs(diag_r))),
        sum_log_weights=jnp.sum(jnp.log(data.weights)),
    )
    return DesignStatistics(
        ZtZ=ztz,
        ZtX=ztx,
        dense_ZtZ=dense_ztz,
        dense_ZtX=dense_ztx,
        cross_values=cross_values,
        pairs=None if dense is None else _pair_sum_map(dense, cross_values),
        rows=rows,
        scaling=scaling,
        n_obs=n_obs,
    )


def response_statistics(
    design: DesignStatistics, y: jax.Array, offset: jax.Array | None = None
) -> ResponseStatistics:
    """The statistics of the response ``y`` (n,) (minus ``offset``) over ``design``.

    Pure JAX and linear in y up to the scale factors (which the fit maps
    back), so it differentiates with respect to y and vmaps over responses.
    A response with no variation beyond the fixed effects gives ``yty = 0``
    (the fit reports it).
    """
    rows = design.rows
    x = jnp.asarray(rows.X)  # the standardised rows: already a JAX array
    y = jnp.asarray(y, x.dtype)
    if offset is not None:
        y = y - offset
    y = y * rows.weights  # rows.weights holds √w
    big = jnp.max(jnp.abs(y))
    big = jnp.where(big > 0, big, 1.0)
    y = y / big  # no overflow in the squares below, whatever the units
    shift = x.T @ y
    resid = y - x @ shift
    spread = jnp.sqrt(jnp.mean(resid * resid))
    rms = jnp.where(spread > 0, spread, 1.0)
    resid = resid / rms
    z1 = rows.Z[0]
    zty = jax.ops.segment_sum(z1 * resid[:, None], rows.index.codes, rows.index.n_levels)
    if rows.index.dense is not None:
        dense_zty = _dense_sum(rows.index.dense, rows.index.layout.size, _dense_rows(rows), resid[:, None])[:, 0]
    else:
        dense_zty = jnp.zeros((0,), resid.dtype)
    return ResponseStatistics(
        Xty=x.T @ resid,
        yty=resid @ resid,
        Zty=zty,
        dense_Zty=dense_zty,
        y_scale=big * rms,
        beta_shift=shift / rms,
        spread=spread,
    )


def model_statistics(
    data: ModelData, y: jax.Array, offset: jax.Array | None = None, n_obs: jax.Array | int | None = None
) -> ModelStatistics:
    """``ModelStatistics(design_statistics(data, n_obs), response_statistics(...))``."""
    design = design_statistics(data, n_obs)
    return ModelStatistics(design, response_statistics(design, y, offset))
