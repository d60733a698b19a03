"""Fitted-model results: estimates with names, tables, prediction, summary."""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any

import jax
import numpy as np
import pandas as pd
from formulaic.errors import DataMismatchWarning

from ..core._compile import compiled
from ..core._fit import FitResult
from ..core._options import FitOptions
from ..core._simulate import simulate
from ..core._status import RESULTS
from ..design._design import Design, FactorInfo, ModelArrays
from ..design._names import theta_names, varcorr_table
from ..design._prepare import prepare
from ._bootstrap import BootstrapResults, as_jax, as_key, parametric_bootstrap

__all__ = ["MixedModelResults", "fixed_matrix", "random_part"]

_Z975 = 1.959963984540054  # standard normal 97.5% quantile
_jit_simulate = compiled(simulate)
# The stopping reasons that count as converged (``FitResult.converged``).
_CONVERGED = frozenset({RESULTS[RESULTS.successful], RESULTS[RESULTS.small_change]})
# The fields the results' repr shows, in the order the dataclass showed them.
_REPR_FIELDS = (
    "fixed_effects",
    "fixed_effects_se",
    "vcov",
    "varcorr",
    "sigma",
    "theta",
    "objective",
    "reml",
    "nobs",
    "converged",
    "convergence_message",
    "singular",
    "n_iter",
    "grad_norm",
    "random_effects",
    "random_effects_var",
    "random_effects_cov",
    "fitted",
    "fitted_fixed",
    "residuals",
    "n_dropped_rows",
    "dropped_columns",
    "formula",
)


def _level_table(info: FactorInfo, values: Any) -> pd.DataFrame:
    """A (levels × terms) table of one factor's per-level values."""
    index = pd.Index(info.levels, name=info.name)
    return pd.DataFrame(np.asarray(values, dtype=float), index=index, columns=list(info.column_names))


def _factor_design(info: FactorInfo, data: pd.DataFrame) -> np.ndarray:
    mats = []
    for spec, cols in zip(info.term_specs, info.term_columns, strict=True):
        mm = spec.get_model_matrix(data, na_action="raise")
        mats.append(np.asarray(mm[list(cols)], dtype=float))
    return np.concatenate(mats, axis=1)


def _factor_codes(info: FactorInfo, data: pd.DataFrame) -> np.ndarray:
    """Level codes of the rows of ``data`` for the factor ``info``; -1 for a level
    not seen in fitting.

    Labels match by value; labels of another kind than the fitted ones (strings
    for integers, or integers for strings) match by their string forms ("3" is
    3). New labels of another kind of which none match are an error.
    """
    if len(info.columns) > 1:
        labels = data[list(info.columns)].astype(str).agg(":".join, axis=1)
        return info.levels.get_indexer(pd.Index(labels))
    values = data[info.columns[0]]
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    new = pd.Index(values)
    codes = info.levels.get_indexer(new)
    kinds = [pd.api.types.infer_dtype(x, skipna=True) for x in (info.levels, new)]
    numeric = ("integer", "floating", "mixed-integer-float", "decimal")
    if (codes >= 0).all() or kinds[0] == kinds[1] or (kinds[0] in numeric and kinds[1] in numeric):
        return codes
    by_str = {str(label): k for k, label in reversed(list(enumerate(info.levels)))}
    str_codes = np.asarray([by_str.get(str(v), -1) for v in new], dtype=codes.dtype)
    codes = np.where(codes >= 0, codes, str_codes)
    if len(new) and (codes < 0).all():
        raise ValueError(
            f"the labels of grouping factor {info.name!r} in newdata are of type {kinds[1]} and "
            f"none matches the fitted labels, of type {kinds[0]}: convert them to the fitted type"
        )
    return codes


def _factor_part(b: pd.DataFrame, info: FactorInfo, codes: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z·b[level]`` (n,) for one factor; 0 (and a warning) for unseen levels."""
    unseen = codes < 0
    if unseen.any():
        warnings.warn(
            f"{int(unseen.sum())} row(s) have levels of {info.name!r} not seen in "
            "fitting: they get no random effect for that factor",
            stacklevel=4,
        )
    contrib = np.einsum("nq,nq->n", z, b.to_numpy()[np.where(unseen, 0, codes)])
    return np.where(unseen, 0.0, contrib)


def fixed_matrix(design: Design, newdata: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The columns ``names`` (n, k) of the fixed-effects model matrix of ``newdata``.

    A category of a fixed-effects factor not seen in fitting is an error
    (formulaic would code it as the reference level: a silent wrong answer).
    """
    if not isinstance(newdata, pd.DataFrame):
        raise TypeError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            xm = design.fixed_spec.get_model_matrix(newdata, na_action="raise")
        except DataMismatchWarning as err:
            raise ValueError(f"newdata has a category not seen in fitting: {err}") from None
    return np.asarray(xm[names], dtype=float)


def random_part(results: MixedModelResults, newdata: pd.DataFrame) -> np.ndarray:
    """``Zb̂`` (n,) of the rows of ``newdata``: each grouping factor's conditional
    mode for the row's level; a level not seen in fitting contributes 0 and a
    warning says how many rows that was."""
    pred = np.zeros(len(newdata))
    for info in results.design.factors:
        missing_cols = [c for c in info.columns if c not in newdata.columns]
        if missing_cols:
            raise ValueError(f"newdata lacks the grouping column(s) {missing_cols}")
        codes = _factor_codes(info, newdata)
        pred = pred + _factor_part(
            results.random_effects[info.name], info, codes, _factor_design(info, newdata)
        )
    return pred


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class MixedModelResults:
    """A fitted linear mixed model.

    Estimates (names follow formulaic; the intercept is ``Intercept``):

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
    - ``fitted``, ``residuals`` (n,): ``Xβ̂ + Zb̂`` and ``y`` minus it;
      ``fitted_fixed``: ``Xβ̂``.

    Diagnostics: ``nobs``, ``converged``, ``convergence_message``, ``n_iter``,
    ``grad_norm`` (largest gradient entry of the objective in the log-Cholesky
    parameters), ``singular`` (a variance at the boundary, reported as 0),
    ``n_dropped_rows`` (with ``missing="drop"``), ``dropped_columns``
    (aliased fixed-effect columns). ``optimizer_params``: the optimiser's φ
    (log-Cholesky parameters of the standardised Λ̃, −inf at a boundary);
    ``fit_result``: the pure layer's :class:`~jaxmixed.core.FitResult`;
    ``arrays`` the numeric model it was fitted to and ``options`` the
    :class:`FitOptions` it was fitted with (used by ``simulate`` and
    ``bootstrap``).
    """

    sigma: float
    objective: float
    reml: bool
    nobs: int
    converged: bool
    convergence_message: str
    singular: bool
    n_iter: int
    grad_norm: float
    n_dropped_rows: int
    dropped_columns: tuple[str, ...]
    formula: str | None
    design: Design
    fit_result: FitResult
    arrays: ModelArrays | None = None
    options: FitOptions | None = None

    # The tables are built on first use (functools.cached_property keeps them
    # in the instance's __dict__, which a frozen dataclass allows): building
    # them all costs more than a small model's compiled fit.

    @functools.cached_property
    def fixed_effects(self) -> pd.Series:
        """β̂ by fixed-effect name."""
        beta = np.asarray(self.fit_result.beta, dtype=float)
        return pd.Series(beta, index=list(self.design.fixed_names), name="estimate")

    @functools.cached_property
    def fixed_effects_se(self) -> pd.Series:
        """Standard errors of β̂: ``sqrt(diag(vcov))``."""
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

    @functools.cached_property
    def random_effects_var(self) -> dict[str, pd.DataFrame]:
        """Factor name → conditional variances of the modes (levels × terms)."""
        return {
            info.name: _level_table(info, np.diagonal(cov, axis1=1, axis2=2))
            for info, cov in zip(self.design.factors, self.random_effects_cov.values(), strict=True)
        }

    @functools.cached_property
    def random_effects_cov(self) -> dict[str, np.ndarray]:
        """Factor name → conditional covariances of the modes (J, q, q)."""
        return {
            info.name: np.asarray(cov, dtype=float)
            for info, cov in zip(self.design.factors, self.fit_result.b_cov, strict=True)
        }

    @functools.cached_property
    def fitted_fixed(self) -> np.ndarray:
        """``Xβ̂`` (n,)."""
        return self.arrays.X @ np.asarray(self.fit_result.beta, dtype=float)

    @functools.cached_property
    def fitted(self) -> np.ndarray:
        """``Xβ̂ + Zb̂`` (n,)."""
        fitted = self.fitted_fixed.copy()
        for codes, z, b in zip(self.arrays.codes, self.arrays.Z, self.fit_result.b, strict=True):
            fitted = fitted + np.einsum("nq,nq->n", z, np.asarray(b, dtype=float)[codes])
        return fitted

    @functools.cached_property
    def residuals(self) -> np.ndarray:
        """``y`` minus ``fitted`` (n,)."""
        return self.arrays.y - self.fitted

    def __repr__(self) -> str:
        # The dataclass's repr of the fields before the tables became lazy.
        body = ", ".join(f"{name}={getattr(self, name)!r}" for name in _REPR_FIELDS)
        return f"{type(self).__name__}({body})"

    @property
    def optimizer_params(self) -> np.ndarray:
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

    def conf_int(
        self,
        level: float = 0.95,
        method: str = "wald",
        *,
        n_boot: int = 1000,
        key: Any = 0,
        batch_size: int | None = None,
        verbose: bool = True,
    ) -> pd.DataFrame:
        """Confidence intervals.

        ``method="wald"`` (default): the fixed effects, ``β̂ ± z·SE`` (normal
        quantiles; lme4's ``confint(method = "Wald")`` without its NA rows).
        ``method="boot"``: percentile intervals of a parametric bootstrap of
        ``n_boot`` replicates (``key``: a JAX key or an integer seed) for every
        variance parameter (lme4's names), σ and the fixed effects, as lme4's
        ``confint(m, method = "boot", oldNames = FALSE)``.
        """
        if method == "boot":
            boot = self.bootstrap(n_boot, key, batch_size=batch_size, verbose=verbose)
            return boot.conf_int(level)
        if method != "wald":
            raise ValueError(f"method must be 'wald' or 'boot', got {method!r}")
        z = _Z975 if level == 0.95 else _normal_quantile(0.5 + level / 2)
        lo = self.fixed_effects - z * self.fixed_effects_se
        hi = self.fixed_effects + z * self.fixed_effects_se
        pct = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
        return pd.DataFrame({f"{pct[0]:g}%": lo, f"{pct[1]:g}%": hi})

    def _model(self):
        if self.arrays is None or self.options is None:
            raise ValueError("this result does not hold its data (it was not made by fit_reml)")
        dtype = np.asarray(self.fit_result.beta).dtype
        return prepare(self.design, self.arrays, dtype=dtype), as_jax(self.fit_result, dtype)

    def simulate(self, n: int = 1, key: Any = 0) -> np.ndarray:
        """``n`` responses (n, nobs) drawn from the fitted model (lme4's ``simulate``).

        New random effects ``b = σ̂Λ̂u`` and residuals ``ε ~ N(0, σ̂²/w)`` in
        every draw. ``key``: a JAX key or an integer seed; draw k uses
        ``jax.random.fold_in(key, k)``.
        """
        with jax.enable_x64(True):
            data, fitted = self._model()
            return np.asarray(_jit_simulate(as_key(key), data, fitted, int(n)))

    def bootstrap(
        self,
        n: int = 1000,
        key: Any = 0,
        *,
        batch_size: int | None = None,
        devices: Any = None,
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

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        include_random: bool = True,
        *,
        X: Any = None,
        Z: Any = None,
        groups: Any = None,
    ) -> np.ndarray:
        """Predictions ``Xβ̂ (+ Zb̂)``.

        Args:
            newdata: a DataFrame with the columns the formula uses; None gives
                the fitted values of the data the model was fitted on
                (``fitted``, or ``fitted_fixed`` without random effects). A
                category of a fixed-effects factor not seen in fitting is an
                error.
            include_random: add each grouping factor's conditional mode for
                the row's level. A level not seen in fitting has no estimate:
                its rows get the fixed-effects prediction for that factor (the
                population mean), and a warning says how many rows that was.
            X, Z, groups: for a model fitted from arrays, the new arrays in
                place of ``newdata``.
        """
        if newdata is None and X is None:
            return (self.fitted if include_random else self.fitted_fixed).copy()
        design = self.design
        if design.fixed_spec is None:
            return self._predict_arrays(X, Z, groups, include_random)
        xm = fixed_matrix(design, newdata, list(self.fixed_effects.index))
        pred = xm @ self.fixed_effects.to_numpy()
        if include_random:
            pred = pred + random_part(self, newdata)
        return pred

    def _predict_arrays(self, X, Z, groups, include_random) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        X = X[:, None] if X.ndim == 1 else X
        all_names = list(self.design.all_fixed_names)
        if X.shape[1] != len(all_names):
            raise ValueError(f"X has {X.shape[1]} columns; the model was fitted with {len(all_names)}")
        keep = [all_names.index(name) for name in self.fixed_effects.index]
        pred = X[:, keep] @ self.fixed_effects.to_numpy()
        if include_random:
            info = self.design.factors[0]
            if groups is None:
                raise ValueError("groups is required to include the random effects")
            q = info.structure.q
            if Z is None and info.column_names != ("Intercept",):
                raise ValueError(f"Z is required: the model has random effects {list(info.column_names)}")
            z = np.ones((len(X), 1)) if Z is None else np.asarray(Z, dtype=float).reshape(len(X), -1)
            if z.shape[1] != q:
                raise ValueError(f"Z has {z.shape[1]} columns; the model was fitted with {q}")
            codes = info.levels.get_indexer(pd.Index(np.asarray(groups)))
            pred = pred + _factor_part(self.random_effects[info.name], info, codes, z)
        return pred

    def summary(self) -> str:
        """A printable table of the fit, in the manner of lme4 and statsmodels."""
        crit = "REML criterion" if self.reml else "Deviance"
        lines = [
            f"Linear mixed model fit by {'REML' if self.reml else 'maximum likelihood'} (jaxmixed)",
        ]
        if self.formula:
            lines.append(f"Formula: {self.formula}")
        lines.append(
            f"{crit}: {self.objective:.4f}   logLik: {self.loglik:.4f}   "
            f"AIC: {self.aic:.4f}   BIC: {self.bic:.4f}"
        )
        groups = ", ".join(f"{k} {v}" for k, v in self.n_levels.items())
        lines.append(f"Observations: {self.nobs}   Groups: {groups}")
        if self.n_dropped_rows:
            lines.append(f"Rows dropped for missing values: {self.n_dropped_rows}")
        if self.dropped_columns:
            lines.append(f"Aliased fixed effects dropped: {', '.join(self.dropped_columns)}")
        lines.append(
            f"Converged: {'yes' if self.converged else 'NO'} ({self.convergence_message}; "
            f"{self.n_iter} iterations, max|grad| {self.grad_norm:.2e})"
        )
        if self.singular:
            lines.append(
                "Boundary (singular) fit: a random-effects covariance matrix is singular "
                "(a variance estimated as 0, or correlations of ±1)"
            )
        lines += ["", "Random effects:"]
        vc = self.varcorr
        width = max([len("Groups")] + [len(str(g)) for g in vc.grp])
        name_w = max([len("Name")] + [len(str(v)) for v in vc.var1.dropna()])
        lines.append(f" {'Groups':<{width}}  {'Name':<{name_w}}  {'Variance':>12}  {'Std.Dev.':>10}  Corr")
        for grp, part in vc[vc.var2.isna()].groupby("grp", sort=False):
            cors = vc[(vc.grp == grp) & vc.var2.notna()]
            for k, row in enumerate(part.itertuples()):
                corr = cors[cors.var2 == row.var1].sdcor.to_numpy()
                corr_s = " ".join(f"{c:6.3f}" for c in corr)
                label = grp if k == 0 else ""
                lines.append(
                    f" {label:<{width}}  {'' if pd.isna(row.var1) else row.var1:<{name_w}}  {row.vcov:12.5g}  {row.sdcor:10.5g}  {corr_s}"
                )
        lines += ["", "Fixed effects:"]
        ci = self.conf_int()
        t = self.fixed_effects / self.fixed_effects_se
        fe_w = max([len("")] + [len(n) for n in self.fixed_effects.index])
        lines.append(
            f" {'':<{fe_w}}  {'Estimate':>12}  {'Std.Error':>10}  {'t value':>8}  {'[0.025':>12}  {'0.975]':>12}"
        )
        for name in self.fixed_effects.index:
            lines.append(
                f" {name:<{fe_w}}  {self.fixed_effects[name]:12.5g}  {self.fixed_effects_se[name]:10.5g}  "
                f"{t[name]:8.3f}  {ci.iloc[:, 0][name]:12.5g}  {ci.iloc[:, 1][name]:12.5g}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF by bisection on math.erf (no scipy needed)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def fit_status(fit: FitResult) -> tuple[bool, str]:
    """Whether ``fit`` converged, and why it stopped, on the host: the
    ``RESULTS`` comparison of ``fit.converged`` is a JAX computation."""
    message = RESULTS[fit.result]
    return message in _CONVERGED, message


def build_results(
    design: Design, arrays: ModelArrays, fit: FitResult, reml: bool, options: FitOptions | None = None
) -> MixedModelResults:
    """Attaches names to the numbers of a fit (``fit``'s leaves as numpy arrays).

    The tables (``fixed_effects``, ``varcorr``, ``random_effects``, …) are
    built when first read.
    """
    sigma = float(fit.sigma)
    with np.errstate(over="ignore", under="ignore"):
        sigma2 = np.float64(sigma) ** 2
    if sigma > 0 and not (np.isfinite(sigma2) and sigma2 > 0):
        warnings.warn(
            f"σ̂ = {sigma:.3g}: variances (σ̂² and varcorr's vcov) are outside float64's range and "
            "are reported as inf or 0; standard deviations, θ and β are exact. Rescale the response "
            "to see the variances",
            RuntimeWarning,
            stacklevel=3,
        )
    converged, message = fit_status(fit)
    return MixedModelResults(
        sigma=sigma,
        objective=float(fit.objective),
        reml=reml,
        nobs=len(arrays.y),
        converged=converged,
        convergence_message=message,
        singular=bool(np.any(np.asarray(fit.at_boundary))),
        n_iter=int(fit.n_iter),
        grad_norm=float(fit.grad_norm),
        n_dropped_rows=design.n_dropped_rows,
        dropped_columns=design.dropped_fixed,
        formula=design.formula,
        design=design,
        fit_result=fit,
        arrays=arrays,
        options=FitOptions(reml=reml) if options is None else options,
    )
