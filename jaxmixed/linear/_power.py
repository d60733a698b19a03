"""Power by simulation (simr's ``powerSim`` and ``powerCurve``).

The true model is the fit with one coefficient set to a chosen effect:
``β_term = effect``, every other β, θ and σ at their estimates. Each
replicate draws a response from it (``_simulate``: new random effects and
residuals), refits and tests H0: ``β_term = 0``:

- ``test="satterthwaite"``: the t test of ``β̂_term / SE`` on Satterthwaite's
  df (lmerTest's ``summary``), the model fitted as the original was (REML or
  ML); the df from :func:`~jaxmixed.core._inference.satterthwaite_masked`,
  whose boundary pattern is an array, so replicates with different singular
  variances share one vmapped program.
- ``test="lrt"``: the likelihood-ratio test of the model against the model
  without the term's column, both fitted by maximum likelihood to the same
  response (simr's ``fixed(term, "lr")``): ``χ² = d₀ − d₁`` on 1 df.

Every replicate of a chunk is one vmapped computation (simulate, response
statistics, fit(s), test statistic), as the parametric bootstrap's; replicate
k uses ``jax.random.fold_in(key, k)``, so the answer does not depend on
the chunk size. Power is the fraction of p-values below α among replicates
whose p-value exists, with the exact (Clopper–Pearson) interval that simr
prints. Fits that did not converge keep their p-value (simr counts them and
warns) and are counted; a replicate without a p-value (a failed fit) is
counted and left out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, Bool, Float, Int

from ..core import FitOptions
from ..core._compile import compiled
from ..core._fit import FitResult, fit, jit_design_statistics
from ..core._inference import satterthwaite_masked
from ..core._many import default_batch_size, per_fit_bytes, run_chunks
from ..core._progress import Progress
from ..core._simulate import simulate_draws
from ..core._statistics import DesignStatistics, ModelData, ModelStatistics, model_data, response_statistics
from ..design._design import Design, ModelArrays
from ._bootstrap import as_jax, as_key
from ._extend import along_kind, extend_design
from ._tails import beta_quantile, chi2_upper_tail, two_sided_p

if TYPE_CHECKING:
    from ._results import MixedModelResults

__all__ = ["PowerCurve", "PowerResult", "TESTS", "clopper_pearson", "power", "power_curve", "power_sim"]

TESTS = ("lrt", "satterthwaite")


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval (R's ``binom.test``, which simr prints) of
    ``successes`` in ``trials``: ``[B(α/2; x, n−x+1), B(1−α/2; x+1, n−x)]`` with B the
    beta quantile and α = 1 − level; 0 for the lower end at x = 0, 1 for the upper at x = n."""
    x, n = int(successes), int(trials)
    if n < 1:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    lower = 0.0 if x == 0 else float(beta_quantile(tail, x, n - x + 1))
    upper = 1.0 if x == n else float(beta_quantile(1.0 - tail, x + 1, n - x))
    return lower, upper


@dataclasses.dataclass(frozen=True)
class PowerResult:
    """The outcome of a power simulation.

    Attributes:
        term, effect: the coefficient tested and its true value.
        test: ``"lrt"`` or ``"satterthwaite"``; alpha: the test's level.
        p_values: (n_sim,) one per replicate; NaN where the fit failed.
        converged: (n_sim,) whether every fit of the replicate converged.
        n_levels: the simulated design's levels per grouping factor; nobs its rows.
    """

    term: str
    effect: float
    test: str
    alpha: float
    p_values: Float[np.ndarray, " n_sim"]
    converged: Bool[np.ndarray, " n_sim"]
    n_levels: dict[str, int]
    nobs: int

    @property
    def n_sim(self) -> int:
        """Replicates simulated."""
        return len(self.p_values)

    @property
    def n_failed(self) -> int:
        """Replicates without a p-value (a fit failed): left out of the power."""
        return int(np.sum(~np.isfinite(self.p_values)))

    @property
    def n_unconverged(self) -> int:
        """Replicates with a fit that did not converge (their p-values are kept)."""
        return int(np.sum(~self.converged))

    @property
    def n_valid(self) -> int:
        """Replicates with a p-value: the power's denominator."""
        return self.n_sim - self.n_failed

    @property
    def successes(self) -> int:
        """Replicates with ``p < alpha``."""
        return int(np.sum(self.p_values[np.isfinite(self.p_values)] < self.alpha))

    @property
    def power(self) -> float:
        """``successes / n_valid``."""
        return self.successes / self.n_valid if self.n_valid else math.nan

    def conf_int(self, level: float = 0.95) -> tuple[float, float]:
        """The Clopper–Pearson interval of the power at ``level`` (default 0.95)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        return clopper_pearson(self.successes, self.n_valid, level)

    def __str__(self) -> str:
        lower, upper = self.conf_int()
        return (
            f"Power for {self.term!r} = {self.effect:g} ({self.test} test, alpha = {self.alpha:g}), "
            f"95% confidence interval:\n      {100 * self.power:.2f}% ({100 * lower:.2f}, {100 * upper:.2f})\n"
            f"Based on {self.n_sim} simulations ({self.n_unconverged} not converged, "
            f"{self.n_failed} failed) of {self.nobs} rows, levels {self.n_levels}"
        )


@dataclasses.dataclass(frozen=True)
class PowerCurve:
    """Power at each size of the design along ``along`` (simr's ``powerCurve``)."""

    along: str
    sizes: tuple[int, ...]
    results: tuple[PowerResult, ...]

    @property
    def table(self) -> pd.DataFrame:
        """One row per size: ``size``, ``power``, ``lower``, ``upper`` (95%
        Clopper–Pearson), ``nobs``, ``n_sim``, ``n_failed``, ``n_unconverged``."""
        rows = []
        for size, r in zip(self.sizes, self.results, strict=True):
            lower, upper = r.conf_int()
            rows.append(
                {
                    "size": size,
                    "power": r.power,
                    "lower": lower,
                    "upper": upper,
                    "nobs": r.nobs,
                    "n_sim": r.n_sim,
                    "n_failed": r.n_failed,
                    "n_unconverged": r.n_unconverged,
                }
            )
        return pd.DataFrame(rows)

    def plot(self, *, ax: Any = None) -> Any:
        """Power against size with its 95% intervals (matplotlib; returns the Figure)."""
        from ._plots import plot_power_curve

        return plot_power_curve(self, ax=ax)

    def __str__(self) -> str:
        return f"Power curve along {self.along!r}:\n{self.table.to_string(index=False)}"


# ---------------------------------------------------------------- the vmapped replicates


class Replicates(eqx.Module):
    """Per replicate (K,): the test ``statistic`` (t, or χ² = d₀ − d₁), its ``df``
    (Satterthwaite's, or 1) and whether every fit ``converged``."""

    statistic: Float[Array, " K"]
    df: Float[Array, " K"]
    converged: Bool[Array, " K"]


def _t_replicate(
    design: DesignStatistics, y: Float[Array, " n"], options: FitOptions, column: int
) -> Replicates:
    """One response: the fit, ``t = β̂_c / SE_c`` and its Satterthwaite df."""
    stats = ModelStatistics(design, response_statistics(design, y))
    result = fit(stats, options)
    contrast = jnp.zeros((1, stats.n_fixed), y.dtype).at[0, column].set(1.0)
    df = satterthwaite_masked(stats, result.phi, result.at_boundary, options.reml, contrast).df[0]
    t = result.beta[column] / jnp.sqrt(result.vcov_beta[column, column])
    return Replicates(statistic=t, df=df, converged=jnp.asarray(result.converged))


def _lrt_replicate(
    full: DesignStatistics, null: DesignStatistics, y: Float[Array, " n"], options: FitOptions
) -> Replicates:
    """One response: both models fitted (``options``: ML) and ``χ² = d₀ − d₁`` on 1 df."""
    one = fit(ModelStatistics(full, response_statistics(full, y)), options)
    zero = fit(ModelStatistics(null, response_statistics(null, y)), options)
    chisq = zero.objective - one.objective
    return Replicates(statistic=chisq, df=jnp.ones_like(chisq), converged=jnp.asarray(one.converged) & jnp.asarray(zero.converged))


class Scenario(eqx.Module):
    """One simulated design: its rows, the true model over them, the design
    statistics of the full model and (LRT) of the model without the column."""

    data: ModelData
    truth: FitResult
    full: DesignStatistics
    null: DesignStatistics | None


def _chunk(
    scenario: Scenario, key: jax.Array, draws: Int[Array, " K"], options: FitOptions, column: int
) -> Replicates:
    ys = simulate_draws(key, draws, scenario.data, scenario.truth)
    if scenario.null is None:
        return jax.vmap(lambda y: _t_replicate(scenario.full, y, options, column))(ys)
    null = scenario.null
    return jax.vmap(lambda y: _lrt_replicate(scenario.full, null, y, options))(ys)


_jit_chunk = compiled(_chunk)


def p_values(replicates: Replicates, test: str) -> Float[np.ndarray, " K"]:
    """The replicates' p-values (host): two-sided t, or the χ²₁ upper tail."""
    statistic = np.asarray(replicates.statistic, float)
    df = np.asarray(replicates.df, float)
    if test == "satterthwaite":
        p = two_sided_p(statistic, df)
    else:
        p = chi2_upper_tail(np.maximum(statistic, 0.0), df)
    return np.where(np.isfinite(statistic) & np.isfinite(df), p, np.nan)


# ---------------------------------------------------------------- the host side


@dataclasses.dataclass(frozen=True)
class PowerSettings:
    """What every size of a power simulation shares."""

    term: str
    effect: float
    n_sim: int
    alpha: float
    test: str
    key: jax.Array
    batch_size: int | None = None
    verbose: bool = False


def truth_model(fitted: FitResult, column: int, effect: float, n_levels: Sequence[int]) -> FitResult:
    """``fitted`` with ``β[column] = effect`` and room for ``n_levels`` levels per factor
    (the conditional modes are not used by the simulation: zeros of that shape)."""
    beta = jnp.asarray(fitted.beta).at[column].set(effect)
    b = tuple(jnp.zeros((j, np.shape(bf)[-1]), beta.dtype) for j, bf in zip(n_levels, fitted.b, strict=True))
    return eqx.tree_at(lambda r: (r.beta, r.b), fitted, (beta, b))


def make_scenario(
    design: Design,
    arrays: ModelArrays,
    n_levels: Sequence[int],
    fitted: FitResult,
    *,
    column: int,
    effect: float,
    test: str,
) -> Scenario:
    """The :class:`Scenario` of ``arrays`` (call inside ``enable_x64`` for float64)."""
    dtype = np.asarray(fitted.beta).dtype
    data = model_data(
        arrays.X, arrays.Z, arrays.codes, n_levels, design.structures, weights=arrays.weights, dtype=dtype
    )
    null = None
    if test == "lrt":
        reduced = eqx.tree_at(lambda d: d.X, data, jnp.delete(jnp.asarray(data.X), column, axis=1))
        null = jit_design_statistics(reduced)
    truth = truth_model(fitted, column, effect, n_levels)
    return Scenario(data=data, truth=truth, full=jit_design_statistics(data), null=null)


def simulate_power(scenario: Scenario, options: FitOptions, column: int, settings: PowerSettings) -> Replicates:
    """``settings.n_sim`` replicates of ``scenario``, in vmapped chunks (numpy leaves)."""
    n = settings.n_sim
    per_fit = per_fit_bytes(scenario.data) * (2 if scenario.null is not None else 1)
    batch = settings.batch_size or default_batch_size(n, per_fit)

    def run(ids: np.ndarray) -> Replicates:
        draws = jnp.asarray(ids, jnp.int32)
        out = _jit_chunk(scenario, settings.key, draws, options, column)
        return jax.tree.map(np.asarray, out)

    return run_chunks(n, batch, run, progress=Progress(n, "simulation", settings.verbose))


def power_sim(
    design: Design,
    arrays: ModelArrays,
    fitted: FitResult,
    options: FitOptions,
    settings: PowerSettings,
    n_levels: Sequence[int] | None = None,
) -> PowerResult:
    """A :class:`PowerResult` for the model over ``arrays`` (call inside ``enable_x64``)."""
    column = list(design.fixed_names).index(settings.term)
    levels = [f.n_levels for f in design.factors] if n_levels is None else list(n_levels)
    if settings.test == "lrt":
        options = dataclasses.replace(options, reml=False)
    scenario = make_scenario(
        design, arrays, levels, fitted, column=column, effect=settings.effect, test=settings.test
    )
    replicates = simulate_power(scenario, options, column, settings)
    return PowerResult(
        term=settings.term,
        effect=settings.effect,
        test=settings.test,
        alpha=settings.alpha,
        p_values=p_values(replicates, settings.test),
        converged=np.asarray(replicates.converged, bool),
        n_levels={f.name: int(j) for f, j in zip(design.factors, levels, strict=True)},
        nobs=len(arrays.X),
    )


def power_curve(
    design: Design,
    arrays: ModelArrays,
    fitted: FitResult,
    options: FitOptions,
    settings: PowerSettings,
    *,
    along: str,
    sizes: Sequence[int],
) -> PowerCurve:
    """:func:`power_sim` at each size of the design along ``along`` (``_extend``)."""
    results = []
    for size in sizes:
        grown = extend_design(design, arrays, along, int(size))
        results.append(power_sim(design, grown.arrays, fitted, options, settings, grown.n_levels))
    return PowerCurve(along=along, sizes=tuple(int(s) for s in sizes), results=tuple(results))


def check_power_arguments(design: Design, term: str, *, n_sim: int, alpha: float, test: str) -> None:
    """ValueError for an unknown term or test, ``n_sim < 1`` or ``alpha`` outside (0, 1)."""
    if term not in design.fixed_names:
        raise ValueError(f"term {term!r} is not a fixed effect of the model; its fixed effects are {list(design.fixed_names)}")
    if test not in TESTS:
        raise ValueError(f"test must be one of {TESTS}, got {test!r}")
    if isinstance(n_sim, bool) or not isinstance(n_sim, int | np.integer) or n_sim < 1:
        raise ValueError(f"n_sim must be a positive integer number of simulations, got {n_sim!r}")
    if not (isinstance(alpha, int | float | np.floating) and 0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def power(
    results: MixedModelResults,
    term: str,
    effect: float,
    *,
    n_sim: int = 1000,
    alpha: float = 0.05,
    test: str = "lrt",
    key: int | np.integer | jax.Array = 0,
    along: str | None = None,
    sizes: Sequence[int] | None = None,
    batch_size: int | None = None,
    verbose: bool = False,
) -> PowerResult | PowerCurve:
    """``MixedModelResults.power``: checks the arguments, then :func:`power_sim` or
    :func:`power_curve` over the fit's design, in the fit's dtype."""
    check_power_arguments(results.design, term, n_sim=n_sim, alpha=alpha, test=test)
    if not math.isfinite(float(effect)):
        raise ValueError(f"effect must be a finite number, got {effect!r}")
    if (along is None) != (sizes is None):
        raise ValueError("along and sizes go together: give both (a power curve) or neither")
    if batch_size is not None and (not isinstance(batch_size, int | np.integer) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    settings = PowerSettings(
        term=term,
        effect=float(effect),
        n_sim=int(n_sim),
        alpha=float(alpha),
        test=test,
        key=as_key(key),
        batch_size=None if batch_size is None else int(batch_size),
        verbose=verbose,
    )
    with jax.enable_x64(True):
        fitted = as_jax(results.fit_result, np.asarray(results.fit_result.beta).dtype)
        if along is None:
            return power_sim(results.design, results.arrays, fitted, results.options, settings)
        assert sizes is not None
        checked = _checked_sizes(results.design, along, sizes)
        return power_curve(
            results.design, results.arrays, fitted, results.options, settings, along=along, sizes=checked
        )


def _checked_sizes(design: Design, along: str, sizes: Sequence[int]) -> tuple[int, ...]:
    """``sizes`` as positive integers (ValueError otherwise, or for an unknown ``along``)."""
    along_kind(design, along)
    values = tuple(sizes)
    if not values or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 2 for s in values):
        raise ValueError(f"sizes must be a non-empty list of integers of at least 2, got {list(values)}")
    return tuple(int(s) for s in values)
