"""Why a fit or a training run stopped: one enumeration for the whole library.

:class:`RESULTS` is the public status (an ``eqx.Enumeration``, as optimistix's
``RESULTS``): every fit result, every batched fit and every network training
run reports one of its items. The optimiser loops carry :class:`LoopStatus`,
an internal extension with the two states a finished fit never reports
(``running``, ``skipped``), as optimistix extends lineax's ``RESULTS``; they
hand back a ``RESULTS`` item through :func:`to_results`.

"Converged" is defined once, here (:func:`is_converged`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RESULTS", "LoopStatus", "is_converged", "loop_status", "to_results"]


class RESULTS(eqx.Enumeration):
    """Why a fit stopped. ``successful`` and ``small_change`` count as converged.

    ``early_stopped`` is a network training run that stopped on its held-out
    loss (patience), which is how such runs are meant to end.
    """

    successful = "gradient below tolerance"
    small_change = "relative change of the objective below tolerance"
    max_steps_reached = "iteration limit reached"
    nonfinite = "objective became NaN or infinite"
    no_progress = "no progress: the objective stopped changing while the gradient was still large"
    constant_response = "the response has no variation beyond the fixed effects: nothing to fit"
    early_stopped = "stopped early: the held-out loss stopped improving (patience)"


class LoopStatus(RESULTS):  # pyright: ignore[reportGeneralTypeIssues]  (equinox enumerations extend)
    """The optimiser loops' state: ``RESULTS`` plus two internal items."""

    running = "still iterating (internal)"
    skipped = "a boundary trial that was not run (internal)"


# RESULTS' items in their order; LoopStatus holds the same items first.
_NAMES = (
    "successful",
    "small_change",
    "max_steps_reached",
    "nonfinite",
    "no_progress",
    "constant_response",
    "early_stopped",
)


def loop_status(name: str) -> LoopStatus:
    """The ``LoopStatus`` item of that name: a public item as the loops carry it.

    The same object as ``LoopStatus.promote(RESULTS.<name>)`` but without its
    computation (promote indexes a JAX array, which at import time compiles
    a kernel); typed as ``LoopStatus`` for the checker.
    """
    return getattr(LoopStatus, name)


def to_results(status: LoopStatus) -> RESULTS:
    """The ``RESULTS`` item of a loop's final status (jittable, vmappable).

    A status that is not a ``RESULTS`` item (``running`` or ``skipped``: never
    the state of a finished fit) maps to ``successful``. Batched statuses (the
    results of a vmapped loop, outside the vmap) map item by item.
    """
    convert = _to_results_one
    for _ in jnp.shape(status == LoopStatus.running):
        convert = jax.vmap(convert)
    return convert(status)


def _to_results_one(status: LoopStatus) -> RESULTS:
    out = RESULTS.successful
    for name in _NAMES[1:]:
        out = RESULTS.where(status == loop_status(name), getattr(RESULTS, name), out)
    return out


def is_converged(result: RESULTS) -> jax.Array | np.ndarray:
    """True where ``result`` is ``successful`` or ``small_change`` (the one definition).

    Works on a single item, inside ``jit``/``vmap``, and on the batched items
    of many fits brought to the host (an array of flags then). On the host the
    flags are numpy, compared through the item's pytree leaf (its position in
    the enumeration): no JAX operation is dispatched for a finished fit.
    """
    enumeration = LoopStatus if isinstance(result, LoopStatus) else RESULTS
    items = [getattr(enumeration, name) for name in ("successful", "small_change")]
    if result.is_traced():
        return (result == items[0]) | (result == items[1])
    (code,) = jax.tree.leaves(result)
    return np.isin(np.asarray(code), [jax.tree.leaves(item)[0] for item in items])
