"""A fitted GLMM with lme4's names: fixed effects and their z tests, θ, the variance
components, the conditional modes and variances, the log-likelihood and information
criteria, predictions, residuals, simulated responses and the printed summary.

Everything is read on the host (numpy, pandas) from the pure layer's
:class:`~jaxmixed.core._glmm.GLMMResult` and the design; predictions, residuals and
simulation live in ``_predict``, the summary in ``_summary``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from jaxtyping import Float

from ..core._family import Family
from ..core._glmm import GLMMResult
from ..core._status import is_converged
from ..design._design import Design, ModelArrays
from ..design._names import host_lambdas, theta_names, varcorr_table
from ..design._offsets import Offsets
from ..linear._bootstrap import BootstrapResults
from ..linear._coef import coefficients
from ..linear._intervals import wald_intervals
from ..linear._summary import Summary
from ..linear._tails import two_sided_p
from ..linear._update import FitCall, update
from . import _predict, _summary
from ._response import Response

__all__ = ["GLMMResults"]


@dataclasses.dataclass(frozen=True, eq=False)
class GLMMResults:
    """What ``fit_glmm`` returns (host arrays; lme4's names).

    Attributes:
        design, arrays: the model as built from the formula and data (factors in the
            computation's order; lme4's order is ``design.report_order``).
        family: the :class:`~jaxmixed.core._family.Family` and its link.
        nagq: 1 (Laplace) or the number of quadrature points.
        fit_result: the pure layer's :class:`~jaxmixed.core._glmm.GLMMResult`.
        formula: as the user wrote it.
        response: how the response was read (:class:`~jaxmixed.glmm._response.Response`).
        offsets: the formula's ``offset()`` terms, the ``offset=`` argument and their sum.
        index: the data's row labels (the rows of ``simulate``'s table).
        separated: the fixed effects found separated (estimates at infinity; see
            ``_separation``).
        call: the call of ``fit_glmm`` that made the fit (``update`` makes it again); None
            for a refit or a table's result.
    """

    design: Design
    arrays: ModelArrays
    family: Family
    nagq: int
    fit_result: GLMMResult
    formula: str
    response: Response
    offsets: Offsets = dataclasses.field(default_factory=Offsets)
    index: pd.Index | None = None
    separated: tuple[str, ...] = ()
    call: FitCall | None = dataclasses.field(default=None, compare=False)

    # ---------------------------------------------------------------- fit

    @property
    def converged(self) -> bool:
        """The optimiser met its criteria and PIRLS settled at the optimum."""
        return bool(is_converged(self.fit_result.result)) and bool(self.fit_result.pirls_converged)

    @property
    def singular(self) -> bool:
        """A variance reported as exactly 0 (lme4's ``isSingular``)."""
        return bool(np.any(self.fit_result.at_boundary))

    @property
    def n_obs(self) -> int:
        """Number of observations (rows) fitted."""
        return len(self.arrays.y)

    @property
    def nobs(self) -> int:
        """Rows fitted (lme4's ``nobs``; as ``MixedModelResults.nobs``)."""
        return self.n_obs

    @property
    def reml(self) -> bool:
        """False: a GLMM is a maximum likelihood fit (``jaxmixed.anova`` compares it as is)."""
        return False

    @property
    def n_params(self) -> int:
        """Parameters counted by AIC and BIC (lme4's ``npar``): θ's entries and β."""
        return self.df

    @property
    def fixef(self) -> pd.Series:
        """β̂ by R's names (lme4's ``fixef``)."""
        return pd.Series(np.asarray(self.fit_result.beta, float), index=list(self.design.fixed_names), name="fixef")

    @property
    def vcov(self) -> pd.DataFrame:
        """The covariance (p, p) of β̂ from the exact Hessian of the deviance (lme4's ``vcov``)."""
        names = list(self.design.fixed_names)
        return pd.DataFrame(np.asarray(self.fit_result.vcov_beta, float), index=names, columns=names)

    @property
    def theta(self) -> pd.Series:
        """θ̂ in lme4's order and names (``getME(m, "theta")``)."""
        theta = np.asarray(self.fit_result.theta, float)[self.design.theta_order]
        return pd.Series(theta, index=theta_names(self.design), name="theta")

    @property
    def loglik(self) -> float:
        """The log-likelihood (Laplace or quadrature) with every constant. lme4 1.1-31
        reports the same at nAGQ = 1; at nAGQ > 1 it leaves out the saturated model's
        log-likelihood Σ log f(yᵢ | μᵢ = yᵢ)."""
        return -0.5 * float(self.fit_result.deviance)

    @property
    def df(self) -> int:
        """Parameters: θ's entries and the fixed effects."""
        return len(self.fit_result.theta) + len(self.fit_result.beta)

    @property
    def aic(self) -> float:
        """Akaike's criterion, ``−2 log L + 2 df`` (lme4's ``AIC``)."""
        return -2.0 * self.loglik + 2.0 * self.df

    @property
    def bic(self) -> float:
        """Schwarz's criterion, ``−2 log L + log(n) df`` (lme4's ``BIC``)."""
        return -2.0 * self.loglik + math.log(self.n_obs) * self.df

    def coef_table(self) -> pd.DataFrame:
        """lme4's ``summary(glmer)`` coefficients: Estimate, Std. Error (from the exact
        Hessian of the deviance in (θ, β)), z value, Pr(>|z|)."""
        est = np.asarray(self.fit_result.beta, float)
        se = np.sqrt(np.diag(np.asarray(self.fit_result.vcov_beta, float)))
        z = est / se
        table = {"Estimate": est, "Std. Error": se, "z value": z, "Pr(>|z|)": two_sided_p(z, np.inf)}
        return pd.DataFrame(table, index=list(self.design.fixed_names))

    def conf_int(
        self,
        level: float = 0.95,
        method: str = "wald",
        *,
        n_boot: int = 1000,
        seed: int | None = 0,
        batch_size: int | None = None,
        verbose: bool = True,
    ) -> pd.DataFrame:
        """Confidence intervals at ``level`` (default 0.95), one row per parameter, columns
        named by their percentages (``2.5%``, ``97.5%``).

        ``method="wald"`` (default): the fixed effects, ``β̂ ± z·SE`` with the SEs of
        :meth:`coef_table` (lme4's ``confint(m, method = "Wald")`` without its NA rows).
        ``method="boot"``: percentile intervals of :meth:`bootstrap` (``n_boot``
        replicates from ``seed``) for the random effects' sds and correlations and the
        fixed effects, as lme4's ``confint(m, method = "boot", oldNames = FALSE)``.
        Profile intervals (lme4's default for ``glmer``) are not built for GLMMs.
        """
        if method == "boot":
            return self.bootstrap(n_boot, seed, batch_size=batch_size, verbose=verbose).conf_int(level)
        if method != "wald":
            raise ValueError(f"method must be 'wald' or 'boot' for a GLMM (profile intervals are not built), got {method!r}")
        names = list(self.design.fixed_names)
        estimate = pd.Series(np.asarray(self.fit_result.beta, float), index=names)
        se = pd.Series(np.sqrt(np.diag(np.asarray(self.fit_result.vcov_beta, float))), index=names)
        return wald_intervals(estimate, se, level)

    # ---------------------------------------------------------------- random effects

    @functools.cached_property
    def lambdas(self) -> tuple[Float[np.ndarray, "q q"], ...]:
        """Each grouping factor's Λ̂ (q_f, q_f), computation order: b = Λ̂u, Var(b) = Λ̂Λ̂ᵀ."""
        return tuple(host_lambdas(self.design, np.asarray(self.fit_result.theta, float)))

    @functools.cached_property
    def modes(self) -> tuple[Float[np.ndarray, "J q"], ...]:
        """Each grouping factor's conditional modes b̂ (J_f, q_f), computation order."""
        return tuple(
            np.asarray(b, float)[: info.n_levels] for info, b in zip(self.design.factors, self.fit_result.b, strict=True)
        )

    def varcorr(self) -> pd.DataFrame:
        """The random effects' variances, standard deviations and correlations: lme4's
        ``as.data.frame(VarCorr(m))`` columns grp, var1, var2 (None for a variance),
        vcov, sdcor, terms in lme4's order (no Residual row: a GLMM has no σ)."""
        table = varcorr_table(self.design, self.lambdas, 1.0)
        return table.iloc[:-1].reset_index(drop=True)  # the last row is σ's (Residual)

    def _level_table(self, info, values: Float[np.ndarray, "J q"]) -> pd.DataFrame:
        index = pd.Index(info.levels, name=info.name)
        return pd.DataFrame(np.asarray(values, float), index=index, columns=list(info.column_names))

    @functools.cached_property
    def random_effects(self) -> dict[str, pd.DataFrame]:
        """Factor name → conditional modes (levels × terms), as the linear results name them."""
        return {info.name: self._level_table(info, b) for info, b in zip(self.design.factors, self.modes, strict=True)}

    @functools.cached_property
    def random_effects_cov(self) -> dict[str, Float[np.ndarray, "J q q"]]:
        """Factor name → conditional covariances of the modes (J_f, q_f, q_f) (lme4's
        ``condVar``: the inverse of the penalised Hessian at the modes, in b's units)."""
        return {
            info.name: np.asarray(cov, float)[: info.n_levels]
            for info, cov in zip(self.design.factors, self.fit_result.b_cov, strict=True)
        }

    @functools.cached_property
    def random_effects_var(self) -> dict[str, pd.DataFrame]:
        """Factor name → conditional variances of the modes (levels × terms)."""
        return {
            info.name: self._level_table(info, np.diagonal(self.random_effects_cov[info.name], axis1=1, axis2=2))
            for info in self.design.factors
        }

    def ranef(self, condVar: bool = False) -> dict[str, pd.DataFrame]:  # noqa: N803 (lme4's name)
        """The conditional modes b̂ per grouping factor (levels × terms), lme4's ``ranef``.

        ``condVar=True``: each table also carries ``attrs["condVar"]``, the conditional
        covariances (J_f, q_f, q_f) of its levels' modes (lme4's ``postVar`` attribute, with
        the levels first, as ``random_effects_cov``); their diagonals are
        ``random_effects_var``."""
        out = {}
        for name, table in self.random_effects.items():
            table = table.copy()
            if condVar:
                table.attrs["condVar"] = self.random_effects_cov[name].copy()
            out[name] = table
        return out

    def update(self, formula: str | None = None, **changes: Any) -> GLMMResults:
        """lme4's ``update``: this fit's call made again, ``formula`` written against the
        fitted one by R's rules (``"~ . + x"``, ``". ~ . - period"``) and ``changes``
        replacing ``fit_glmm``'s arguments (``family="poisson"``, ``nAGQ=25``,
        ``data=other``). Results of ``refit`` and of many-fit tables have no call to
        update (ValueError)."""
        return update(self.call, formula, **changes)

    def refit(self, newresp: Float[npt.ArrayLike, " n"]) -> GLMMResults:
        """The same model fitted to another response (lme4's ``refit(m, newresp)``): the
        design, family, nAGQ, offsets and prior weights (binomial trials) kept;
        ``newresp`` (n_obs,) one value per row in the family's convention (binomial:
        proportions of the same trials; Poisson: counts), a Series taken by position. A
        response of another length, or one the family cannot take, is an error; the
        warnings are ``fit_glmm``'s."""
        from ._api import fit_built  # the user-level fit imports the results

        y = np.asarray(newresp, dtype=float)
        if y.shape != (self.n_obs,):
            raise ValueError(f"newresp must have one value per fitted row ({self.n_obs}), got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"newresp has {int(np.sum(~np.isfinite(y)))} missing or infinite value(s)")
        return fit_built(
            self.design, dataclasses.replace(self.arrays, y=y), self.family, nagq=self.nagq, formula=self.formula,
            response=self.response, offsets=self.offsets, index=self.index, stacklevel=3,
        )  # fmt: skip

    def coef(self) -> dict[str, pd.DataFrame]:
        """lme4's ``coef``: per grouping factor, each level's coefficients on the link
        scale (levels × coefficients), the fixed effects plus the level's conditional modes;
        a random-effect column without a fixed effect is 0 plus the modes, first."""
        return coefficients(self.fixef, self.random_effects)

    # ---------------------------------------------------------------- predictions

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        type: str = "link",  # noqa: A002 (lme4's name)
        re_form: object = None,
        allow_new_levels: bool = False,
        *,
        offset: str | np.ndarray | None = None,
    ) -> Float[np.ndarray, " m"]:
        """Predictions (m,) as lme4's ``predict(m, newdata, re.form, type, allow.new.levels)``.

        Args:
            newdata: a DataFrame with the columns of the fixed part, the grouping factors and
                the offsets; None (default): the fitted rows (m = n).
            type: ``"link"`` (default), η = xβ̂ + offset + Σ z b̂; ``"response"``, μ = g⁻¹(η).
            re_form: None (default, every random effect) or ``"~0"`` / NA (none: the
                population prediction xβ̂ + offset).
            allow_new_levels: a level of a grouping factor not seen in fitting gets no random
                effect (the population level) when True; when False (default) it is an
                error naming the level.
            offset: with ``newdata``, the ``offset=`` part of the new rows' offset (an array
                (m,), or a column name or expression). Default: the fit's ``offset=`` when it
                was a column name or expression, evaluated on ``newdata``; a fit with an
                array ``offset=`` needs it. (lme4 drops the argument's offset on new data;
                the formula's ``offset()`` terms are always evaluated on ``newdata``.)
        """
        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', got {type!r}")
        random = _predict.include_random(re_form)
        eta = _predict.linear_predictor(
            self, newdata, random=random, allow_new_levels=allow_new_levels, offset=offset
        )
        return _predict.mean_of(self, eta) if type == "response" else eta

    def fitted(self) -> Float[np.ndarray, " n"]:
        """The fitted means μ̂ = g⁻¹(η̂) (n,) on the response scale (binomial: proportions), lme4's ``fitted``."""
        return self.predict(type="response")

    def residuals(self, type: str = "deviance") -> Float[np.ndarray, " n"]:  # noqa: A002 (lme4's name)
        """lme4's ``residuals(m, type)`` (n,): ``"deviance"`` (default), ``"pearson"``,
        ``"working"`` or ``"response"`` (formulas in ``_predict.residuals``)."""
        return _predict.residuals(self, type)

    def simulate(self, nsim: int = 1, seed: int | None = None, re_form: object = "~0") -> pd.DataFrame:
        """Responses drawn from the fitted model, lme4's ``simulate(m, nsim, seed, re.form)``.

        η = xβ̂ + offset + Zb per simulation, then y from the family at μ = g⁻¹(η):

        - ``re_form="~0"`` (default; or NA, lme4's default ``re.form = NA``): conditional on
          none of the random effects: new b = Λ̂u, u ~ N(0, I), per simulation and level;
        - ``re_form=None`` (lme4's ``NULL``): conditional on all of them, b = b̂ (the modes).

        Binomial draws take the response's form, as R's binomial family simulates: for
        ``cbind(k, f)`` two columns per simulation (successes, failures), a MultiIndex
        (``sim_1``, k's expression), …; for a two-level factor its labels; else proportions
        k/trials (0/1 for a 0/1 response). Poisson draws are counts (prior weights ignored
        with a warning, as lme4 does).

        Args:
            nsim: the number of simulations (default 1).
            seed: numpy's ``default_rng(seed)`` makes the draws (None: fresh entropy).

        Returns:
            A DataFrame with one row per fitted row (the data's index) and columns
            ``sim_1`` … ``sim_<nsim>``; ``attrs["seed"]`` holds ``seed``.
        """
        return _predict.simulate(self, nsim, seed, re_form)

    def bootstrap(
        self, n: int = 1000, seed: int | None = 0, *, batch_size: int | None = None, verbose: bool = True
    ) -> BootstrapResults:
        """Parametric bootstrap (lme4's ``bootMer``, ``use.u = FALSE``): ``n`` responses
        drawn from the fit with new random effects, each refitted with the same settings
        (family, nAGQ, offsets, trials) in vmapped chunks of ``batch_size`` (default
        min(n, 256)), compiled once.

        Returns a :class:`~jaxmixed.linear._bootstrap.BootstrapResults`: the replicate
        estimates (the random effects' ``sd_``/``cor_`` in lme4's ``confint(oldNames =
        FALSE)`` names, then the fixed effects), ``std_error``, ``bias`` and
        ``conf_int(level)`` percentile intervals. A replicate that cannot be fitted
        (a constant response) counts as not converged.
        """
        from ._bootstrap import glmm_bootstrap  # the refits use fit_glmm_many's chunks

        return glmm_bootstrap(self, n, seed, batch_size=batch_size, verbose=verbose)

    # ---------------------------------------------------------------- printing

    def summary(self) -> Summary:
        """The fit's summary laid out as lme4's ``summary(glmer)`` (see ``_summary``): a
        ``str`` that prints as the table, with ``tables["random effects"]``
        (:meth:`varcorr`) and ``tables["fixed effects"]`` (:meth:`coef_table`)."""
        tables = {"random effects": self.varcorr(), "fixed effects": self.coef_table()}
        return Summary(_summary.summary_text(self), tables)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<GLMMResults {self.formula!r}, {self.family.name}({self.family.link.name}), logLik {self.loglik:.4f}>"
