"""Fitted-model results: the fit with the names of its design.

:class:`MixedModelResults` holds what a fit gave (the pure layer's
``FitResult``, on the host) and what it was fitted to (the ``Design``, the
``ModelArrays``, the ``FitOptions``); every estimate and diagnostic is read
from them. Prediction (``_predict``), the printed forms (``_summary``) and
confidence intervals (``_intervals``) live in modules of their own; the
methods here hand over to them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import numpy.typing as npt
import pandas as pd
from jax.sharding import Mesh
from jaxtyping import Float, Shaped

from ..core import FitOptions
from ..core._callers import user_stacklevel
from ..core._compile import compiled
from ..core._fit import FitResult
from ..core._kenward_roger import KRCovariance
from ..core._simulate import simulate
from ..core._statistics import ModelData
from ..core._status import RESULTS, is_converged
from ..design._design import Design, FactorInfo, ModelArrays
from ..design._names import theta_names, varcorr_table
from ..design._prepare import prepare
from . import _inference, _intervals, _plots, _power, _predict, _summary
from ._bootstrap import BootstrapResults, as_jax, as_key, parametric_bootstrap
from ._coef import coefficients
from ._kenward_roger import kr_covariance
from ._power import PowerCurve, PowerResult
from ._predict import fixed_matrix, random_part
from ._profile import ProfileResults, profile_model
from ._update import FitCall, update

__all__ = [
    "ConvergenceWarning",
    "MixedModelResults",
    "build_results",
    "fit_status",
    "fixed_matrix",
    "random_part",
]

_jit_simulate = compiled(simulate)


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before meeting its convergence criteria."""


def fit_status(fit: FitResult) -> tuple[bool, str]:
    """Whether one fit (host leaves) converged (``core``'s one definition), and why it stopped."""
    return bool(is_converged(fit.result)), RESULTS[fit.result]


def _level_table(info: FactorInfo, values: Float[npt.ArrayLike, "J q"]) -> pd.DataFrame:
    """A (levels × terms) table of one factor's per-level values."""
    index = pd.Index(info.levels, name=info.name)
    return pd.DataFrame(np.asarray(values, dtype=float), index=index, columns=list(info.column_names))


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class MixedModelResults:
    """A fitted linear mixed model.

    Fields: ``design`` (the names and formula), ``fit_result`` (the pure
    layer's :class:`~jaxmixed.core.FitResult`, numpy leaves), ``arrays`` (the
    numeric model it was fitted to), ``options`` (the :class:`FitOptions`
    it was fitted with; ``simulate`` and ``bootstrap`` reuse them) and ``call``
    (the ``fit_reml`` call that made it, which ``update`` makes again; None for
    a refit or a table's result). Everything else is read from these.

    Estimates (names as lme4 writes them: ``(Intercept)``, ``recipeB``,
    ``recipeB:temperature185``, ``I(IQ^2)``):

    - ``fixed_effects``, ``fixed_effects_se`` (Series), ``vcov`` (DataFrame).
    - ``varcorr``: lme4's ``as.data.frame(VarCorr(m))`` columns
      ``grp, var1, var2, vcov, sdcor``; the last row is ``Residual``.
    - ``sigma``: residual standard deviation. ``theta``: lme4's θ (Series).
    - ``objective``: the REML criterion (REML fits) or the deviance (ML fits),
      on lme4's scale; ``loglik = -objective / 2``; ``aic``, ``bic`` count
      p + len(theta) + 1 parameters, as lme4 does.
    - ``random_effects``: factor name → DataFrame (levels × terms) of the
      conditional modes; ``random_effects_var`` the same shape with their
      conditional variances; ``random_effects_cov``: factor → (J, q, q).
    - ``fitted``, ``residuals`` (n,): ``Xβ̂ + Zb̂ + offset`` and ``y`` minus it;
      ``fitted_fixed``: ``Xβ̂ + offset`` (lme4's ``predict(m, re.form = NA)``);
      ``offset``: the summed offsets (n,) (lme4's ``getME(m, "offset")``), or
      None for a model without.

    Diagnostics: ``reml``, ``nobs``, ``converged``, ``convergence_message``,
    ``n_iter``, ``grad_norm`` (largest gradient entry of the objective in the
    log-Cholesky parameters), ``singular`` (a variance at the boundary,
    reported as 0), ``n_dropped_rows`` (with ``missing="drop"``),
    ``dropped_columns`` (aliased fixed-effect columns), ``formula``.
    ``optimizer_params``: the optimiser's φ (log-Cholesky parameters of the
    standardised Λ̃, −inf at a boundary).
    """

    design: Design
    fit_result: FitResult
    arrays: ModelArrays
    options: FitOptions
    call: FitCall | None = dataclasses.field(default=None, compare=False)

    # ---------------------------------------------------------------- scalars

    @property
    def sigma(self) -> float:
        """Residual standard deviation σ̂."""
        return float(self.fit_result.sigma)

    @property
    def objective(self) -> float:
        """REML criterion (REML fits) or deviance (ML fits), on lme4's scale."""
        return float(self.fit_result.objective)

    @property
    def reml(self) -> bool:
        """Whether this is a REML (else maximum likelihood) fit."""
        return self.options.reml

    @property
    def nobs(self) -> int:
        """Number of observations fitted (after dropped rows)."""
        return len(self.arrays.y)

    @functools.cached_property
    def _status(self) -> tuple[bool, str]:
        return fit_status(self.fit_result)

    @property
    def converged(self) -> bool:
        """Whether the optimiser met its convergence criteria."""
        return self._status[0]

    @property
    def convergence_message(self) -> str:
        """Why the optimiser stopped."""
        return self._status[1]

    @property
    def singular(self) -> bool:
        """A variance at the boundary (reported as exactly 0)."""
        return bool(np.any(np.asarray(self.fit_result.at_boundary)))

    @property
    def n_iter(self) -> int:
        """Iterations over all optimisations (main and boundary trials)."""
        return int(self.fit_result.n_iter)

    @property
    def grad_norm(self) -> float:
        """Largest |∂d/∂φ| at the optimum over the free parameters (standardised criterion)."""
        return float(self.fit_result.grad_norm)

    @property
    def offset(self) -> Float[np.ndarray, " n"] | None:
        """The summed offsets (n,) of the fitted rows (``offset()`` terms and ``offset=``),
        None for a model without (lme4's ``getME(m, "offset")`` gives zeros there)."""
        return None if self.arrays.offset is None else self.arrays.offset.copy()

    @property
    def n_dropped_rows(self) -> int:
        """Rows dropped for missing values (``missing="drop"``)."""
        return self.design.n_dropped_rows

    @property
    def dropped_columns(self) -> tuple[str, ...]:
        """Fixed-effect columns dropped as aliased."""
        return self.design.dropped_fixed

    @property
    def formula(self) -> str | None:
        """The formula fitted (None for array input)."""
        return self.design.formula

    @property
    def optimizer_params(self) -> Float[np.ndarray, " n_params"]:
        """The optimiser's φ: log-Cholesky parameters of the standardised Λ̃ (−inf at a boundary)."""
        return np.asarray(self.fit_result.phi, dtype=float)

    @property
    def n_params(self) -> int:
        """Parameters counted by AIC/BIC: fixed effects, θ and σ."""
        return len(self.fixed_effects) + len(self.theta) + 1

    @property
    def loglik(self) -> float:
        """Log-likelihood (restricted log-likelihood for REML fits)."""
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        """Akaike's criterion, ``objective + 2·n_params`` (lme4's)."""
        return self.objective + 2 * self.n_params

    @property
    def bic(self) -> float:
        """Schwarz's criterion, ``objective + n_params·log(nobs)`` (lme4's)."""
        return self.objective + self.n_params * math.log(self.nobs)

    @property
    def n_levels(self) -> dict[str, int]:
        """Grouping factor name → number of levels."""
        return {f.name: f.n_levels for f in self.design.factors}

    # ---------------------------------------------------------------- tables
    # Built on first use (functools.cached_property keeps them in the
    # instance's __dict__, which a frozen dataclass allows): building them all
    # costs more than a small model's compiled fit.

    @functools.cached_property
    def fixed_effects(self) -> pd.Series:
        """β̂ (p,) by fixed-effect name."""
        beta = np.asarray(self.fit_result.beta, dtype=float)
        return pd.Series(beta, index=list(self.design.fixed_names), name="estimate")

    @functools.cached_property
    def fixed_effects_se(self) -> pd.Series:
        """Standard errors (p,) of β̂: ``sqrt(diag(vcov))``."""
        se = np.sqrt(np.diag(np.asarray(self.fit_result.vcov_beta, dtype=float)))
        return pd.Series(se, index=list(self.design.fixed_names), name="std_error")

    @functools.cached_property
    def vcov(self) -> pd.DataFrame:
        """The covariance matrix of β̂ (p × p), by name."""
        names = list(self.design.fixed_names)
        return pd.DataFrame(np.asarray(self.fit_result.vcov_beta, dtype=float), index=names, columns=names)

    @functools.cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(m))``."""
        lams = [np.asarray(lam, dtype=float) for lam in self.fit_result.lambdas]
        return varcorr_table(self.design, lams, self.sigma)

    @functools.cached_property
    def theta(self) -> pd.Series:
        """lme4's θ, in lme4's order, with lme4's names."""
        theta = np.asarray(self.fit_result.theta, dtype=float)
        return pd.Series(theta[self.design.theta_order], index=theta_names(self.design), name="theta")

    @functools.cached_property
    def random_effects(self) -> dict[str, pd.DataFrame]:
        """Factor name → conditional modes (levels × terms)."""
        return {
            info.name: _level_table(info, b)
            for info, b in zip(self.design.factors, self.fit_result.b, strict=True)
        }

    def refit(self, newresp: Float[npt.ArrayLike, " n"]) -> MixedModelResults:
        """The same model fitted to another response (lme4's ``refit(m, newresp)``): the
        design, weights, offsets and settings kept, ``newresp`` (nobs,) one value per fitted row in
        their order (a Series is taken by position). A response of another length or with
        missing or infinite values is an error; a fit that does not converge warns."""
        from ._api import refit as refit_with  # the user-level fit imports the results

        y = np.asarray(newresp, dtype=float)
        if y.shape != (self.nobs,):
            raise ValueError(f"newresp must have one value per fitted row ({self.nobs}), got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"newresp has {int(np.sum(~np.isfinite(y)))} missing or infinite value(s)")
        return refit_with(self, self.options, arrays=dataclasses.replace(self.arrays, y=y))

    def update(self, formula: str | None = None, **changes: Any) -> MixedModelResults:
        """lme4's ``update``: this fit's call made again, ``formula`` written against the
        fitted one by R's rules (``"~ . + x"``, ``". ~ . - (1 | g)"``, ``"log(.) ~ ."``)
        and ``changes`` replacing ``fit_reml``'s arguments (``reml=False``,
        ``data=other``, ``weights="w"``). A term to remove must be in the fitted formula
        as written (``- a`` does not expand ``a * b``). Results of ``refit`` and of
        many-fit tables have no call to update (ValueError).

        Examples:
            >>> import jaxmixed as jm
            >>> fit = jm.fit_reml("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))
            >>> fit.update("~ . - (Days | Subject) + (1 | Subject)").formula
            'Reaction ~ Days + (1 | Subject)'
            >>> round(fit.update(reml=False).objective, 3)   # lme4's deviance: 1751.939
            1751.939
        """
        return update(self.call, formula, **changes)

    def coef(self) -> dict[str, pd.DataFrame]:
        """lme4's ``coef``: per grouping factor, each level's coefficients (levels ×
        coefficients), the fixed effects plus the level's conditional modes; a random-effect
        column without a fixed effect is 0 plus the modes, first (``_coef``)."""
        return coefficients(self.fixed_effects, self.random_effects)

    @functools.cached_property
    def random_effects_var(self) -> dict[str, pd.DataFrame]:
        """Factor name → conditional variances of the modes (levels × terms)."""
        return {
            info.name: _level_table(info, np.diagonal(cov, axis1=1, axis2=2))
            for info, cov in zip(self.design.factors, self.random_effects_cov.values(), strict=True)
        }

    @functools.cached_property
    def random_effects_cov(self) -> dict[str, Float[np.ndarray, "J q q"]]:
        """Factor name → conditional covariances of the modes (J, q, q)."""
        return {
            info.name: np.asarray(cov, dtype=float)
            for info, cov in zip(self.design.factors, self.fit_result.b_cov, strict=True)
        }

    @functools.cached_property
    def fitted_fixed(self) -> Float[np.ndarray, " n"]:
        """``Xβ̂ + offset`` (n,): lme4's ``predict(m, re.form = NA)`` keeps the offset."""
        fixed = self.arrays.X @ np.asarray(self.fit_result.beta, dtype=float)
        return fixed if self.arrays.offset is None else fixed + self.arrays.offset

    @functools.cached_property
    def fitted(self) -> Float[np.ndarray, " n"]:
        """``Xβ̂ + Zb̂ + offset`` (n,)."""
        fitted = self.fitted_fixed.copy()
        for codes, z, b in zip(self.arrays.codes, self.arrays.Z, self.fit_result.b, strict=True):
            fitted = fitted + np.einsum("nq,nq->n", z, np.asarray(b, dtype=float)[codes])
        return fitted

    @functools.cached_property
    def residuals(self) -> Float[np.ndarray, " n"]:
        """``y`` minus ``fitted`` (n,)."""
        return self.arrays.y - self.fitted

    # ---------------------------------------------------------------- methods

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        include_random: bool = True,
        *,
        X: Float[npt.ArrayLike, "n p"] | None = None,
        Z: Float[npt.ArrayLike, "n q"] | None = None,
        groups: Shaped[npt.ArrayLike, " n"] | None = None,
        offset: str | Float[npt.ArrayLike, " n"] | None = None,
    ) -> Float[np.ndarray, " n"]:
        """Predictions ``Xβ̂ (+ Zb̂) + offset`` (n,).

        Args:
            newdata: a DataFrame with the columns the formula uses; None gives
                the fitted values of the data the model was fitted on
                (``fitted``, or ``fitted_fixed`` without random effects). A
                category of a fixed-effects factor not seen in fitting is an
                error.
            include_random: add each grouping factor's conditional mode for
                the row's level (default True). A level not seen in fitting
                has no estimate: its rows get the fixed-effects prediction for
                that factor (the population mean), and a warning says how many
                rows that was.
            X: for a model fitted from arrays, in place of ``newdata``: the new
                fixed effects (n, p).
            Z: with ``X``: the new random effects' columns (n, q) (default: a
                random intercept).
            groups: with ``X``: the new rows' level labels (n,).
            offset: the ``offset=`` part of the new rows' offset: an array (n,)
                or (with ``newdata``) a column name or expression. Default: the
                fit's ``offset=`` when that was a column name or expression,
                evaluated on ``newdata`` (lme4's predict leaves it out there); a fit
                with an array ``offset=`` needs it. The formula's ``offset()``
                terms are always evaluated on ``newdata``. Not with ``newdata``
                None (the fitted rows have their own offsets).
        """
        return _predict.predict(self, newdata, include_random, X=X, Z=Z, groups=groups, offset=offset)

    def conf_int(
        self,
        level: float = 0.95,
        method: str = "wald",
        *,
        n_boot: int = 1000,
        key: int | np.integer | jax.Array = 0,
        batch_size: int | None = None,
        verbose: bool = True,
    ) -> pd.DataFrame:
        """Confidence intervals at ``level`` (default 0.95), one row per parameter.

        ``method="wald"`` (default): the fixed effects, ``β̂ ± z·SE`` (normal
        quantiles; lme4's ``confint(method = "Wald")`` without its NA rows).
        ``method="profile"``: profile likelihood intervals of every variance
        parameter, σ and the fixed effects, as lme4's ``confint(m, method =
        "profile", oldNames = FALSE)`` (see :meth:`profile`; an sd whose profile
        does not reach the limit before 0 gets 0, a correlation ±1).
        ``method="boot"``: percentile intervals of a parametric bootstrap of
        ``n_boot`` replicates (``key``: a JAX key or an integer seed) for every
        variance parameter (lme4's names), σ and the fixed effects, as lme4's
        ``confint(m, method = "boot", oldNames = FALSE)``.
        """
        return _intervals.conf_int(
            self, level, method, n_boot=n_boot, key=key, batch_size=batch_size, verbose=verbose
        )

    def profile(self, *, alphamax: float = 0.01, n_points: int = 8) -> ProfileResults:
        """Profile likelihood of every parameter (lme4's ``profile``): a
        :class:`~jaxmixed.linear._profile.ProfileResults` with the ζ traces
        (``to_frame()``, lme4's long layout) and ``conf_int(level)``.

        For each parameter ψ_w (the sds, correlations, σ and the fixed effects),
        ``ζ = sign(v − ψ̂_w)·sqrt(D(v) − D̂)`` with D(v) the ML deviance minimised
        over every other parameter with ψ_w = v. As lme4 does, a REML fit is
        refitted by ML and profiled on the ML deviance (lme4's ``devfun2``
        calls ``refitML``), so ζ = 0 at the ML estimates. The points of every
        parameter are re-optimised as one vmapped computation per round; the
        grid reaches ``|ζ| = sqrt(qchisq(1 − alphamax, n))`` (n: the number of
        parameters, lme4's cutoff) on each side or the parameter's bound, with
        ``n_points + 1`` points a side per round, in two to four rounds.
        """
        return profile_model(self, alphamax=alphamax, n_points=n_points)

    def simulate(self, n: int = 1, key: int | np.integer | jax.Array = 0) -> Float[np.ndarray, "draws n"]:
        """``n`` responses (draws: n, rows: nobs) drawn from the fitted model (lme4's ``simulate``).

        ``Xβ̂ + Zb + offset + ε`` with new random effects ``b = σ̂Λ̂u`` and
        residuals ``ε ~ N(0, σ̂²/w)`` in every draw. ``key``: a JAX key or an
        integer seed (default 0); draw k uses ``jax.random.fold_in(key, k)``.
        """
        with jax.enable_x64(True):
            data, fitted = self._model()
            draws = np.asarray(_jit_simulate(as_key(key), data, fitted, int(n)))
        # The pure layer draws the response less its offset (what the fit sees).
        return draws if self.arrays.offset is None else draws + self.arrays.offset

    def bootstrap(
        self,
        n: int = 1000,
        key: int | np.integer | jax.Array = 0,
        *,
        batch_size: int | None = None,
        devices: int | Sequence[Any] | Mesh | None = None,  # Any: jax.Device, not a static type
        verbose: bool = True,
    ) -> BootstrapResults:
        """Parametric bootstrap (lme4's ``bootMer``): ``n`` responses simulated
        from the fit and each refitted with the same settings, in vmapped
        chunks of ``batch_size`` (default: as many as fit in 512 MiB).

        Returns a :class:`BootstrapResults` (replicate estimates,
        ``conf_int(level)`` percentile intervals). ``devices``: split the
        replicates over devices (see ``fit_reml``).
        """
        with jax.enable_x64(True):
            data, fitted = self._model()
            return parametric_bootstrap(
                self.design,
                data,
                fitted,
                self.options,
                n,
                as_key(key),
                batch_size=batch_size,
                devices=devices,
                verbose=verbose,
            )

    def power(
        self,
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
        """Power by simulation (simr's ``powerSim``; ``powerCurve`` with ``along``).

        The true model is this fit with the fixed effect ``term`` (a name of
        ``fixed_effects``) set to ``effect``; ``n_sim`` responses are drawn from
        it, each refitted (in vmapped chunks of ``batch_size``) and H0:
        ``β_term = 0`` tested at level ``alpha``: ``test="lrt"`` (default) the
        likelihood-ratio test against the model without the term, both fitted by
        ML; ``"satterthwaite"`` the t test on Satterthwaite's df, fitted as this
        fit was. ``key``: a JAX key or integer seed (replicate k uses
        ``fold_in(key, k)``).

        Returns a :class:`PowerResult` (``power``, ``conf_int()`` the exact
        binomial 95% interval, ``p_values``, ``n_failed``, ``n_unconverged``).
        With ``along`` and ``sizes``: a :class:`PowerCurve` (``table``: size,
        power, lower, upper), the design grown or cut to each size: ``along`` a
        grouping factor (``"Subject"``): that many levels, new ones copying the
        rows of existing ones (simr's ``extend``); a fixed-effect column
        (``"Days"``): that many of its smallest distinct values kept.
        """
        return _power.power(
            self,
            term,
            effect,
            n_sim=n_sim,
            alpha=alpha,
            test=test,
            key=key,
            along=along,
            sizes=sizes,
            batch_size=batch_size,
            verbose=verbose,
        )

    def plot_ranef(self, *, axes: Any = None) -> Any:
        """The caterpillar plot of the conditional modes (lme4's ``dotplot(ranef(m,
        condVar = TRUE))``): one panel per grouping factor and column, levels ordered by
        the factor's first column, each mode ± 1.96 conditional sd. ``axes``: one
        matplotlib Axes per panel (default: a new figure). Returns the Figure; needs
        matplotlib (the ``plot`` extra)."""
        return _plots.plot_ranef(self, axes=axes)

    def plot_residuals(self, *, ax: Any = None) -> Any:
        """Residuals against fitted values with a zero line, into ``ax`` (default: a new
        figure). Returns the Figure; needs matplotlib (the ``plot`` extra)."""
        return _plots.plot_residuals(self, ax=ax)

    def plot_qq(self, *, axes: Any = None) -> Any:
        """Normal QQ plots of the residuals and of each column of conditional modes, with
        R's ``qqline``; ``axes``: one Axes per panel. Returns the Figure; needs
        matplotlib (the ``plot`` extra)."""
        return _plots.plot_qq(self, axes=axes)

    def _model(self) -> tuple[ModelData, FitResult]:
        """The pure layer's rows and fit, in the fit's dtype (call inside ``enable_x64``)."""
        dtype = np.asarray(self.fit_result.beta).dtype
        return prepare(self.design, self.arrays, dtype=dtype), as_jax(self.fit_result, dtype)

    def summary(self, ddf: str = "satterthwaite") -> _summary.Summary:
        """The fit's summary, in the manner of lme4 and lmerTest: the fixed effects with
        Satterthwaite's df and p-values by default (``ddf``: see :meth:`coef_table`).

        A :class:`~jaxmixed.linear._summary.Summary`: a ``str`` that prints as the table,
        with ``tables["random effects"]`` (:attr:`varcorr`) and ``tables["fixed
        effects"]`` (:meth:`coef_table`)."""
        table = self.coef_table(ddf)
        tables = {"random effects": self.varcorr, "fixed effects": table}
        return _summary.Summary(_summary.summary_text(self, ddf, table), tables)

    def coef_table(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """The fixed effects as lmerTest's ``summary`` tests them, one row each.

        ``ddf="satterthwaite"`` (default): ``Estimate``, ``Std. Error``, ``df``
        (Satterthwaite's, from the exact Hessian of the deviance in θ and σ and
        the exact gradient of each variance), ``t value``, ``Pr(>|t|)``.
        ``ddf="kenward-roger"`` (REML fits): Kenward and Roger's adjusted
        covariance gives ``Std. Error``, with their df, as lmerTest computes them
        through pbkrtest (derivatives exact; no n × n matrix formed).
        ``ddf="none"``: ``z value`` and ``Pr(>|z|)`` from the normal distribution.
        A variance at the boundary (θ = 0) is not a parameter of the Satterthwaite df.
        """
        return _inference.coef_table(self, ddf)

    def contest(self, L: Any, rhs: Any = 0.0, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F test of ``L β = rhs`` (``L`` (q, p) over ``fixed_effects``' order) with
        Satterthwaite's (``ddf="satterthwaite"``) or Kenward and Roger's
        (``"kenward-roger"``: adjusted covariance, KR df, scaled F) denominator df,
        as lmerTest's ``contest``: ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``,
        ``F value``, ``Pr(>F)``."""
        return _inference.contest(self, L, rhs, ddf)

    @functools.cached_property
    def _kenward_roger(self) -> KRCovariance:
        """Kenward and Roger's Φ, Φ_A, Pᵢ and W (computed once per fit)."""
        return kr_covariance(self)

    def anova(self, type: int = 3, ddf: str = "satterthwaite") -> pd.DataFrame:
        """F tests of the fixed-effect terms, as lmerTest's ``anova(m, type = type)``.

        One row per term (R's labels: ``recipe``, ``recipe:temperature``): ``Sum Sq``,
        ``Mean Sq``, ``NumDF``, ``DenDF``, ``F value``, ``Pr(>F)``. ``type=3``
        (default): lmerTest's type III hypotheses (each term averaged over the terms
        that contain it; the same whatever the contrast coding); ``type=1``:
        sequential. ``ddf="satterthwaite"`` (default) or ``"kenward-roger"`` (REML
        fits): the denominator df and F of :meth:`contest`. For likelihood-ratio tests of two fits see
        ``jaxmixed.anova``.
        """
        from . import _terms_anova  # it fits models: it imports the fit module, which imports this one

        return _terms_anova.term_anova(self, type, ddf)

    def drop1(self, test: str = "Chisq") -> pd.DataFrame:
        """lme4's ``drop1(m, test = "Chisq")``: each term that marginality allows
        removed in turn, every model fitted by maximum likelihood (a REML fit is
        refitted, as lme4's ``drop1`` does). Rows ``<none>`` and the term labels;
        columns ``npar``, ``AIC``, ``LRT``, ``Pr(Chi)`` (``test="none"``: the first two).
        """
        from . import _terms_anova  # see anova

        return _terms_anova.drop1(self, test)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return _summary.repr_text(self)


def build_results(
    design: Design, arrays: ModelArrays, fit: FitResult, options: FitOptions | bool
) -> MixedModelResults:
    """The results of ``fit`` (numpy leaves) of ``design``'s model to ``arrays``.

    ``options``: the ``FitOptions`` of the fit, or a bool, taken as the
    ``reml`` setting of default options. Warns when σ̂² is outside float64's
    range. The tables (``fixed_effects``, ``varcorr``, …) are built when first
    read.
    """
    _warn_extreme_sigma(float(fit.sigma))
    if not isinstance(options, FitOptions):
        options = FitOptions(reml=options)
    return MixedModelResults(design=design, fit_result=fit, arrays=arrays, options=options)


def _warn_extreme_sigma(sigma: float) -> None:
    with np.errstate(over="ignore", under="ignore"):
        sigma2 = np.float64(sigma) ** 2
    if sigma > 0 and not (np.isfinite(sigma2) and sigma2 > 0):
        warnings.warn(
            f"σ̂ = {sigma:.3g}: variances (σ̂² and varcorr's vcov) are outside float64's range and "
            "are reported as inf or 0; standard deviations, θ and β are exact. Rescale the response "
            "to see the variances",
            RuntimeWarning,
            stacklevel=user_stacklevel(),
        )


def warn_unconverged(fit: FitResult) -> None:
    """A ``ConvergenceWarning``, at the user's line, when one fit (host leaves) did not converge."""
    converged, message = fit_status(fit)
    if not converged:
        warnings.warn(
            f"the fit did not converge: {message} after {int(fit.n_iter)} "
            "iterations; the estimates may be unreliable",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )
