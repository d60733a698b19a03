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
:func:`~jaxmixed.core._index.design_index`; all values are computed in JAX from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._covariance import CovarianceStructure
from ._index import DenseIndex, DenseLayout, DesignIndex, design_index
from ._linalg import PairSum
from ._precision import highest_precision
from ._typing import HostOrDevice

__all__ = [
    "DesignStatistics",
    "ModelData",
    "ModelStatistics",
    "ResponseStatistics",
    "Standardization",
    "design_statistics",
    "model_data",
    "model_statistics",
    "response_statistics",
]

# Z₁ᵀZ₂ kept dense (cross_matrix) when its J₁·Q₂² products are at most this many times
# the pairs (P), and J₁·Q₂ at most DENSE_CROSS_MAX entries (dense_cross)
DENSE_CROSS_RATIO = 4
DENSE_CROSS_MAX = 4_000_000


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

    r_factor: Float[Array, "p p"]
    z_scale: tuple[Float[Array, " q"], ...]
    log_det_r: Float[Array, ""]
    sum_log_weights: Float[Array, ""]


class DesignStatistics(eqx.Module):
    """The statistics of the standardised design (no array depends on y).

    Shapes (p fixed effects; factor 1 with J₁ levels and q₁ effects; Q₂ dense
    columns for the other factors; E, P as in :class:`DesignIndex`):

    - ``ZtZ`` (J₁, q₁, q₁), ``ZtX`` (J₁, q₁, p): per-level sums for factor 1.
    - ``dense_ZtZ`` (Q₂, Q₂), ``dense_ZtX`` (Q₂, p): the other factors.
    - ``cross_values`` (E, q₁): the non-zeros of ``Z₁ᵀZ₂``.
    - ``pairs``: the map from per-level weights (J₁, q₁²) to the upper
      triangle of ``Σ_j C_jᵀ W_j C_j`` (see :class:`~jaxmixed.core._linalg.PairSum`);
      None with one grouping factor, or where ``cross_matrix`` is used instead.
    - ``cross_matrix`` (J₁, Q₂, q₁): ``Z₁ᵀZ₂`` as a dense array (each level's C_jᵀ),
      where most of it is non-zero (:func:`dense_cross`: VerbAgg's persons × items) and
      matrix products beat the pairs' gathers; else None.
    - ``rows``: the standardised rows (``Q``, ``Z̃``, √w) that response
      statistics are made from; ``scaling``: the map back to user units.
    - ``n_obs``: n, as an array.
    ``XᵀX`` is the identity (Q has orthonormal columns) and is not stored.
    """

    ZtZ: Float[Array, "J q q"]
    ZtX: Float[Array, "J q p"]
    dense_ZtZ: Float[Array, "Q Q"]
    dense_ZtX: Float[Array, "Q p"]
    cross_values: Float[Array, "E q"]
    pairs: PairSum | None
    rows: ModelData
    scaling: Standardization
    n_obs: Float[Array, ""]
    cross_matrix: Float[Array, "J Q q"] | None = None

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

    Xty: Float[Array, "*batch p"]
    yty: Float[Array, "*batch"]
    Zty: Float[Array, "*batch J q"]
    dense_Zty: Float[Array, "*batch Q"]
    y_scale: Float[Array, "*batch"]
    beta_shift: Float[Array, "*batch p"]
    spread: Float[Array, "*batch"]


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


def model_data(
    X: Float[np.ndarray, "n p"],
    Z: Sequence[Float[np.ndarray, "n q"]],
    codes: Sequence[Int[np.ndarray, " n"]],
    n_levels: Sequence[int],
    structures: Sequence[CovarianceStructure],
    *,
    weights: Float[np.ndarray, " n"] | None = None,
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
    flat = contrib.reshape(contrib.shape[0] * contrib.shape[1], rhs.shape[1])  # k may be 0
    return jax.ops.segment_sum(flat, dense.dense_cols.reshape(-1), q2)


def dense_cross(n_levels: int, index: DenseIndex, q2: int) -> bool:
    """Whether ``Z₁ᵀZ₂`` is kept dense (:attr:`DesignStatistics.cross_matrix`): its
    J₁·Q₂² products per use are at most ``DENSE_CROSS_RATIO`` times the P pairs'
    gathers (a matrix product runs about 10× faster per product on CPU: VerbAgg's 316
    persons × 24 items, 0.1 ms against 0.9 ms), and J₁·Q₂ stays small. Static: shapes
    only."""
    size = n_levels * q2
    return size <= DENSE_CROSS_MAX and size * q2 <= DENSE_CROSS_RATIO * max(index.n_pairs, 1)


def _cross_matrix(index: DenseIndex, n_levels: int, q2: int, cross_values: jax.Array) -> jax.Array:
    """``Z₁ᵀZ₂`` (J₁, Q₂, q₁) from its stored non-zeros (E, q₁)."""
    flat = jnp.asarray(index.cross_level) * q2 + jnp.asarray(index.cross_column)
    return jax.ops.segment_sum(cross_values, flat, n_levels * q2).reshape(n_levels, q2, cross_values.shape[1])


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


@highest_precision
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
    dense_mode = dense is not None and dense_cross(j1, dense, q2)
    return DesignStatistics(
        ZtZ=ztz,
        ZtX=ztx,
        dense_ZtZ=dense_ztz,
        dense_ZtX=dense_ztx,
        cross_values=cross_values,
        pairs=_pair_sum_map(dense, cross_values) if dense is not None and not dense_mode else None,
        rows=rows,
        scaling=scaling,
        n_obs=n_obs,
        cross_matrix=_cross_matrix(dense, j1, q2, cross_values) if dense is not None and dense_mode else None,
    )


@highest_precision
def response_statistics(
    design: DesignStatistics, y: Float[Array, " n"], offset: Float[Array, " n"] | None = None
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
    # Over the real rows (padded rows are 0): the scale, and so the constant-response
    # test, do not depend on how far the rows were padded.
    spread = jnp.sqrt(jnp.sum(resid * resid) / jnp.asarray(design.n_obs, resid.dtype))
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


@highest_precision
def model_statistics(
    data: ModelData,
    y: Float[Array, " n"],
    offset: Float[Array, " n"] | None = None,
    n_obs: Int[Array, ""] | int | None = None,
) -> ModelStatistics:
    """``ModelStatistics(design_statistics(data, n_obs), response_statistics(...))``."""
    design = design_statistics(data, n_obs)
    return ModelStatistics(design, response_statistics(design, y, offset))
