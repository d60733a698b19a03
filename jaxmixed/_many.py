"""Many fits as one computation: padding, stacking and the vmapped fit.

Three shapes of "many":

- **Many responses over one design** (:func:`fit_responses`): the design's
  statistics are computed once and shared (not copied) by every fit; each
  response adds only its own statistics (``Xᵀy``, ``Zᵀy``, ``yᵀy``). This is
  the per-gene loop of genomics and the refits of a parametric bootstrap.
- **Many data sets with one structure** (:func:`stack_data`,
  :func:`fit_stacked`): a simulation study. Each data set has its own rows,
  levels and design; they are padded to common sizes (zero rows, empty
  levels, empty cross entries: none of them adds anything to a sum) and
  stacked, and ``jax.vmap`` runs every fit together.
- Either of them over several devices: ``_sharding``.

Under ``jax.vmap`` the L-BFGS loop of ``_optimise`` evaluates the criterion
once per step with a fixed-step line search, so a batch costs about its
slowest member's iterations times one batched evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import diagonal_mask
from ._fit import FitResult, fit
from ._objective import standard_criterion
from ._optimise import FitOptions
from ._progress import Progress
from ._statistics import (
    DesignIndex,
    DesignStatistics,
    ModelData,
    ModelStatistics,
    model_statistics,
    response_statistics,
)

__all__ = [
    "fit_responses_screened",
    "jit_fit_responses_screened",
    "needs_boundary_trials",
    "refit_batch_size",
    "bucket",
    "default_batch_size",
    "run_chunks",
    "fit_responses",
    "fit_stacked",
    "jit_fit_responses",
    "jit_fit_stacked",
    "pad_data",
    "per_fit_bytes",
    "stack_data",
]


def fit_responses(design: DesignStatistics, ys: jax.Array, options: FitOptions | None = None) -> FitResult:
    """One fit per row of ``ys`` over one design, as one vmapped computation.

    Args:
        design: the shared :class:`DesignStatistics` (``design_statistics``).
        ys: (K, n) responses (rows of zeros where the design was padded).
        options: one :class:`FitOptions` for every fit (default REML).

    Returns:
        A :class:`FitResult` whose every leaf has a leading axis of K.
    """
    options = FitOptions() if options is None else options

    def one(y):
        return fit(ModelStatistics(design, response_statistics(design, y)), options)

    return jax.vmap(one)(ys)


def needs_boundary_trials(stats: ModelStatistics, result: FitResult, options: FitOptions) -> jax.Array:
    """Whether the boundary trials could change a fit made without them.

    ``result`` is a fit of ``stats`` with ``boundary=False``. The full fit
    (``_fit``) first runs the same main optimisation, then tries each
    diagonal entry of θ at 0 only if setting it alone to 0 raises the
    standardised criterion by less than ``options.boundary_screen``; when no
    entry passes that screen at the main optimum, no trial runs and the full
    fit is the main one. So a False here means the full fit equals
    ``result``; True means refit with the trials.
    """
    nothing = jnp.zeros(result.phi.shape, bool)
    value = standard_criterion(result.phi, stats, options.reml, nothing)
    diag = np.flatnonzero(diagonal_mask(stats.structures))
    screens = jnp.stack(
        [standard_criterion(result.phi, stats, options.reml, nothing.at[d].set(True)) for d in diag]
    )
    return jnp.isfinite(value) & jnp.any(screens < value + options.boundary_screen)


def fit_responses_screened(
    design: DesignStatistics, ys: jax.Array, options: FitOptions
) -> tuple[FitResult, jax.Array]:
    """:func:`fit_responses` without the boundary trials, and per fit whether
    they are needed (:func:`needs_boundary_trials`): (results, (K,) bool)."""
    main_only = dataclasses.replace(options, boundary=False)

    def one(y):
        stats = ModelStatistics(design, response_statistics(design, y))
        result = fit(stats, main_only)
        return result, needs_boundary_trials(stats, result, options)

    return jax.vmap(one)(ys)


def fit_stacked(
    data: ModelData, ys: jax.Array, n_obs: jax.Array, options: FitOptions | None = None
) -> FitResult:
    """One fit per stacked data set (``stack_data``), as one vmapped computation.

    ``data``: a :class:`ModelData` whose arrays have a leading axis of K;
    ``ys`` (K, n) and ``n_obs`` (K,) the responses and real row counts.
    """
    options = FitOptions() if options is None else options

    def one(d, y, n):
        return fit(model_statistics(d, y, None, n), options)

    return jax.vmap(one)(data, ys, n_obs)


# One compiled program per structure, shared by every caller.
jit_fit_responses = eqx.filter_jit(fit_responses)
jit_fit_stacked = eqx.filter_jit(fit_stacked)
jit_fit_responses_screened = eqx.filter_jit(fit_responses_screened)


# --------------------------------------------------------------------------------------
# Host: padding and stacking
# --------------------------------------------------------------------------------------


def _pad_axis(a, size: int, axis: int = 0, value=0):
    a = np.asarray(a)
    extra = size - a.shape[axis]
    if extra < 0:
        raise ValueError(f"cannot pad an axis of {a.shape[axis]} down to {size}")
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, extra)
    return np.pad(a, widths, constant_values=value)


def _pad_index(index: DesignIndex, n_rows: int, n_levels: int, n_entries: int, n_pairs: int) -> DesignIndex:
    """The same structure with padded rows, levels of factor 1, cross entries and pairs.

    A padded row points at level 0 and entry 0 with zero values; a padded
    entry has no rows (its value is 0); a padded pair multiplies two padded
    entries and is placed last in both sort orders (target Q₂² − 1, the last
    level), so the sorted segment sums stay sorted.
    """
    j_real = index.n_levels
    if n_levels < j_real:
        raise ValueError(f"cannot pad {j_real} levels down to {n_levels}")
    arrays = {"codes": _pad_axis(index.codes, n_rows)}
    if index.dense_cols is not None:
        q2 = index.layout.size
        e_real = index.cross_level.shape[0]
        if n_pairs > index.pair_target.shape[0] and n_entries <= e_real:
            raise ValueError("padding the cross pairs needs at least one padded cross entry")
        pad_entry = e_real  # the first padded entry: no row adds to it, its value is 0
        arrays.update(
            dense_cols=_pad_axis(index.dense_cols, n_rows),
            entry=_pad_axis(index.entry, n_rows),
            cross_level=_pad_axis(index.cross_level, n_entries, value=n_levels - 1),
            cross_column=_pad_axis(index.cross_column, n_entries, value=q2 - 1),
        )
        last_target, last_level = q2 * q2 - 1, n_levels - 1
        for name, value in (
            ("pair_first", pad_entry),
            ("pair_second", pad_entry),
            ("pair_target", last_target),
            ("pair_level", last_level),
            ("first_by_level", pad_entry),
            ("second_by_level", pad_entry),
            ("target_by_level", last_target),
            ("level_by_level", last_level),
        ):
            arrays[name] = _pad_axis(getattr(index, name), n_pairs, value=value)
    padded = eqx.tree_at(
        lambda i: [getattr(i, k) for k in arrays],
        index,
        [jnp.asarray(v, getattr(index, k).dtype) for k, v in arrays.items()],
    )
    return _with_levels(padded, n_levels)


def _with_levels(index: DesignIndex, n_levels: int) -> DesignIndex:
    # n_levels is a static field: rebuild the module with the new value.
    fields = {k: getattr(index, k) for k in index.__dataclass_fields__}
    fields["n_levels"] = n_levels
    return DesignIndex(**fields)


def _index_sizes(index: DesignIndex) -> tuple[int, int]:
    if index.dense_cols is None:
        return 0, 0
    return index.cross_level.shape[0], index.pair_target.shape[0]


def pad_data(
    data: ModelData,
    n_rows: int,
    *,
    n_levels: int | None = None,
    n_entries: int | None = None,
    n_pairs: int | None = None,
) -> ModelData:
    """``data`` padded to ``n_rows`` rows (and, optionally, more levels of factor 1,
    cross entries and pairs), changing no statistic.

    Padded rows have X = 0, Z = 0 and weight 1: pass the real row count as
    ``n_obs`` to ``design_statistics`` (or ``fit_data``), and pad the response
    and any offset with zeros. Padded levels have no rows and give conditional
    modes of 0 (drop them from the result). Host side (numpy, then JAX arrays).
    """
    e, p = _index_sizes(data.index)
    index = _pad_index(
        data.index,
        n_rows,
        data.index.n_levels if n_levels is None else n_levels,
        e if n_entries is None else n_entries,
        p if n_pairs is None else n_pairs,
    )
    dtype = data.X.dtype
    return ModelData(
        X=jnp.asarray(_pad_axis(data.X, n_rows), dtype),
        Z=tuple(jnp.asarray(_pad_axis(z, n_rows), dtype) for z in data.Z),
        weights=jnp.asarray(_pad_axis(data.weights, n_rows, value=1.0), dtype),
        index=index,
        structures=data.structures,
    )


def stack_data(datas: Sequence[ModelData]) -> ModelData:
    """K data sets of one structure padded to common sizes and stacked (leading axis K).

    The data sets must share the structure (the same columns of X and Z, the
    same factors and covariance structures); their rows, levels and cross
    pairs may differ. Padded dense levels of the later factors are not
    supported: those factors must have the same numbers of levels.
    """
    first = datas[0]
    for k, d in enumerate(datas):
        if d.structures != first.structures or d.X.shape[1] != first.X.shape[1]:
            raise ValueError(
                f"data set {k} has a different structure (fixed-effect columns or random-effects "
                "terms) from data set 0: stacked data sets need the same model"
            )
        if d.index.layout != first.index.layout:
            raise ValueError(
                f"data set {k}: the grouping factors after the first have different numbers of "
                f"levels ({d.index.layout.blocks} vs {first.index.layout.blocks}); stacked data "
                "sets need the same"
            )
    n_rows = max(d.X.shape[0] for d in datas)
    n_levels = max(d.index.n_levels for d in datas)
    sizes = [_index_sizes(d.index) for d in datas]
    n_entries = max(e for e, _ in sizes) + (1 if datas[0].index.dense_cols is not None else 0)
    n_pairs = max(p for _, p in sizes)
    padded = [pad_data(d, n_rows, n_levels=n_levels, n_entries=n_entries, n_pairs=n_pairs) for d in datas]
    return jax.tree.map(lambda *a: jnp.stack(a), *padded)


def bucket(n: int) -> int:
    """``n`` rounded up to four significant bits (at most 1/8 more): data sets of
    similar size get the same padded size and so share compiled code."""
    shift = max(0, int(n).bit_length() - 4)
    return -(-int(n) >> shift) << shift


# On a CPU, chunks beyond about a thousand small fits leave the caches and get no
# faster per fit (measured on sleepstudy-sized fits); accelerators take all that fit.
CPU_BATCH_LIMIT = 1024


def default_batch_size(
    n_fits: int, per_fit_bytes: int, *, budget: int = 2**29, multiple: int = 1, platform: str | None = None
) -> int:
    """Fits per vmapped chunk: as many as fit in ``budget`` bytes (512 MiB), at
    most ``CPU_BATCH_LIMIT`` on a CPU; a multiple of ``multiple`` (the devices).
    A single chunk is rounded up to four significant bits so that similar
    numbers of fits share compiled code."""
    platform = jax.default_backend() if platform is None else platform
    limit = CPU_BATCH_LIMIT if platform == "cpu" else n_fits
    size = max(1, min(n_fits, limit, budget // max(per_fit_bytes, 1)))
    size = bucket(size) if size == n_fits else size
    return -(-size // multiple) * multiple


def _chunks(n_fits: int, batch_size: int, run_chunk: Callable, progress: Progress | None) -> list:
    parts = []
    for start in range(0, n_fits, batch_size):
        ids = np.arange(start, min(start + batch_size, n_fits))
        filled = np.concatenate([ids, np.full(batch_size - len(ids), ids[0])])
        real = len(ids)
        parts.append(jax.tree.map(lambda a, m=real: np.asarray(a)[:m], run_chunk(filled)))
        if progress is not None:
            progress.update(real)
    return jax.tree.map(lambda *a: np.concatenate(a), *parts)


def run_chunks(
    n_fits: int,
    batch_size: int,
    run_chunk: Callable[[np.ndarray], FitResult],
    *,
    progress: Progress,
    screened: Callable[[np.ndarray], tuple[FitResult, np.ndarray]] | None = None,
    refit_size: int | None = None,
) -> FitResult:
    """Fits ``0 … n_fits−1`` in chunks of ``batch_size`` (host loop).

    ``run_chunk(ids)`` fits the ``batch_size`` fits numbered ``ids`` (the last
    chunk is filled up by repeating its first id, so every chunk has the same
    shape and one compiled program serves all) and returns their
    :class:`FitResult` as numpy arrays. Returns every leaf stacked to
    ``n_fits`` along axis 0.

    With ``screened`` and more than one chunk of fits, the fits are made
    first by ``screened(ids)`` without the boundary trials, which also says
    which fits the trials could change (:func:`fit_responses_screened`); only
    those are fitted again, in full, by ``run_chunk``, in chunks of
    ``refit_size``. Under ``jax.vmap`` every boundary trial's loop runs while
    any fit of the chunk needs it, so leaving the trials to the few fits that
    can use them halves the time of sleepstudy-sized fits. It compiles a
    second program, so a single chunk is fitted in one pass.
    """
    if screened is None or n_fits <= batch_size:
        fits = _chunks(n_fits, batch_size, run_chunk, progress)
        progress.close()
        return fits
    fits, flags = _chunks(n_fits, batch_size, screened, progress)
    progress.close()
    redo = np.flatnonzero(flags)
    if len(redo):
        again = _chunks(len(redo), refit_size, lambda ids: run_chunk(redo[ids]), None)
        fits = jax.tree.map(lambda a, b: _set_rows(a, redo, b), fits, again)
    return fits


def refit_batch_size(batch_size: int, multiple: int = 1) -> int:
    """Chunk size of the full refits: a quarter of the first pass's, a multiple of the devices."""
    return -(-max(1, batch_size // 4) // multiple) * multiple


def _set_rows(a: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.array(a, copy=True)
    out[rows] = values
    return out


def per_fit_bytes(data: ModelData) -> int:
    """A rough upper bound on the memory one fit of a vmapped chunk needs:
    its response's rows, its per-level blocks and its copy of the dense block."""
    n, p = data.X.shape
    q1 = data.Z[0].shape[1]
    q2 = data.index.layout.size
    itemsize = jnp.dtype(data.X.dtype).itemsize
    return itemsize * (8 * n + 12 * data.index.n_levels * q1 * (q1 + p) + 6 * q2 * q2 + 64)
