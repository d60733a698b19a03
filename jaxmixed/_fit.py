"""Minimisation of the profiled criterion inside one jitted loop.

The default solver is L-BFGS: optax's ``scale_by_lbfgs`` gives the direction,
and a weak-Wolfe line search (bracketing by doubling and bisection) the step.
The whole solver is one ``jax.lax.while_loop`` whose body evaluates the
objective and its gradient exactly once, at the current trial point:

- the objective is compiled once (a line search with several call sites of
  the objective compiles it several times: 3x the compilation time);
- under ``jax.vmap`` (many fits at once) every step is one batched
  evaluation, with finished fits masked, instead of nested loops.

Any other optax transformation can be used instead (``minimize(...,
optimizer=optax.adam(0.05))``); it then takes one step per evaluation.

The loop stops when the largest gradient entry is small relative to the
objective, when the objective stops changing (relative), after ``max_iter``
iterations, or when the objective is not finite. Everything here is a pure
function of arrays, so it jits and vmaps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._objective import ModelStatistics, objective, solve_mixed_model

__all__ = [
    "STATUS_MESSAGES",
    "OptimizeResult",
    "fit_statistics",
    "minimize",
]

# Stopping reasons, by the integer code that the jitted loop records.
STATUS_MESSAGES = {
    0: "gradient below tolerance",
    1: "relative change of the objective below tolerance",
    2: "iteration limit reached",
    3: "objective became NaN or infinite",
    4: "no progress: the objective stopped changing while the gradient was still large",
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


def _status(value, grad, prev_value, it, max_iter, gtol, ftol):
    """The stopping rule shared by both solvers (``_RUNNING`` to go on)."""
    scale = 1.0 + jnp.abs(value)
    gmax = jnp.max(jnp.abs(grad)) if grad.size else jnp.zeros((), value.dtype)
    change = jnp.abs(prev_value - value)
    return jnp.select(
        [
            ~jnp.isfinite(value) | ~jnp.all(jnp.isfinite(grad)),
            gmax <= gtol * scale,
            (change <= ftol * scale) & (gmax <= 1e3 * gtol * scale),
            change == 0,
            it >= max_iter,
        ],
        [3, 0, 1, 4, 2],
        default=_RUNNING,
    )


class _LBFGSCarry(NamedTuple):
    x: jax.Array  # accepted iterate
    value: jax.Array
    grad: jax.Array
    direction: jax.Array
    slope: jax.Array  # gradᵀ direction (< 0)
    step: jax.Array  # trial step length
    lo: jax.Array  # largest step known to satisfy the sufficient decrease
    hi: jax.Array  # smallest step known to fail it (inf: none yet)
    lo_value: jax.Array
    lo_grad: jax.Array
    ls_steps: jax.Array
    lbfgs_state: Any
    n_iter: jax.Array
    status: jax.Array
    started: jax.Array  # False until the first evaluation at x0


def _lbfgs_minimize(fun, x0, max_iter, gtol, ftol, memory_size=10, max_linesearch=40):
    c1, c2 = 1e-4, 0.9  # weak Wolfe constants (sufficient decrease, curvature)
    lbfgs = optax.scale_by_lbfgs(memory_size=memory_size)
    value_and_grad = jax.value_and_grad(fun)
    dtype = x0.dtype
    f_noise = 1e-11 if jnp.finfo(dtype).bits >= 64 else 1e-5

    def new_direction(x, grad, state):
        precond, state = lbfgs.update(grad, state, x)
        direction = -precond
        slope = jnp.vdot(grad, direction)
        # Not a descent direction (round-off in the memory): steepest descent.
        bad = ~(slope < 0)
        direction = jnp.where(bad, -grad, direction)
        slope = jnp.where(bad, -jnp.vdot(grad, grad), slope)
        return direction, slope, state

    def step(c: _LBFGSCarry) -> _LBFGSCarry:
        trial = jnp.where(c.started, c.x + c.step * c.direction, c.x)
        f_t, g_t = value_and_grad(trial)
        # Sufficient decrease, or (approximate Wolfe, Hager & Zhang) no increase
        # beyond round-off: near the optimum the decrease c1·step·slope is below
        # the precision of the objective and exact Armijo would reject every step.
        no_increase = f_t <= c.value + f_noise * (1.0 + jnp.abs(c.value))
        sufficient = jnp.isfinite(f_t) & ((f_t <= c.value + c1 * c.step * c.slope) | no_increase)
        slope_t = jnp.vdot(g_t, c.direction)
        curvature = slope_t >= c2 * c.slope
        converged_here = jnp.max(jnp.abs(g_t)) <= gtol * (1.0 + jnp.abs(f_t))
        wolfe = sufficient & (curvature | converged_here)
        out_of_steps = c.ls_steps + 1 >= max_linesearch
        # Accept the trial, or (line search exhausted) the best step with decrease.
        take_lo = ~wolfe & out_of_steps & (c.lo > 0)
        accept = ~c.started | wolfe | take_lo
        step_taken = jnp.where(take_lo, c.lo, c.step)
        x_new = jnp.where(c.started, c.x + step_taken * c.direction, c.x)
        f_new = jnp.where(take_lo, c.lo_value, f_t)
        g_new = jnp.where(take_lo, c.lo_grad, g_t)
        direction, slope, state = new_direction(x_new, g_new, c.lbfgs_state)
        n_iter = c.n_iter + c.started.astype(c.n_iter.dtype)
        status_accept = jnp.where(
            c.started,
            _status(f_new, g_new, c.value, n_iter, max_iter, gtol, ftol),
            _status(f_new, g_new, jnp.inf, n_iter, max_iter, gtol, ftol),
        )
        # Not accepted: narrow the bracket and try again.
        lo = jnp.where(sufficient, c.step, c.lo)
        hi = jnp.where(sufficient, c.hi, c.step)
        lo_value = jnp.where(sufficient, f_t, c.lo_value)
        lo_grad = jnp.where(sufficient, g_t, c.lo_grad)
        # Bracketed: bisect. Otherwise extrapolate to the secant minimiser of the
        # slope along the line, by a factor between 2 and 10.
        denominator = c.slope - slope_t
        secant = jnp.where(denominator < 0, c.slope / jnp.where(denominator < 0, denominator, -1.0), 10.0)
        next_step = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), c.step * jnp.clip(secant, 2.0, 10.0))
        status_reject = jnp.where(out_of_steps, 4, _RUNNING)
        keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        one = jnp.ones((), dtype)
        return _LBFGSCarry(
            x=keep(x_new, c.x),
            value=keep(f_new, c.value),
            grad=keep(g_new, c.grad),
            direction=keep(direction, c.direction),
            slope=keep(slope, c.slope),
            step=keep(one, next_step),
            lo=keep(0 * one, lo),
            hi=keep(jnp.inf * one, hi),
            lo_value=keep(f_new, lo_value),
            lo_grad=keep(g_new, lo_grad),
            ls_steps=keep(jnp.zeros_like(c.ls_steps), c.ls_steps + 1),
            lbfgs_state=jax.tree.map(keep, state, c.lbfgs_state),
            n_iter=keep(n_iter, c.n_iter),
            status=jnp.where(accept, status_accept, status_reject).astype(jnp.int32),
            started=jnp.ones((), bool),
        )

    zero = jnp.zeros((), dtype)
    carry = _LBFGSCarry(
        x=x0,
        value=jnp.inf * jnp.ones((), dtype),
        grad=jnp.zeros_like(x0),
        direction=jnp.zeros_like(x0),
        slope=zero,
        step=jnp.ones((), dtype),
        lo=zero,
        hi=jnp.inf * jnp.ones((), dtype),
        lo_value=zero,
        lo_grad=jnp.zeros_like(x0),
        ls_steps=jnp.zeros((), jnp.int32),
        lbfgs_state=lbfgs.init(x0),
        n_iter=jnp.zeros((), jnp.int32),
        status=jnp.asarray(_RUNNING, jnp.int32),
        started=jnp.zeros((), bool),
    )
    out = jax.lax.while_loop(lambda c: c.status == _RUNNING, step, carry)
    return OptimizeResult(out.x, out.value, out.grad, out.n_iter, out.status)


def minimize(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    optimizer=None,
    max_iter: int = 500,
    gtol: float = 1e-9,
    ftol: float = 1e-13,
) -> OptimizeResult:
    """Minimises ``fun`` from ``x0`` in one ``while_loop``.

    Args:
        fun: scalar objective of a flat parameter vector.
        x0: (k,) starting point.
        optimizer: None (default) for L-BFGS with a weak-Wolfe line search
            (optax's ``scale_by_lbfgs`` directions); or any optax
            ``GradientTransformation`` (adam, sgd, ``optax.lbfgs()`` with its
            own line search, …), stepped once per evaluation.
        max_iter: iteration limit.
        gtol: stop when ``max|∇f| <= gtol * (1 + |f|)``.
        ftol: stop when ``|f_prev - f| <= ftol * (1 + |f|)`` and the gradient
            is below ``1000 * gtol * (1 + |f|)``.
    """
    if optimizer is None:
        return _lbfgs_minimize(fun, x0, max_iter, gtol, ftol)
    optimizer = optax.with_extra_args_support(optimizer)
    value_and_grad = jax.value_and_grad(fun)
    state0 = optimizer.init(x0)
    stored = _uses_stored_value(state0)
    value0, grad0 = value_and_grad(x0)

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
        status = _status(new_value, new_grad, value, it, max_iter, gtol, ftol)
        return new_params, state, new_value, new_grad, value, it, status

    first_status = _status(value0, grad0, jnp.inf, 0, max_iter, gtol, ftol)
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
    solve: bool = False,
):
    """Fits the model given its statistics: one compiled call.

    Returns the :class:`OptimizeResult`; with ``solve=True``, the pair
    ``(result, solve_mixed_model(result.params, stats, reml))`` computed in the
    same compiled call (one dispatch instead of two: it matters for small
    models). ``reml``, ``optimizer``, ``max_iter``, the tolerances and
    ``solve`` are static: a new value compiles anew; new data of the same
    shapes does not.
    """
    result = minimize(lambda phi: objective(phi, stats, reml), phi0, optimizer, max_iter, gtol, ftol)
    if solve:
        return result, solve_mixed_model(result.params, stats, reml)
    return result
