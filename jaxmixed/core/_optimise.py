"""The optimiser: settings, stopping reasons and the L-BFGS loop.

The default solver is L-BFGS: optax's ``scale_by_lbfgs`` gives the direction,
and a weak-Wolfe line search (bracketing by extrapolation and bisection) the
step. The whole solver is one ``jax.lax.while_loop`` whose body evaluates the
objective and its gradient exactly once, at the current trial point:

- the objective is compiled once (a line search with several call sites of
  the objective compiles it several times);
- under ``jax.vmap`` (many fits at once) every step is one batched
  evaluation, with finished fits masked, instead of nested loops.

Any other optax transformation can be used instead (``FitOptions(optimizer=
optax.adam(0.05))``); it then takes one step per evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ._status import RESULTS

__all__ = ["RESULTS", "FitOptions", "OptimizeResult", "minimize"]


# The loop records these integer codes; the first six are RESULTS' items in order.
_ITEMS = (
    RESULTS.successful,
    RESULTS.small_change,
    RESULTS.max_steps_reached,
    RESULTS.nonfinite,
    RESULTS.no_progress,
    RESULTS.constant_response,
)
# The integer codes of the items, as the loop records them.
_GRADIENT, _CHANGE, _MAX_STEPS, _NONFINITE, _NO_PROGRESS, _CONSTANT = range(len(_ITEMS))
_SKIPPED = len(_ITEMS)  # a boundary trial not taken (internal)
_RUNNING = -1


def results_from_code(code: jax.Array) -> RESULTS:
    """The ``RESULTS`` item of an integer code recorded by the loop."""
    out = RESULTS.successful
    for k, item in enumerate(_ITEMS):
        out = RESULTS.where(code == k, item, out)
    return out


class FitOptions(eqx.Module):
    """Every setting of a fit, with its default.

    Attributes:
        reml: REML (True, default) or maximum likelihood.
        max_iter: iteration limit of each optimisation (default 500).
        gtol: stop when ``max|∇f| <= gtol·(1 + |f|)``; None (default): 1e-9 in
            float64, 1e-5 in float32. f is the standardised criterion.
        ftol: stop when ``|Δf| <= ftol·(1 + |f|)`` and the gradient is below
            ``1000·gtol·(1 + |f|)``; None: 1e-13 (float64), 1e-7 (float32).
        boundary: after convergence, try each variance (diagonal θ entry) at
            exactly 0 with the rest re-optimised (default True).
        boundary_screen: a diagonal entry is tried at 0 when setting it alone
            to 0 raises the criterion by less than this (default 2.0, on the
            −2 log-likelihood scale; see ``jaxmixed._fit``).
        boundary_tol: the zero is kept when the re-optimised criterion is not
            above the interior optimum by more than ``boundary_tol·(1 + |f|)``;
            None: 1e-10 (float64), 1e-6 (float32): round-off.
        optimizer: None (default) for L-BFGS with a weak-Wolfe line search, or
            any optax ``GradientTransformation`` for the main optimisation.
        memory_size: L-BFGS history length (default 10).
        max_linesearch: trial steps per line search (default 40).
        max_step: the first trial step of each line search changes no
            log-Cholesky parameter by more than this (default 2.0).
        start: (n_params,) starting θ in the user's units, computation order
            (factor by factor); None (default): Λ̃ = I on the standardised
            columns (lme4's Λ = I, in units where each Z column has RMS 1).
    """

    reml: bool = eqx.field(default=True, static=True)
    max_iter: int = eqx.field(default=500, static=True)
    gtol: float | None = eqx.field(default=None, static=True)
    ftol: float | None = eqx.field(default=None, static=True)
    boundary: bool = eqx.field(default=True, static=True)
    boundary_screen: float = eqx.field(default=2.0, static=True)
    boundary_tol: float | None = eqx.field(default=None, static=True)
    optimizer: Any = eqx.field(default=None, static=True)
    memory_size: int = eqx.field(default=10, static=True)
    max_linesearch: int = eqx.field(default=40, static=True)
    max_step: float = eqx.field(default=2.0, static=True)
    start: jax.Array | None = None

    def tolerances(self, dtype) -> tuple[float, float, float]:
        """(gtol, ftol, boundary_tol) for ``dtype``."""
        wide = jnp.finfo(dtype).bits >= 64
        gtol = self.gtol if self.gtol is not None else (1e-9 if wide else 1e-5)
        ftol = self.ftol if self.ftol is not None else (1e-13 if wide else 1e-7)
        btol = self.boundary_tol if self.boundary_tol is not None else (1e-10 if wide else 1e-6)
        return gtol, ftol, btol


class OptimizeResult(eqx.Module):
    """Where an optimisation stopped and why.

    ``params`` (k,) final parameters; ``value`` the objective there; ``grad``
    its gradient; ``n_iter`` iterations taken; ``code``: integer stopping
    reason (``results_from_code`` gives the ``RESULTS`` item).
    """

    params: jax.Array
    value: jax.Array
    grad: jax.Array
    n_iter: jax.Array
    code: jax.Array

    @property
    def result(self) -> RESULTS:
        """The stopping reason as a ``RESULTS`` item."""
        return results_from_code(self.code)

    @property
    def grad_norm(self) -> jax.Array:
        """The largest absolute gradient entry at the final point."""
        return jnp.max(jnp.abs(self.grad)) if self.grad.size else jnp.zeros((), self.value.dtype)


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
        [_NONFINITE, _GRADIENT, _CHANGE, _NO_PROGRESS, _MAX_STEPS],
        default=_RUNNING,
    ).astype(jnp.int32)


class _Line(NamedTuple):
    """The state of one line search along ``direction`` from ``x``."""

    direction: jax.Array
    slope: jax.Array  # gradᵀ direction (< 0)
    step: jax.Array  # trial step length
    lo: jax.Array  # largest step known to satisfy the sufficient decrease
    hi: jax.Array  # smallest step known to fail it (inf: none yet)
    lo_value: jax.Array
    lo_grad: jax.Array
    n_steps: jax.Array


class _Carry(NamedTuple):
    x: jax.Array  # accepted iterate
    value: jax.Array
    grad: jax.Array
    line: _Line
    lbfgs_state: Any
    n_iter: jax.Array
    code: jax.Array
    started: jax.Array  # False until the first evaluation at x0


def _new_line(lbfgs, x, grad, value, state, max_step):
    # optax's L-BFGS mixes int32 and int64 counters under 64-bit mode; let it
    # promote them as it expects, whatever promotion rule the caller has set.
    with jax.numpy_dtype_promotion("standard"):
        precond, state = lbfgs.update(grad, state, x)
    direction = -precond
    slope = jnp.vdot(grad, direction)
    # Not a descent direction (round-off in the memory): steepest descent.
    bad = ~(slope < 0)
    direction = jnp.where(bad, -grad, direction)
    slope = jnp.where(bad, -jnp.vdot(grad, grad), slope)
    one = jnp.ones((), x.dtype)
    # The first trial moves no entry by more than max_step: a unit step along a
    # steep first gradient would jump to where the variances are ~0 and the
    # gradient in log coordinates vanishes (a false stationary point).
    largest = jnp.max(jnp.abs(direction), initial=0.0)
    step = jnp.minimum(one, max_step / jnp.where(largest > 0, largest, 1.0))
    line = _Line(direction, slope, step, 0 * one, jnp.inf * one, value, grad, jnp.zeros((), jnp.int32))
    return line, state


def _next_trial(line: _Line, sufficient, f_t, g_t, slope_t) -> _Line:
    """Narrows the bracket after a rejected trial step."""
    lo = jnp.where(sufficient, line.step, line.lo)
    hi = jnp.where(sufficient, line.hi, line.step)
    # Bracketed: bisect. Otherwise extrapolate to the secant minimiser of the
    # slope along the line, by a factor between 2 and 10.
    denominator = line.slope - slope_t
    secant = jnp.where(denominator < 0, line.slope / jnp.where(denominator < 0, denominator, -1.0), 10.0)
    step = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), line.step * jnp.clip(secant, 2.0, 10.0))
    return line._replace(
        step=step,
        lo=lo,
        hi=hi,
        lo_value=jnp.where(sufficient, f_t, line.lo_value),
        lo_grad=jnp.where(sufficient, g_t, line.lo_grad),
        n_steps=line.n_steps + 1,
    )


def lbfgs(
    value_and_grad: Callable,
    x0: jax.Array,
    options: FitOptions,
    *,
    run: jax.Array | bool = True,
) -> OptimizeResult:
    """L-BFGS with a weak-Wolfe line search, one evaluation per loop step.

    Settings from ``options``: ``max_iter``, the tolerances for ``x0``'s
    dtype, ``memory_size``, ``max_linesearch``, ``max_step``. ``run=False``
    returns at once (code ``_SKIPPED``, no evaluation): the boundary trials
    use it, so that one compiled loop serves every trial under ``jax.vmap``.
    """
    gtol, ftol, _ = options.tolerances(x0.dtype)
    max_iter, max_linesearch, max_step = options.max_iter, options.max_linesearch, options.max_step
    c1, c2 = 1e-4, 0.9  # weak Wolfe constants (sufficient decrease, curvature)
    opt = optax.scale_by_lbfgs(memory_size=options.memory_size)
    dtype = x0.dtype
    f_noise = 1e-11 if jnp.finfo(dtype).bits >= 64 else 1e-5

    def step(c: _Carry) -> _Carry:
        line = c.line
        trial = jnp.where(c.started, c.x + line.step * line.direction, c.x)
        f_t, g_t = value_and_grad(trial)
        # Sufficient decrease, or (approximate Wolfe, Hager & Zhang) no increase
        # beyond round-off: near the optimum the decrease c1·step·slope is below
        # the precision of the objective and exact Armijo would reject every step.
        no_increase = f_t <= c.value + f_noise * (1.0 + jnp.abs(c.value))
        sufficient = jnp.isfinite(f_t) & ((f_t <= c.value + c1 * line.step * line.slope) | no_increase)
        slope_t = jnp.vdot(g_t, line.direction)
        converged_here = jnp.max(jnp.abs(g_t), initial=0.0) <= gtol * (1.0 + jnp.abs(f_t))
        wolfe = sufficient & ((slope_t >= c2 * line.slope) | converged_here)
        out_of_steps = line.n_steps + 1 >= max_linesearch
        # Accept the trial, or (line search exhausted) the best step with decrease.
        take_lo = ~wolfe & out_of_steps & (line.lo > 0)
        accept = ~c.started | wolfe | take_lo
        x_new = jnp.where(c.started, c.x + jnp.where(take_lo, line.lo, line.step) * line.direction, c.x)
        f_new = jnp.where(take_lo, line.lo_value, f_t)
        g_new = jnp.where(take_lo, line.lo_grad, g_t)
        new_line, state = _new_line(opt, x_new, g_new, f_new, c.lbfgs_state, max_step)
        n_iter = c.n_iter + c.started.astype(c.n_iter.dtype)
        prev = jnp.where(c.started, c.value, jnp.inf)
        code_accept = _status(f_new, g_new, prev, n_iter, max_iter, gtol, ftol)
        code_reject = jnp.where(out_of_steps, _NO_PROGRESS, _RUNNING).astype(jnp.int32)
        keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        return _Carry(
            x=keep(x_new, c.x),
            value=keep(f_new, c.value),
            grad=keep(g_new, c.grad),
            line=jax.tree.map(keep, new_line, _next_trial(line, sufficient, f_t, g_t, slope_t)),
            lbfgs_state=jax.tree.map(keep, state, c.lbfgs_state),
            n_iter=keep(n_iter, c.n_iter),
            code=jnp.where(accept, code_accept, code_reject),
            started=jnp.ones((), bool),
        )

    zero = jnp.zeros((), dtype)
    line0, _ = _new_line(opt, x0, jnp.zeros_like(x0), zero, opt.init(x0), max_step)
    carry = _Carry(
        x=x0,
        value=jnp.inf * jnp.ones((), dtype),
        grad=jnp.zeros_like(x0),
        line=line0,
        lbfgs_state=opt.init(x0),
        n_iter=jnp.zeros((), jnp.int32),
        code=jnp.where(run, _RUNNING, _SKIPPED).astype(jnp.int32),
        started=jnp.zeros((), bool),
    )
    out = jax.lax.while_loop(lambda c: c.code == _RUNNING, step, carry)
    return OptimizeResult(out.x, out.value, out.grad, out.n_iter, out.code)


def _uses_stored_value(state) -> bool:
    """Whether the optimiser's state carries the value and gradient at its new
    iterate (optax's line searches do), so they need not be computed again."""
    try:
        return optax.tree.get(state, "value") is not None and optax.tree.get(state, "grad") is not None
    except (KeyError, ValueError):
        return False


def _optax_minimize(fun, x0, optimizer, max_iter, gtol, ftol) -> OptimizeResult:
    optimizer = optax.with_extra_args_support(optimizer)
    value_and_grad = jax.value_and_grad(fun)
    state0 = optimizer.init(x0)
    stored = _uses_stored_value(state0)
    value0, grad0 = value_and_grad(x0)

    def step(carry):
        params, state, value, grad, _, it, _ = carry
        with jax.numpy_dtype_promotion("standard"):  # optax's counters (see _new_line)
            updates, state = optimizer.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        new_params = optax.apply_updates(params, updates)
        if stored:
            new_value, new_grad = optax.tree.get(state, "value"), optax.tree.get(state, "grad")
        else:
            new_value, new_grad = value_and_grad(new_params)
        it = it + 1
        return (
            new_params,
            state,
            new_value,
            new_grad,
            value,
            it,
            _status(new_value, new_grad, value, it, max_iter, gtol, ftol),
        )

    first = _status(value0, grad0, jnp.inf, 0, max_iter, gtol, ftol)
    carry = (x0, state0, value0, grad0, value0, jnp.asarray(0, jnp.int32), first)
    params, _, value, grad, _, it, code = jax.lax.while_loop(lambda c: c[-1] == _RUNNING, step, carry)
    return OptimizeResult(params, value, grad, it, code)


def minimize(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    options: FitOptions | None = None,
) -> OptimizeResult:
    """Minimises ``fun`` (a scalar function of a flat vector) from ``x0`` (k,).

    Uses ``options.optimizer`` (None: L-BFGS), ``max_iter``, the tolerances,
    ``memory_size`` and ``max_linesearch`` of ``options`` (default
    ``FitOptions()``); one ``while_loop``, jittable and vmappable.
    """
    options = FitOptions() if options is None else options
    if options.optimizer is not None:
        gtol, ftol, _ = options.tolerances(x0.dtype)
        return _optax_minimize(fun, x0, options.optimizer, options.max_iter, gtol, ftol)
    return lbfgs(jax.value_and_grad(fun), x0, options)
