"""A fitted GLMM with lme4's names: fixed effects and their z tests, θ, the variance
components, the conditional modes, the log-likelihood and information criteria."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ..core._family import Family
from ..core._glmm import GLMMResult
from ..core._status import is_converged
from ..design._design import Design, ModelArrays
from ..design._names import theta_names
from ..linear._tails import two_sided_p

__all__ = ["GLMMResults"]


@dataclasses.dataclass(frozen=True)
class GLMMResults:
    """What ``fit_glmm`` returns (host arrays; lme4's names).

    Attributes:
        design, arrays: the model as built from the formula and data.
        family: the :class:`~jaxmixed.core._family.Family` and its link.
        nagq: 1 (Laplace) or the number of quadrature points.
        fit_result: the pure layer's :class:`~jaxmixed.core._glmm.GLMMResult`.
        formula, response: as the user wrote them.
    """

    design: Design
    arrays: ModelArrays
    family: Family
    nagq: int
    fit_result: GLMMResult
    formula: str
    response: str

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
        return len(self.arrays.y)

    @property
    def fixef(self) -> pd.Series:
        """β̂ by R's names (lme4's ``fixef``)."""
        return pd.Series(np.asarray(self.fit_result.beta, float), index=list(self.design.fixed_names), name="fixef")

    @property
    def theta(self) -> pd.Series:
        """θ̂ in lme4's order and names (``getME(m, "theta")``)."""
        return pd.Series(np.asarray(self.fit_result.theta, float), index=theta_names(self.design), name="theta")

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
        return -2.0 * self.loglik + 2.0 * self.df

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + math.log(self.n_obs) * self.df

    def coef_table(self) -> pd.DataFrame:
        """lme4's ``summary(glmer)`` coefficients: Estimate, Std. Error (from the exact
        Hessian of the deviance in (θ, β)), z value, Pr(>|z|)."""
        est = np.asarray(self.fit_result.beta, float)
        se = np.sqrt(np.diag(np.asarray(self.fit_result.vcov_beta, float)))
        z = est / se
        table = {"Estimate": est, "Std. Error": se, "z value": z, "Pr(>|z|)": two_sided_p(z, np.inf)}
        return pd.DataFrame(table, index=list(self.design.fixed_names))

    def varcorr(self) -> pd.DataFrame:
        """The random effects' standard deviations (and correlations), lme4's
        ``as.data.frame(VarCorr(m))`` columns grp, var1, var2, vcov, sdcor."""
        rows, start = [], 0
        for info in self.design.factors:
            st = info.structure
            lam = np.zeros((st.q, st.q))
            lam[np.asarray(st.rows), np.asarray(st.cols)] = np.asarray(self.fit_result.theta, float)[
                start : start + st.n_params
            ]
            start += st.n_params
            cov = lam @ lam.T
            names = [c for cols in info.term_columns for c in cols]
            sd = np.sqrt(np.diag(cov))
            for a in range(st.q):
                rows.append((info.name, names[a], "", cov[a, a], sd[a]))
            for a in range(st.q):
                for b in range(a + 1, st.q):
                    cor = cov[a, b] / (sd[a] * sd[b]) if sd[a] * sd[b] > 0 else float("nan")
                    rows.append((info.name, names[a], names[b], cov[a, b], cor))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    def ranef(self) -> dict[str, pd.DataFrame]:
        """The conditional modes b̂ per grouping factor (levels × effects), lme4's ``ranef``."""
        out = {}
        for info, b in zip(self.design.factors, self.fit_result.b, strict=True):
            names = [c for cols in info.term_columns for c in cols]
            out[info.name] = pd.DataFrame(np.asarray(b, float)[: info.n_levels], index=info.levels, columns=names)
        return out

    def summary(self) -> str:
        """A printable summary in the manner of lme4's ``summary(glmer)``."""
        method = "Laplace Approximation" if self.nagq == 1 else f"Adaptive Gauss-Hermite Quadrature (nAGQ = {self.nagq})"
        lines = [
            f"Generalized linear mixed model fit by maximum likelihood ({method})",
            f" Family: {self.family.name}  ( {self.family.link.name} )",
            f"Formula: {self.formula}",
            "",
            "     AIC      BIC   logLik deviance df.resid",
            f"{self.aic:8.1f} {self.bic:8.1f} {self.loglik:8.1f} {-2 * self.loglik:8.1f} {self.n_obs - self.df:8d}",
            "",
            "Random effects:",
        ]
        vc = self.varcorr()
        for _, row in vc[vc["var2"] == ""].iterrows():
            lines.append(f" {row['grp']:<10} {row['var1']:<12} Variance {row['vcov']:.4g}  Std.Dev. {row['sdcor']:.4g}")
        levels = ", ".join(f"{f.name}, {f.n_levels}" for f in self.design.factors)
        lines += [f"Number of obs: {self.n_obs}, groups:  {levels}", "", "Fixed effects:"]
        lines.append(self.coef_table().to_string(float_format=lambda v: f"{v:.5g}"))
        if self.nagq > 1:
            lines += ["", "logLik, AIC and BIC include the saturated model's log-likelihood, which lme4 leaves out at nAGQ > 1"]
        if self.singular:
            lines += ["", "boundary (singular) fit: a variance is exactly 0"]
        if not self.converged:
            lines += ["", f"the fit did not converge: {self.fit_result.result}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<GLMMResults {self.formula!r}, {self.family.name}({self.family.link.name}), logLik {self.loglik:.4f}>"
