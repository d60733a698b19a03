"""The solvers: minimisers of a scalar function of a flat vector, as Modules.

A solver is an ``eqx.Module`` holding its settings (as optimistix's solvers
are); ``solver.minimise(fun, x0)`` runs it as one ``jax.lax.while_loop``,
jittable and vmappable, and returns an :class:`OptimizeResult`.

- :class:`LBFGS` (the default): optax's ``scale_by_lbfgs`` gives the
  direction, a weak-Wolfe line search (bracketing by extrapolation and
  bisection) the step. The loop body evaluates the objective and its gradient
  exactly once, at the current trial point, so that the objective is compiled
  once (a line search with several call sites compiles it several times) and,
  under ``jax.vmap`` (many fits at once), every step is one batched evaluation
  with finished fits masked instead of nested loops.
- :class:`OptaxSolver`: any optax ``GradientTransformation``, one step per
  evaluation.

Both stop by one rule (:func:`stop_status`), on the gradient, on a small
change of the objective (gated by the gradient), on non-finite values, on no
progress, or on the step limit; the loops carry the internal
:class:`~jaxmixed.core._status.LoopStatus` and report a ``RESULTS`` item.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from ._status import RESULTS, LoopStatus, loop_status, to_results
from ._tolerances import CHANGE_GATE, resolve

# The public items as the loops carry them (typed as LoopStatus for the checker).
_SUCCESSFUL = loop_status("successful")
_SMALL_CHANGE = loop_status("small_change")
_MAX_STEPS_REACHED = loop_status("max_steps_reached")
_NONFINITE = loop_status("nonfinite")
_NO_PROGRESS = loop_status("no_progress")

__all__ = ["AbstractSolver", "LBFGS", "OptaxSolver", "OptimizeResult", "batched_like", "minimize", "stop_status"]

Objective = Callable[[Float[Array, " k"]], Float[Array, ""]]


class FitOptionsLike(Protocol):
    """What :func:`minimize` reads of a ``FitOptions`` (defined later, in ``_options``)."""

    @property
    def solver(self) -> AbstractSolver: ...



def batched_like(tree: Any, ref: jax.Array) -> Any:
    """``tree`` unchanged in value, every leaf made to depend on ``ref``.

    Under ``jax.vmap``, ``while_loop`` and ``scan`` find which leaves of their
    carry are batched by a fixed point: a leaf that starts unbatched (a
    constant such as an iteration count) and becomes batched in the body makes
    JAX batch the whole body again, and a loop inside a loop multiplies those
    passes. A carry that depends on the batched data from the start settles in
    one pass (measured: tracing 1,000 vmapped sleepstudy-sized fits took 1.08 s
    instead of 1.51 s, a bootstrap chunk 1.55 s instead of 2.12 s). Applied whether or
    not ``vmap`` is tracing: inside a loop's body the tracer does not say so (the body is
    traced before it is batched); unbatched, XLA folds the ``where`` of a leaf with
    itself (the single fit's program is unchanged in size and speed within noise).
    """
    flag = jnp.all(ref == ref)  # True or False: both branches are the leaf itself
    return jax.tree.map(lambda a: jnp.where(flag, a, a), tree)


class OptimizeResult(eqx.Module):
    """Where an optimisation stopped and why.

    Attributes:
        params: (k,) final parameters.
        value: () the objective there.
        grad: (k,) its gradient.
        n_iter: () accepted iterations.
        status: the loop's final :class:`LoopStatus` (``skipped`` for a run
            that was not started; ``result`` gives the public item).
        warm: the inner solver's state from the last evaluation (:meth:`LBFGS.minimise`'s
            ``warm``; ``()`` without one): a start for evaluations near ``params``.
    """

    params: Float[Array, " k"]
    value: Float[Array, ""]
    grad: Float[Array, " k"]
    n_iter: Int[Array, ""]
    status: LoopStatus
    warm: Any = ()

    @property
    def result(self) -> RESULTS:
        """The stopping reason as a ``RESULTS`` item."""
        return to_results(self.status)

    @property
    def skipped(self) -> Bool[Array, ""]:
        """True for a run that was not started (``run=False``)."""
        return self.status == LoopStatus.skipped

    @property
    def grad_norm(self) -> Float[Array, ""]:
        """The largest absolute gradient entry at the final point."""
        return jnp.max(jnp.abs(self.grad)) if self.grad.size else jnp.zeros((), self.value.dtype)


def stop_status(value, grad, prev_value, it, *, max_steps, gtol, ftol, change_gate) -> LoopStatus:
    """The stopping rule every solver shares (``LoopStatus.running`` to go on).

    In order of precedence: a non-finite value or gradient; ``max|∇f| <= gtol·s``
    with ``s = 1 + |f|``; ``|Δf| <= ftol·s`` while ``max|∇f| <= change_gate·gtol·s``
    (a small change far from stationarity is a slow stretch, not an optimum);
    ``Δf = 0`` (no progress); the step limit.
    """
    scale = 1.0 + jnp.abs(value)
    gmax = jnp.max(jnp.abs(grad)) if grad.size else jnp.zeros((), value.dtype)
    change = jnp.abs(prev_value - value)
    status = LoopStatus.where(it >= max_steps, _MAX_STEPS_REACHED, LoopStatus.running)
    status = LoopStatus.where(change == 0, _NO_PROGRESS, status)
    small = (change <= ftol * scale) & (gmax <= change_gate * gtol * scale)
    status = LoopStatus.where(small, _SMALL_CHANGE, status)
    status = LoopStatus.where(gmax <= gtol * scale, _SUCCESSFUL, status)
    nonfinite = ~jnp.isfinite(value) | ~jnp.all(jnp.isfinite(grad))
    return LoopStatus.where(nonfinite, _NONFINITE, status)


class AbstractSolver(eqx.Module):
    """A minimiser of a scalar function of a flat vector (settings as fields).

    Every solver has a step limit and the tolerances of :func:`stop_status`.
    """

    if TYPE_CHECKING:  # declared by each solver, in the order of its own fields
        max_steps: int
        gtol: float | None
        ftol: float | None
        change_gate: float

    @abc.abstractmethod
    def minimise(
        self, fun: Objective, x0: Float[Array, " k"], *, run: Bool[Array, ""] | bool = True
    ) -> OptimizeResult:
        """Minimises ``fun`` from ``x0``; ``run=False`` returns at once with status ``skipped``."""

    def stop(self, value, grad, prev_value, it) -> LoopStatus:
        """:func:`stop_status` with this solver's settings for ``value``'s dtype."""
        return stop_status(
            value,
            grad,
            prev_value,
            it,
            max_steps=self.max_steps,
            gtol=resolve(self.gtol, "gtol", value.dtype),
            ftol=resolve(self.ftol, "ftol", value.dtype),
            change_gate=self.change_gate,
        )

    def _check_common(self) -> None:
        if isinstance(self.max_steps, bool) or not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        for name in ("gtol", "ftol"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0)):
                raise ValueError(f"{name} must be None or a non-negative number, got {value!r}")
        if not self.change_gate >= 1:
            raise ValueError(f"change_gate must be at least 1, got {self.change_gate!r}")


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
    status: LoopStatus
    started: jax.Array  # False until the first evaluation at x0
    warm: Any  # the inner solver's state from the latest evaluation (() without one)


class LBFGS(AbstractSolver):
    """L-BFGS with a weak-Wolfe line search, one evaluation per loop step.

    Attributes:
        max_steps: iteration limit (default 500).
        gtol, ftol: the stopping tolerances (see :func:`stop_status`); None
            (default): by precision (``_tolerances``: 1e-9 and 1e-13 in
            float64, 1e-5 and 1e-7 in float32).
        change_gate: the small-change stop needs ``max|∇f| <= change_gate·gtol·(1 + |f|)``
            (default ``_tolerances.CHANGE_GATE``, 1000).
        memory_size: L-BFGS history length (default 10).
        max_linesearch: trial steps per line search (default 40).
        max_step: the first trial step of each line search changes no
            entry by more than this (default 2.0): a unit step along a steep
            first gradient would jump to where the variances are ~0 and the
            gradient in log coordinates vanishes (a false stationary point).
        armijo, curvature: the weak Wolfe constants c₁ = 1e-4 (sufficient
            decrease) and c₂ = 0.9 (curvature).
        f_noise: a step that raises f by at most ``f_noise·(1 + |f|)`` counts
            as no increase; None: by precision (1e-11 and 1e-5).
    """

    max_steps: int = eqx.field(default=500, static=True)
    gtol: float | None = eqx.field(default=None, static=True)
    ftol: float | None = eqx.field(default=None, static=True)
    change_gate: float = eqx.field(default=CHANGE_GATE, static=True)
    memory_size: int = eqx.field(default=10, static=True)
    max_linesearch: int = eqx.field(default=40, static=True)
    max_step: float = eqx.field(default=2.0, static=True)
    armijo: float = eqx.field(default=1e-4, static=True)
    curvature: float = eqx.field(default=0.9, static=True)
    f_noise: float | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        self._check_common()
        if isinstance(self.memory_size, bool) or not (isinstance(self.memory_size, int) and self.memory_size >= 1):
            raise ValueError(f"memory_size must be a positive integer, got {self.memory_size!r}")
        if isinstance(self.max_linesearch, bool) or not (
            isinstance(self.max_linesearch, int) and self.max_linesearch >= 1
        ):
            raise ValueError(f"max_linesearch must be a positive integer, got {self.max_linesearch!r}")
        if not self.max_step > 0:
            raise ValueError(f"max_step must be positive, got {self.max_step!r}")
        if not 0 < self.armijo < self.curvature < 1:
            raise ValueError(f"need 0 < armijo < curvature < 1, got {self.armijo!r}, {self.curvature!r}")

    def minimise(
        self,
        fun: Callable[..., Any],
        x0: Float[Array, " k"],
        *,
        run: Bool[Array, ""] | bool = True,
        warm: Any = None,
    ) -> OptimizeResult:
        """Minimises ``fun`` from ``x0`` (k,); ``run=False`` returns at once (``skipped``, no evaluation).

        The boundary trials use ``run`` so that one compiled loop serves every
        trial under ``jax.vmap``. ``warm``: a pytree that an inner iterative solver
        of the objective starts from; then ``fun(x, warm)`` returns ``(value,
        warm)`` and each evaluation starts from the previous one's (a warm start:
        the value must not depend on it beyond the inner solver's tolerance). It is
        not differentiated.
        """
        if warm is None:
            value_and_grad = jax.value_and_grad(lambda x, w: (fun(x), w), has_aux=True)
            warm = ()
        else:
            value_and_grad = jax.value_and_grad(fun, has_aux=True)
        opt = optax.scale_by_lbfgs(memory_size=self.memory_size)
        carry = self._initial(opt, x0, run, warm)
        out = jax.lax.while_loop(
            lambda c: c.status == LoopStatus.running, lambda c: self._step(c, opt, value_and_grad), carry
        )
        return OptimizeResult(out.x, out.value, out.grad, out.n_iter, out.status, warm=out.warm)

    def _initial(self, opt, x0, run, warm) -> _Carry:
        zero = jnp.zeros((), x0.dtype)
        line0, _ = self._new_line(opt, x0, jnp.zeros_like(x0), zero, opt.init(x0))
        carry = _Carry(
            x=x0,
            value=jnp.inf * jnp.ones((), x0.dtype),
            grad=jnp.zeros_like(x0),
            line=line0,
            lbfgs_state=opt.init(x0),
            n_iter=jnp.zeros((), jnp.int32),
            status=LoopStatus.where(jnp.asarray(run), LoopStatus.running, LoopStatus.skipped),
            started=jnp.zeros((), bool),
            warm=warm,
        )
        return batched_like(carry, x0)

    def _new_line(self, opt, x, grad, value, state) -> tuple[_Line, Any]:
        """The next search direction (L-BFGS, or steepest descent if that is not downhill)."""
        # optax's L-BFGS mixes int32 and int64 counters under 64-bit mode; let it
        # promote them as it expects, whatever promotion rule the caller has set.
        with jax.numpy_dtype_promotion("standard"):
            precond, state = opt.update(grad, state, x)
        direction = -precond
        slope = jnp.vdot(grad, direction)
        bad = ~(slope < 0)  # round-off in the memory
        direction = jnp.where(bad, -grad, direction)
        slope = jnp.where(bad, -jnp.vdot(grad, grad), slope)
        one = jnp.ones((), x.dtype)
        largest = jnp.max(jnp.abs(direction), initial=0.0)
        step = jnp.minimum(one, self.max_step / jnp.where(largest > 0, largest, 1.0))
        line = _Line(direction, slope, step, 0 * one, jnp.inf * one, value, grad, jnp.zeros((), jnp.int32))
        return line, state

    def _step(self, c: _Carry, opt, value_and_grad) -> _Carry:
        """One evaluation at the trial point: accept it (Wolfe) or narrow the bracket."""
        line = c.line
        trial = jnp.where(c.started, c.x + line.step * line.direction, c.x)
        (f_t, warm), g_t = value_and_grad(trial, c.warm)
        slope_t = jnp.vdot(g_t, line.direction)
        sufficient, wolfe = self._wolfe(c, f_t, g_t, slope_t)
        out_of_steps = line.n_steps + 1 >= self.max_linesearch
        # Accept the trial, or (line search exhausted) the best step with decrease.
        take_lo = ~wolfe & out_of_steps & (line.lo > 0)
        accept = ~c.started | wolfe | take_lo
        x_new = jnp.where(c.started, c.x + jnp.where(take_lo, line.lo, line.step) * line.direction, c.x)
        f_new = jnp.where(take_lo, line.lo_value, f_t)
        g_new = jnp.where(take_lo, line.lo_grad, g_t)
        new_line, state = self._new_line(opt, x_new, g_new, f_new, c.lbfgs_state)
        n_iter = c.n_iter + c.started.astype(c.n_iter.dtype)
        prev = jnp.where(c.started, c.value, jnp.inf)
        on_accept = self.stop(f_new, g_new, prev, n_iter)
        on_reject = LoopStatus.where(out_of_steps, _NO_PROGRESS, LoopStatus.running)
        keep = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
        return _Carry(
            x=keep(x_new, c.x),
            value=keep(f_new, c.value),
            grad=keep(g_new, c.grad),
            line=jax.tree.map(keep, new_line, _next_trial(line, sufficient, f_t, g_t, slope_t)),
            lbfgs_state=jax.tree.map(keep, state, c.lbfgs_state),
            n_iter=keep(n_iter, c.n_iter),
            status=LoopStatus.where(accept, on_accept, on_reject),
            started=jnp.ones((), bool),
            warm=jax.tree.map(jax.lax.stop_gradient, warm),  # the latest evaluation's, accepted or not
        )

    def _wolfe(self, c: _Carry, f_t, g_t, slope_t):
        """(sufficient decrease, weak Wolfe) at the trial point; ``slope_t`` is ∇f(trial)ᵀ direction."""
        line = c.line
        f_noise = resolve(self.f_noise, "f_noise", f_t.dtype)
        gtol = resolve(self.gtol, "gtol", f_t.dtype)
        # Sufficient decrease, or (approximate Wolfe, Hager & Zhang) no increase
        # beyond round-off: near the optimum the decrease c1·step·slope is below
        # the precision of the objective and exact Armijo would reject every step.
        no_increase = f_t <= c.value + f_noise * (1.0 + jnp.abs(c.value))
        armijo = f_t <= c.value + self.armijo * line.step * line.slope
        sufficient = jnp.isfinite(f_t) & (armijo | no_increase)
        converged_here = jnp.max(jnp.abs(g_t), initial=0.0) <= gtol * (1.0 + jnp.abs(f_t))
        return sufficient, sufficient & ((slope_t >= self.curvature * line.slope) | converged_here)


def _next_trial(line: _Line, sufficient, f_t, g_t, slope_t) -> _Line:
    """Narrows the bracket after a rejected trial step."""
    lo = jnp.where(sufficient, line.step, line.lo)
    hi = jnp.where(sufficient, line.hi, line.step)
    # Bracketed: bisect. Otherwise extrapolate to the secant minimiser of the
    # slope along the line, by a factor between 2 and 10.
    denominator = line.slope - slope_t
    safe = cast(jax.Array, jnp.where(denominator < 0, denominator, -1.0))
    secant = jnp.where(denominator < 0, line.slope / safe, 10.0)
    step = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), line.step * jnp.clip(secant, 2.0, 10.0))
    return line._replace(
        step=step,
        lo=lo,
        hi=hi,
        lo_value=jnp.where(sufficient, f_t, line.lo_value),
        lo_grad=jnp.where(sufficient, g_t, line.lo_grad),
        n_steps=line.n_steps + 1,
    )


class _OptaxCarry(NamedTuple):
    params: jax.Array
    state: Any
    value: jax.Array
    grad: jax.Array
    n_iter: jax.Array
    status: LoopStatus


class OptaxSolver(AbstractSolver):
    """Any optax ``GradientTransformation``, one step per evaluation of the objective.

    Attributes:
        optimizer: the transformation (e.g. ``optax.adam(0.05)``); optax's line
            searches (which store the value and gradient in their state) are
            used without evaluating again.
        max_steps, gtol, ftol, change_gate: as for :class:`LBFGS`.
    """

    optimizer: Any = eqx.field(static=True)
    max_steps: int = eqx.field(default=500, static=True)
    gtol: float | None = eqx.field(default=None, static=True)
    ftol: float | None = eqx.field(default=None, static=True)
    change_gate: float = eqx.field(default=CHANGE_GATE, static=True)

    def __check_init__(self):
        self._check_common()
        if not (hasattr(self.optimizer, "init") and hasattr(self.optimizer, "update")):
            raise TypeError(f"optimizer must be an optax GradientTransformation, got {self.optimizer!r}")

    def minimise(
        self, fun: Objective, x0: Float[Array, " k"], *, run: Bool[Array, ""] | bool = True
    ) -> OptimizeResult:
        """Minimises ``fun`` from ``x0`` (k,); ``run=False`` takes no step (status
        ``skipped``; the objective is still evaluated once, at ``x0``)."""
        optimizer = optax.with_extra_args_support(self.optimizer)
        value_and_grad = jax.value_and_grad(fun)
        state0 = optimizer.init(x0)
        stored = _uses_stored_value(state0)
        value0, grad0 = value_and_grad(x0)

        def step(c: _OptaxCarry) -> _OptaxCarry:
            with jax.numpy_dtype_promotion("standard"):  # optax's counters (see LBFGS._new_line)
                updates, state = optimizer.update(
                    c.grad, c.state, c.params, value=c.value, grad=c.grad, value_fn=fun
                )
            params = cast(jax.Array, optax.apply_updates(c.params, updates))
            if stored:
                value, grad = optax.tree.get(state, "value"), optax.tree.get(state, "grad")
            else:
                value, grad = value_and_grad(params)
            n_iter = c.n_iter + 1
            return _OptaxCarry(params, state, value, grad, n_iter, self.stop(value, grad, c.value, n_iter))

        first = self.stop(value0, grad0, jnp.asarray(jnp.inf, value0.dtype), 0)
        first = LoopStatus.where(jnp.asarray(run), first, LoopStatus.skipped)
        carry = batched_like(_OptaxCarry(x0, state0, value0, grad0, jnp.asarray(0, jnp.int32), first), x0)
        out = jax.lax.while_loop(lambda c: c.status == LoopStatus.running, step, carry)
        return OptimizeResult(out.params, out.value, out.grad, out.n_iter, out.status)


def _uses_stored_value(state) -> bool:
    """Whether the optimiser's state carries the value and gradient at its new
    iterate (optax's line searches do), so they need not be computed again."""
    try:
        return optax.tree.get(state, "value") is not None and optax.tree.get(state, "grad") is not None
    except (KeyError, ValueError):
        return False


def minimize(
    fun: Objective, x0: Float[Array, " k"], solver: AbstractSolver | FitOptionsLike | None = None
) -> OptimizeResult:
    """Minimises ``fun`` (a scalar function of a flat vector) from ``x0`` (k,).

    ``solver``: an :class:`AbstractSolver` (default ``LBFGS()``); a
    ``FitOptions`` is accepted too (its ``solver`` is used). One
    ``while_loop``, jittable and vmappable.

    Examples:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from jaxmixed import core
        >>> with jax.enable_x64(True):
        ...     result = core.minimize(lambda x: jnp.sum((x - jnp.arange(3.0)) ** 2), jnp.zeros(3))
        >>> result.params.round(6).tolist(), bool(core.is_converged(result.result))
        ([0.0, 1.0, 2.0], True)
    """
    if solver is None:
        return LBFGS().minimise(fun, x0)
    if isinstance(solver, AbstractSolver):
        return solver.minimise(fun, x0)
    return solver.solver.minimise(fun, x0)  # a FitOptions
