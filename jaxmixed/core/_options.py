"""The settings of a fit: the model's, the solver's and the boundary policy's.

:class:`FitOptions` holds what the model is (REML or ML), which solver
minimises it (an ``AbstractSolver`` Module with its own settings), how
boundary (singular) fits are sought (:class:`BoundaryTrials`, or None) and
where to start. Every options Module validates itself when it is made.
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import numpy as np
from jax.core import Tracer
from jaxtyping import Array, Float

from ._solvers import LBFGS, AbstractSolver, OptaxSolver

__all__ = ["BoundaryTrials", "FitOptions", "checked_reml"]


class BoundaryTrials(eqx.Module):
    """After the main optimisation, each variance tried at exactly 0 (see ``_fit``).

    Attributes:
        screen: a diagonal entry of θ is tried at 0 only when setting it alone
            to 0 raises the criterion by less than this (default 2.0, on the
            −2 log-likelihood scale): the secant increase ½hθ² adapts to the
            curvature h at the boundary.
        tol: the zero is kept when the re-optimised criterion is not above the
            interior optimum by more than ``tol·(1 + |f|)``; None (default):
            round-off by precision (1e-10 in float64, 1e-6 in float32).
        solver: the L-BFGS run of each trial; None (default): the fit's solver
            when it is an ``LBFGS``, else ``LBFGS`` with its step limit and
            tolerances.
    """

    screen: float = eqx.field(default=2.0, static=True)
    tol: float | None = eqx.field(default=None, static=True)
    solver: LBFGS | None = None

    def __check_init__(self):
        if not (isinstance(self.screen, (int, float)) and self.screen > 0 and np.isfinite(self.screen)):
            raise ValueError(f"BoundaryTrials.screen must be a positive finite number, got {self.screen!r}")
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ValueError(f"BoundaryTrials.tol must be None or a non-negative number, got {self.tol!r}")
        if self.solver is not None and not isinstance(self.solver, LBFGS):
            raise TypeError(f"BoundaryTrials.solver must be None or an LBFGS, got {self.solver!r}")

    def trial_solver(self, main: AbstractSolver) -> LBFGS:
        """The L-BFGS that runs each trial, given the fit's main solver."""
        if self.solver is not None:
            return self.solver
        if isinstance(main, LBFGS):
            return main
        return LBFGS(max_steps=main.max_steps, gtol=main.gtol, ftol=main.ftol, change_gate=main.change_gate)


# The records are immutable and hashable, so equal settings share one record: building
# a Module (with its checks) on every fit_reml call costs more than the rest of the options.
_DEFAULT_TRIALS = BoundaryTrials()


@functools.lru_cache(maxsize=64)
def _lbfgs(**fields: Any) -> LBFGS:
    return LBFGS(**fields)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def checked_reml(reml: Any) -> bool:
    """``reml`` as a plain bool; anything but a bool (``"no"``, ``"ML"``, 1) is a
    ``TypeError`` (a truthy string would otherwise fit REML). Every options
    record and entry point checks its ``reml`` here."""
    if not _is_bool(reml):
        raise TypeError(f"reml must be True (REML) or False (ML), got {reml!r}")
    return bool(reml)


class FitOptions(eqx.Module):
    """Every setting of a fit, with its default.

    Attributes:
        reml: REML (True, default) or maximum likelihood (False); a real bool
            (a string such as ``"ML"`` or ``"no"`` is an error, not truthy).
        solver: the minimiser of the main optimisation (default ``LBFGS()``:
            500 steps, tolerances by precision); ``OptaxSolver(optax.adam(0.05))``
            for any optax transformation.
        boundary: ``BoundaryTrials()`` (default) to try each variance at exactly
            0 after convergence, or None not to.
        start: (n_params,) starting θ in the user's units, computation order
            (factor by factor); None (default): Λ̃ = I on the standardised
            columns (lme4's Λ = I, in units where each Z column has RMS 1).

    Shorthands (keywords of the constructor that build the records above):
    ``max_iter``, ``gtol``, ``ftol``, ``memory_size``, ``max_linesearch``,
    ``max_step`` set the solver's fields; ``optimizer`` (an optax
    transformation) makes it an ``OptaxSolver``; ``boundary=True``/``False``
    means ``BoundaryTrials()``/None; ``boundary_screen`` and ``boundary_tol``
    set the trials' fields. ``FitOptions(reml=False, max_iter=200)`` is
    ``FitOptions(reml=False, solver=LBFGS(max_steps=200))``.
    """

    reml: bool = eqx.field(static=True)
    solver: AbstractSolver
    boundary: BoundaryTrials | None
    start: Float[Array, " n_params"] | None

    def __init__(
        self,
        reml: bool = True,
        solver: AbstractSolver | None = None,
        boundary: BoundaryTrials | bool | None = True,
        start: Float[Array, " n_params"] | None = None,
        **shorthand: Any,
    ):
        self.reml = checked_reml(reml)  # before it is stored: a static field must be a plain value
        self.solver = _solver(solver, shorthand)
        self.boundary = _boundary(boundary, shorthand)
        self.start = start
        if shorthand:
            raise TypeError(f"FitOptions got unexpected keyword arguments {sorted(shorthand)}")

    def __check_init__(self):
        if not isinstance(self.solver, AbstractSolver):
            raise TypeError(f"solver must be a jaxmixed solver (LBFGS, OptaxSolver), got {self.solver!r}")
        if self.start is not None:
            _check_start(self.start)

    @property
    def max_iter(self) -> int:
        """The main solver's step limit."""
        return self.solver.max_steps

    @property
    def optimizer(self) -> Any:
        """The optax transformation of an ``OptaxSolver``; None for L-BFGS."""
        return self.solver.optimizer if isinstance(self.solver, OptaxSolver) else None


_SOLVER_FIELDS = {"max_iter": "max_steps", "gtol": "gtol", "ftol": "ftol"}
_LBFGS_FIELDS = ("memory_size", "max_linesearch", "max_step")


def _check_start(start: Any) -> None:
    """``start`` is a 1-D array of real numbers (finite, when its values are known here)."""
    dtype = start.dtype if hasattr(start, "dtype") else np.asarray(start).dtype
    real = np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
    if np.ndim(start) != 1 or not real:
        raise TypeError(f"start must be a 1-D array of numbers (θ in the user's units), got {start!r}")
    if not isinstance(start, Tracer) and not np.all(np.isfinite(np.asarray(start))):
        raise ValueError(f"start must be finite, got {start!r}")


def _solver(solver: AbstractSolver | None, shorthand: dict) -> AbstractSolver:
    """The solver, from ``solver`` or the shorthand keywords (popped from ``shorthand``)."""
    common = {new: shorthand.pop(old) for old, new in _SOLVER_FIELDS.items() if shorthand.get(old) is not None}
    lbfgs = {k: shorthand.pop(k) for k in _LBFGS_FIELDS if shorthand.get(k) is not None}
    optimizer = shorthand.pop("optimizer", None)
    for k in (*_SOLVER_FIELDS, *_LBFGS_FIELDS):
        shorthand.pop(k, None)  # given as None: the default
    if solver is not None:
        if common or lbfgs or optimizer is not None:
            raise TypeError("give either solver= or the solver shorthands (max_iter, gtol, optimizer, ...)")
        return solver
    if optimizer is not None:
        if lbfgs:
            raise TypeError(f"{sorted(lbfgs)} are L-BFGS settings; they do not apply with optimizer=")
        return OptaxSolver(optimizer, **common)
    return _lbfgs(**common, **lbfgs)


def _boundary(boundary: BoundaryTrials | bool | None, shorthand: dict) -> BoundaryTrials | None:
    """The boundary policy, from ``boundary`` or the shorthands (popped from ``shorthand``)."""
    fields = {
        new: shorthand.pop(old)
        for old, new in (("boundary_screen", "screen"), ("boundary_tol", "tol"))
        if old in shorthand
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if isinstance(boundary, BoundaryTrials):
        if fields:
            raise TypeError("give either boundary=BoundaryTrials(...) or boundary_screen/boundary_tol")
        return boundary
    if boundary is None or (_is_bool(boundary) and not boundary):
        if fields:
            raise TypeError(f"{sorted(fields)} tune the boundary trials, which boundary={boundary!r} turns off")
        return None
    if _is_bool(boundary):
        return BoundaryTrials(**fields) if fields else _DEFAULT_TRIALS
    raise TypeError(f"boundary must be True, False, None or a BoundaryTrials, got {boundary!r}")
