"""Minimisation of the profiled criterion inside one jitted loop.

The loop is a ``jax.lax.while_loop`` around any optax transformation; the
default is L-BFGS with a zoom line search. It stops when the largest gradient
entry is small relative to the objective, when the objective stops changing
(relative), after ``max_iter`` iterations, or when the objective is not finite.
Everything here is a pure function of arrays, so it jits, and the fit of a
whole model is one compiled call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._objective import ModelStatistics, objective

__all__ = [
    "STATUS_MESSAGES",
    "OptimizeResult",
    "default_optimizer",
    "fit_statistics",
    "minimize",
]

# Stopping reasons, by the integer code that the jitted loop records.
STATUS_MESSAGES = {
    0: "gradient below tolerance",
    1: "relative change of the objective below tolerance",
    2: "iteration limit reached",
    3: "objective became NaN or infinite",
    4: "no progress: the line search could not decrease the objective",
}
_RUNNING = -1


class OptimizeResult(eqx.Module):
    """Where the optimiser stopped and why.

    Attributes:
        params: (n_params,) final parameters.
        value: the objective there. grad: its gradient.
        n_iter: iterations taken. status: key of ``STATUS_MESSAGES``.
    """

    params: jax.Array
    value: jax.Array
    grad: jax.Array
    n_iter: jax.Array
    status: jax.Array

    @property
    def grad_norm(self) -> jax.Array:
        return jnp.max(jnp.abs(self.grad)) if self.grad.size else jnp.zeros(())


@functools.cache
def default_optimizer() -> optax.GradientTransformationExtraArgs:
    """L-BFGS (memory 10) with optax's zoom line search; one shared instance so
    that repeated fits reuse the compiled loop."""
    return optax.lbfgs(
        memory_size=10,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=30, initial_guess_strategy="one"),
    )


def default_tolerances(dtype) -> tuple[float, float]:
    """(gtol, ftol) relative to ``1 + |objective|``, by precision."""
    if jnp.finfo(dtype).bits >= 64:
        return 1e-9, 1e-13
    return 1e-5, 1e-7


def _uses_stored_value(state) -> bool:
    """Whether the optimiser's state carries the value and gradient at its new
    iterate (optax's line searches do), so they need not be computed again."""
    try:
        return optax.tree.get(state, "value") is not None and optax.tree.get(state, "grad") is not None
    except (KeyError, ValueError):
        return False


def minimize(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    optimizer=None,
    max_iter: int = 500,
    gtol: float = 1e-9,
    ftol: float = 1e-13,
) -> OptimizeResult:
    """Minimises ``fun`` from ``x0`` with an optax transformation, in a while_loop.

    Args:
        fun: scalar objective of a flat parameter vector.
        x0: (k,) starting point.
        optimizer: an optax ``GradientTransformation``; L-BFGS when None. Plain
            transformations (adam, sgd, …) take the gradient as their update
            direction as optax defines it.
        max_iter: iteration limit.
        gtol: stop when ``max|∇f| <= gtol * (1 + |f|)``.
        ftol: stop when ``|f_prev - f| <= ftol * (1 + |f|)`` (and the gradient
            is not large).
    """
    optimizer = default_optimizer() if optimizer is None else optimizer
    optimizer = optax.with_extra_args_support(optimizer)
    value_and_grad = jax.value_and_grad(fun)
    state0 = optimizer.init(x0)
    stored = _uses_stored_value(state0)
    value0, grad0 = value_and_grad(x0)

    def status_of(value, grad, prev_value, it):
        scale = 1.0 + jnp.abs(value)
        gmax = jnp.max(jnp.abs(grad)) if grad.size else jnp.zeros((), value.dtype)
        change = jnp.abs(prev_value - value)
        return jnp.select(
            [
                ~jnp.isfinite(value) | ~jnp.all(jnp.isfinite(grad)),
                gmax <= gtol * scale,
                (change <= ftol * scale) & (gmax <= jnp.sqrt(gtol) * scale),
                change == 0,
                it >= max_iter,
            ],
            [3, 0, 1, 4, 2],
            default=_RUNNING,
        )

    def step(carry):
        params, state, value, grad, _, it, _ = carry
        updates, state = optimizer.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        new_params = optax.apply_updates(params, updates)
        if stored:
            new_value = optax.tree.get(state, "value")
            new_grad = optax.tree.get(state, "grad")
        else:
            new_value, new_grad = value_and_grad(new_params)
        it = it + 1
        status = status_of(new_value, new_grad, value, it)
        return new_params, state, new_value, new_grad, value, it, status

    first_status = (
        jnp.where(
            jnp.isfinite(value0),
            jnp.where(jnp.max(jnp.abs(grad0)) <= gtol * (1 + jnp.abs(value0)), 0, _RUNNING),
            3,
        )
        if x0.size
        else jnp.asarray(0)
    )
    carry = (x0, state0, value0, grad0, value0, jnp.asarray(0), jnp.asarray(first_status))
    params, _, value, grad, _, it, status = jax.lax.while_loop(lambda c: c[-1] == _RUNNING, step, carry)
    return OptimizeResult(params, value, grad, it, status)


@eqx.filter_jit
def fit_statistics(
    stats: ModelStatistics,
    phi0: jax.Array,
    reml: bool,
    optimizer=None,
    max_iter: int = 500,
    gtol: float = 1e-9,
    ftol: float = 1e-13,
) -> OptimizeResult:
    """Fits the model given its statistics: one compiled call.

    ``reml``, ``optimizer``, ``max_iter`` and the tolerances are static: a new
    value compiles anew; new data of the same shapes does not.
    """
    return minimize(lambda phi: objective(phi, stats, reml), phi0, optimizer, max_iter, gtol, ftol)
