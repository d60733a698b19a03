"""Many fits as one computation: the vmapped fits and their chunks.

Three shapes of "many":

- **Many responses over one design** (:func:`fit_responses`): the design's
  statistics are computed once and shared (not copied) by every fit; each
  response adds only its own statistics (``Xᵀy``, ``Zᵀy``, ``yᵀy``). This is
  the per-gene loop of genomics and the refits of a parametric bootstrap.
- **Many data sets with one structure** (``_padding.stack_data``,
  :func:`fit_stacked`): a simulation study. Each data set has its own rows,
  levels and design; they are padded to common sizes (zero rows, empty
  levels, empty cross entries: none of them adds anything to a sum) and
  stacked, and ``jax.vmap`` runs every fit together.
- Either of them over several devices: ``_sharding``.

Under ``jax.vmap`` the L-BFGS loop of ``_solvers`` evaluates the criterion
once per step with a fixed-step line search, so a batch costs about its
slowest member's iterations times one batched evaluation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._compile import compiled
from ._covariance import diagonal_mask
from ._fit import FitResult, fit
from ._objective import standard_criterion
from ._options import FitOptions
from ._padding import bucket, pad_data, stack_data
from ._precision import highest_precision
from ._progress import Progress
from ._statistics import (
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


@highest_precision
def fit_responses(
    design: DesignStatistics, ys: Float[Array, "K n"], options: FitOptions | None = None
) -> FitResult:
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


def needs_boundary_trials(stats: ModelStatistics, result: FitResult, options: FitOptions) -> Bool[Array, ""]:
    """Whether the boundary trials could change a fit made without them.

    ``result`` is a fit of ``stats`` with ``boundary=None``. The full fit
    (``_fit``) first runs the same main optimisation, then tries each
    diagonal entry of θ at 0 only if setting it alone to 0 raises the
    standardised criterion by less than ``options.boundary.screen``; when no
    entry passes that screen at the main optimum, no trial runs and the full
    fit is the main one. So a False here means the full fit equals
    ``result``; True means refit with the trials.
    """
    nothing = jnp.zeros(result.phi.shape, bool)
    if options.boundary is None:  # no trials: the full fit is the main one
        return jnp.zeros((), bool)
    value = standard_criterion(result.phi, stats, options.reml, nothing)
    diag = np.flatnonzero(diagonal_mask(stats.structures))
    screens = jnp.stack(
        [standard_criterion(result.phi, stats, options.reml, nothing.at[d].set(True)) for d in diag]
    )
    return jnp.isfinite(value) & jnp.any(screens < value + options.boundary.screen)


def fit_responses_screened(
    design: DesignStatistics, ys: jax.Array, options: FitOptions
) -> tuple[FitResult, jax.Array]:
    """:func:`fit_responses` without the boundary trials, and per fit whether
    they are needed (:func:`needs_boundary_trials`): (results, (K,) bool)."""
    main_only = dataclasses.replace(options, boundary=None)

    def one(y):
        stats = ModelStatistics(design, response_statistics(design, y))
        result = fit(stats, main_only)
        return result, needs_boundary_trials(stats, result, options)

    return jax.vmap(one)(ys)


@highest_precision
def fit_stacked(
    data: ModelData, ys: Float[Array, "K n"], n_obs: Int[Array, " K"], options: FitOptions | None = None
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
# Compiled once per structure, in the shared bounded registry of ``_compile``.
jit_fit_responses = compiled(fit_responses)
jit_fit_stacked = compiled(fit_stacked)
jit_fit_responses_screened = compiled(fit_responses_screened)


# On a CPU, chunks beyond about a thousand small fits leave the caches and get no
# faster per fit (measured on sleepstudy-sized fits); accelerators take all that fit.
CPU_BATCH_LIMIT = 1024
# A CPU chunk's memory budget (host memory is rarely the limit there).
CPU_BUDGET = 2**29
# On an accelerator a chunk takes at most this share of the device's free memory (XLA's
# pool, ``bytes_limit − bytes_in_use`` in ``Device.memory_stats()``). per_fit_bytes counts
# the fit's data, not the solver's temporaries, which take several times more: on an H100
# (80 GB, XLA's default pool of 75%), 20,000 fits of 500 rows with two crossed factors ran
# in chunks of 1,024 and failed in chunks of 4,096 (RESOURCE_EXHAUSTED) under the former
# default of 512 MiB per chunk, which had allowed about 2,900.
ACCELERATOR_MEMORY_SHARE = 1 / 256


def device_free_bytes(device: Any = None) -> int | None:
    """Free bytes in ``device``'s memory pool (a ``jax.Device``, default the first), or
    None where the backend does not report it (CPUs)."""
    chosen = jax.devices()[0] if device is None else device
    try:
        stats = chosen.memory_stats()
    except (AttributeError, NotImplementedError, RuntimeError):
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return max(0, int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))


def default_batch_size(
    n_fits: int,
    per_fit_bytes: int,
    *,
    budget: int | None = None,
    multiple: int = 1,
    platform: str | None = None,
    free_bytes: int | None = None,
) -> int:
    """Fits per vmapped chunk: as many as fit in ``budget`` bytes, at most
    ``CPU_BATCH_LIMIT`` on a CPU; a multiple of ``multiple`` (the devices). A single
    chunk is rounded up to four significant bits so that similar numbers of fits share
    compiled code.

    ``budget`` (default): ``CPU_BUDGET`` (512 MiB) on a CPU; on an accelerator
    ``ACCELERATOR_MEMORY_SHARE`` of its free memory (``free_bytes``, default from
    :func:`device_free_bytes`: an H100's default pool, 60 GB free, gives 223 MiB), or
    ``CPU_BUDGET`` where the device does not report it.
    """
    platform = jax.default_backend() if platform is None else platform
    if budget is None:
        free = (device_free_bytes() if free_bytes is None else free_bytes) if platform != "cpu" else None
        budget = CPU_BUDGET if not free else int(ACCELERATOR_MEMORY_SHARE * free)
    limit = CPU_BATCH_LIMIT if platform == "cpu" else n_fits
    size = max(1, min(n_fits, limit, budget // max(per_fit_bytes, 1)))
    size = bucket(size) if size == n_fits else size
    return -(-size // multiple) * multiple


def _chunks(n_fits: int, batch_size: int, run_chunk: Callable, progress: Progress | None) -> Any:
    parts = []
    for start in range(0, n_fits, batch_size):
        ids = np.arange(start, min(start + batch_size, n_fits))
        filled = np.concatenate([ids, np.full(batch_size - len(ids), ids[0])])
        real = len(ids)
        parts.append(jax.tree.map(lambda a, m=real: np.asarray(a)[:m], run_chunk(filled)))
        if progress is not None:
            progress.update(real)
    return jax.tree.map(lambda *a: np.concatenate(a), *parts)


_Chunk = TypeVar("_Chunk")  # a pytree of per-fit arrays: a FitResult, or a power simulation's replicates


def run_chunks(
    n_fits: int,
    batch_size: int,
    run_chunk: Callable[[np.ndarray], _Chunk],
    *,
    progress: Progress,
    screened: Callable[[np.ndarray], tuple[_Chunk, np.ndarray]] | None = None,
    refit_size: int | None = None,
) -> _Chunk:
    """Fits ``0 … n_fits−1`` in chunks of ``batch_size`` (host loop).

    ``run_chunk(ids)`` fits the ``batch_size`` fits numbered ``ids`` (the last
    chunk is filled up by repeating its first id, so every chunk has the same
    shape and one compiled program serves all) and returns their
    :class:`FitResult` (or any pytree of per-fit arrays) as numpy arrays. Returns every leaf stacked to
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
    assert refit_size is not None, "screened fits need refit_size"
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
