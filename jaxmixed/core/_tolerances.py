"""Every numerical tolerance of the fit, in one place, by precision.

A solver or option left at ``None`` takes its value here from the dtype of the
parameters: float64 (and wider) or float32. The values are relative to
``1 + |f|`` for the standardised criterion f, whose size is set by the data
(the −2 log-likelihood of n standardised rows, so |f| ~ n).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

__all__ = ["Tolerances", "default_tolerances", "resolve"]


class Tolerances(eqx.Module):
    """The default tolerances of one precision.

    Attributes:
        gtol: gradient stop, ``max|∇f| <= gtol·(1 + |f|)``.
        ftol: small-change stop, ``|Δf| <= ftol·(1 + |f|)`` (gated by the gradient,
            see ``LBFGS.change_gate``).
        boundary_tol: a variance held at 0 is kept when the criterion rises by
            no more than ``boundary_tol·(1 + |f|)``: the round-off of f.
        f_noise: a line-search step that raises f by no more than
            ``f_noise·(1 + |f|)`` counts as no increase (approximate Wolfe):
            near the optimum the exact Armijo decrease is below f's precision.
    """

    gtol: float = eqx.field(static=True)
    ftol: float = eqx.field(static=True)
    boundary_tol: float = eqx.field(static=True)
    f_noise: float = eqx.field(static=True)


# float64: f carries ~16 digits, of which the segment sums over n rows lose a few.
DOUBLE = Tolerances(gtol=1e-9, ftol=1e-13, boundary_tol=1e-10, f_noise=1e-11)
# float32: ~7 digits.
SINGLE = Tolerances(gtol=1e-5, ftol=1e-7, boundary_tol=1e-6, f_noise=1e-5)

# The small-change stop needs max|∇f| <= CHANGE_GATE·gtol·(1 + |f|): a small change of f
# far from stationarity is a slow stretch, not an optimum (both solvers' default).
CHANGE_GATE = 1e3
# θ given as a start is floored at this (relative to its column's scale) before
# its log is taken: a start of exactly 0 would put φ at −∞.
START_FLOOR = 1e-6
# A response whose spread beyond the fixed effects is below this many machine
# epsilons (relative) is constant: there is nothing to fit.
CONSTANT_SPREAD_EPS = 100


def default_tolerances(dtype) -> Tolerances:
    """``DOUBLE`` for float64 (and wider), ``SINGLE`` otherwise."""
    return DOUBLE if jnp.finfo(dtype).bits >= 64 else SINGLE


def resolve(value: float | None, name: str, dtype) -> float:
    """``value``, or the default of the tolerance ``name`` for ``dtype`` when it is None."""
    return getattr(default_tolerances(dtype), name) if value is None else value
