"""Profile likelihood traces and intervals of a fitted model (lme4's ``profile``
and ``confint(method = "profile", oldNames = FALSE)``).

The computation is ``core._profile``'s: every grid point of every parameter
re-optimised in one vmapped, compiled program per round. As lme4 does, a REML
fit is refitted by ML and every parameter (variance parameters and fixed
effects) is profiled on the ML deviance, so the intervals surround the ML
estimates.
"""

from __future__ import annotations

import dataclasses
import warnings
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from ..core import FitOptions
from ..core._callers import user_stacklevel
from ..core._compile import compiled, unoptimised_on_cpu
from ..core._profile import (
    ProfileLayout,
    ProfilePoints,
    ProfileTrace,
    QuadraticApproximation,
    optimum,
    optimum_x,
    parameter_limits,
    profile_grid,
    profile_points,
    quadratic_approximation,
    sd_units,
    start_point,
)
from ..core._statistics import ModelStatistics, model_statistics
from ..design._design import Design
from ..design._names import parameter_names
from ._tails import chi2_upper_quantile

if TYPE_CHECKING:  # the results import this module
    from ._results import MixedModelResults

__all__ = ["ProfileProblem", "ProfileResults", "profile_model", "profile_problem"]

_jit_statistics = compiled(model_statistics)
# The standard errors' program (a Hessian, run once) compiles without XLA's backend
# optimisation on a CPU; the points' vmapped L-BFGS keeps it: without, it compiled
# about 5 s faster but ran 2.5x slower on sleepstudy.
_jit_points = compiled(profile_points)
_jit_quadratic = compiled(quadratic_approximation, compiler_options=unoptimised_on_cpu)


@dataclasses.dataclass(frozen=True)
class ProfileResults:
    """The ζ traces of every parameter (lme4's ``profile``; a ``thpr`` object).

    Attributes:
        trace: the points profiled (``core._profile.ProfileTrace``): per point
            the parameter held (``which``), ζ and every parameter's value.
        names: the parameters, lme4's ``oldNames = FALSE`` names then the fixed
            effects (``estimate``'s index).
        kinds: per parameter ``core._profile``'s SD, COR, SIGMA or FIXED.
    """

    trace: ProfileTrace
    names: tuple[str, ...]
    kinds: np.ndarray

    @property
    def estimate(self) -> pd.Series:
        """The ML estimates ψ̂, where every ζ is 0."""
        return pd.Series(self.trace.estimate, index=list(self.names), name="estimate")

    @property
    def deviance(self) -> float:
        """The ML deviance at ψ̂ (lme4's ``basedev``)."""
        return self.trace.deviance

    @property
    def converged(self) -> bool:
        """Whether every re-optimisation met its convergence criteria."""
        return bool(np.all(self.trace.converged))

    def to_frame(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(profile(m))``: one row per point, ``.zeta``, every
        parameter's value there, ``.par`` (the parameter held, a categorical in
        parameter order); rows by parameter, then by its value."""
        names = list(self.names)
        frame = pd.DataFrame(self.trace.params, columns=names)
        frame.insert(0, ".zeta", self.trace.zeta)
        frame[".par"] = pd.Categorical.from_codes(self.trace.which, categories=names)
        held = self.trace.params[np.arange(len(self.trace.which)), self.trace.which]
        order = np.lexsort((held, self.trace.which))
        frame = frame.iloc[order].drop_duplicates()
        return frame.reset_index(drop=True)

    def plot(self, *, level: float = 0.95, axes: Any = None) -> Any:
        """ζ against each parameter, one panel each, with ±z and the interval's limits at
        ``level`` marked (lme4's ``xyplot(profile(m))``); needs matplotlib. Returns the Figure."""
        from . import _plots

        return _plots.plot_profile(self, level=level, axes=axes)

    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """Profile intervals: where ζ crosses ∓z, z the normal ``(1 + level)/2``
        quantile, a (parameters × 2) table with columns ``2.5%``, ``97.5%``.

        A side whose ζ does not reach z (the profile flattens before a bound)
        gives lme4's value: 0 for an sd or σ, ±1 for a correlation, Inf above,
        NaN for a fixed effect; a non-monotone profile gives NaN and a warning.
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        z = NormalDist().inv_cdf(0.5 + level / 2)
        if z > self.trace.cutoff:
            warnings.warn(
                f"level {level} needs |ζ| up to {z:.3g}, beyond the profile's {self.trace.cutoff:.3g}: "
                "profile again with a smaller alphamax",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        lower, upper, monotone = parameter_limits(self.trace, self.kinds, z)
        for name in np.asarray(self.names)[~monotone]:
            warnings.warn(f"non-monotonic profile for {name}", RuntimeWarning, stacklevel=user_stacklevel())
        pct = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
        return pd.DataFrame({f"{pct[0]:g}%": lower, f"{pct[1]:g}%": upper}, index=list(self.names))


def _layout(design: Design) -> ProfileLayout:
    """lme4's terms in its order, as (factor, first column, end) of that factor's Λ."""
    terms = tuple((f, *design.factors[f].structure.term_slices[t]) for f, t in design.report_order)
    return ProfileLayout(terms=terms, n_fixed=len(design.fixed_names))


def _cutoff(alphamax: float, n_params: int) -> float:
    """lme4's ``sqrt(qchisq(1 − alphamax, nptot))``."""
    return float(np.sqrt(chi2_upper_quantile(alphamax, n_params)))


class ProfileProblem(eqx.Module):
    """What every profile point of one model shares: the statistics, the
    parameters' layout, the ML optimum ψ̂ (m,) and deviance, the start x₀, the
    deviance's quadratic approximation there (host arrays) and the sds' column
    scales (``core._profile.sd_units``)."""

    stats: ModelStatistics
    layout: ProfileLayout
    psi_hat: np.ndarray
    deviance: float
    x0: jax.Array
    quadratic: QuadraticApproximation
    units: np.ndarray

    def evaluate(
        self,
        which: Int[np.ndarray, " K"],
        values: Float[np.ndarray, " K"],
        starts: Float[np.ndarray, "K n_x"] | None = None,
        factors: Float[np.ndarray, "K n_x n_x"] | None = None,
    ) -> ProfilePoints:
        """The re-optimised points (parameter ``which`` held at ``values``), one vmapped
        program, each from its row of ``starts`` (default: x₀ for every point) in the
        coordinates of its ``factors`` (default: the identity)."""
        dtype = self.x0.dtype
        k, n_x = len(which), self.x0.shape[0]
        x = jnp.tile(self.x0, (k, 1)) if starts is None else jnp.asarray(starts, dtype)
        f = jnp.tile(jnp.eye(n_x, dtype=dtype), (k, 1, 1)) if factors is None else jnp.asarray(factors, dtype)
        which_, values_ = jnp.asarray(which, jnp.int32), jnp.asarray(values, dtype)
        return _jit_points(self.stats, self.layout, x, which_, values_, f)


def profile_problem(results: MixedModelResults) -> ProfileProblem:
    """The ML refit and everything the points share (call inside ``enable_x64``).

    Always in float64, whatever the fit's precision: ζ is the square root of a
    deviance difference, which float32 cannot resolve near the optimum (the points'
    gradient tolerance, ``PROFILE_SOLVER``, is float64's). A refit that does not
    converge warns, as ``jm.anova``'s refits do.
    """
    from ._api import fit_design, padded_model  # the user-level fit imports the results, which import this
    from ._results import warn_unconverged

    layout = _layout(results.design)
    dtype = np.float64
    data, y, n_obs = padded_model(results.design, results.arrays, dtype)
    stats = _jit_statistics(data, y, n_obs=n_obs)
    options = FitOptions(reml=False, solver=results.options.solver, boundary=results.options.boundary)

    # The ML refit through fit_reml's own path: its padded program is shared with
    # fit_reml(reml=False) and jm.anova's refits.
    fit_ml = jax.tree.map(np.asarray, fit_design(results.design, results.arrays, options, dtype=dtype))
    warn_unconverged(fit_ml)
    psi_hat = np.asarray(optimum(fit_ml, layout), float)
    units = sd_units(stats, layout)
    x0 = jnp.asarray(start_point(psi_hat, layout, units), dtype)
    beta = jnp.asarray(psi_hat[layout.n_x :], dtype)
    x_hat = jnp.asarray(optimum_x(psi_hat, layout), dtype)
    quadratic = jax.tree.map(np.asarray, _jit_quadratic(stats, layout, x_hat, beta))
    assert isinstance(quadratic, QuadraticApproximation)
    return ProfileProblem(stats, layout, psi_hat, float(fit_ml.objective), x0, quadratic, units)


def profile_model(results: MixedModelResults, *, alphamax: float = 0.01, n_points: int = 8) -> ProfileResults:
    """``MixedModelResults.profile``: see there."""
    if not 0.0 < alphamax < 1.0:
        raise ValueError(f"alphamax must be in (0, 1), got {alphamax}")
    with jax.enable_x64(True):
        problem = profile_problem(results)
        trace = profile_grid(
            problem.evaluate,
            problem.psi_hat,
            problem.quadratic,
            problem.deviance,
            problem.layout,
            cutoff=_cutoff(alphamax, len(problem.psi_hat)),
            n_points=n_points,
            units=problem.units,
        )
    n_bad = int(np.sum(~np.asarray(trace.converged, bool)))
    if n_bad:
        warnings.warn(
            f"{n_bad} of {len(trace.converged)} profile points did not converge; the intervals "
            "read from them may be off (ProfileResults.converged, to_frame())",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )
    names = tuple(parameter_names(results.design)) + tuple(results.fixed_effects.index)
    return ProfileResults(trace=trace, names=names, kinds=problem.layout.kinds)


def profile_intervals(results: MixedModelResults, level: float) -> pd.DataFrame:
    """``conf_int(method="profile")``: the profile's intervals at ``level`` (the
    grid reaches at least the level's z)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alphamax = min(0.01, (1.0 - level) / 2)
    return profile_model(results, alphamax=alphamax).conf_int(level)
