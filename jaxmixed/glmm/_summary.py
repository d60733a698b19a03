"""The printed summary of a GLMM, laid out as lme4's ``print(summary(glmer_fit))`` with
R's default options (``digits = 7``, so lme4 prints with 4 significant digits): the
method, family and formula; AIC, BIC, logLik, deviance and df.resid (rounded to 0.1);
the quantiles of the Pearson residuals ("Scaled residuals"); the variance components;
the numbers of observations and of levels; the fixed effects with their z tests and
significance codes; the correlations of the fixed-effect estimates (for 2 to 12 of them).
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np

from ._rformat import (
    SIGNIF_LEGEND,
    abbreviate,
    format_pval,
    format_r,
    matrix_lines,
    named_lines,
    signif_stars,
    zapsmall,
)

if TYPE_CHECKING:  # the results import this module
    from ._results import GLMMResults

__all__ = ["summary_text"]

DIGITS = 4  # lme4's max(3, getOption("digits") - 3)
COR_MAX = 12  # lme4's option lme4.summary.cor.max: no correlations for more fixed effects


def summary_text(results: GLMMResults) -> str:
    """The whole summary (see the module docstring), lines without trailing spaces."""
    lines = _title(results) + [""] + _criteria(results) + [""]
    lines += ["Scaled residuals:", *_residual_quantiles(results), ""]
    lines += ["Random effects:", *_variance_components(results), _groups_line(results)]
    lines += ["", "Fixed effects:", *_fixed_effects(results)]
    lines += _correlations(results)
    lines += _notes(results)
    return "\n".join(line.rstrip() for line in lines)


def _title(results: GLMMResults) -> list[str]:
    """The method (wrapped as lme4 wraps it at width 80), the family and the formula."""
    method = (
        "(Laplace Approximation)"
        if results.nagq == 1
        else f"(Adaptive Gauss-Hermite Quadrature, nAGQ = {results.nagq})"
    )
    title = f"Generalized linear mixed model fit by maximum likelihood {method}"
    # R's strwrap(width = 78, exdent = 2), then the class after the last line
    wrapped = textwrap.wrap(title, width=77, subsequent_indent="  ", break_on_hyphens=False)
    return [
        *wrapped[:-1],
        f"{wrapped[-1]} [GLMMResults]",
        f" Family: {results.family.name}  ( {results.family.link.name} )",
        f"Formula: {results.formula}",
    ]


def _criteria(results: GLMMResults) -> list[str]:
    """AIC, BIC, logLik, deviance (−2 logLik) rounded to 0.1 and formatted together; df.resid."""
    values = np.round([results.aic, results.bic, results.loglik, -2.0 * results.loglik], 1)
    cells = format_r(np.append(values, results.n_obs - results.df))[:4] + [str(results.n_obs - results.df)]
    return named_lines(cells, ["AIC", "BIC", "logLik", "deviance", "df.resid"])


def _residual_quantiles(results: GLMMResults) -> list[str]:
    """Min, quartiles and max of the Pearson residuals (σ = 1), zapped to 5 digits."""
    quantiles = zapsmall(np.quantile(results.residuals("pearson"), [0, 0.25, 0.5, 0.75, 1]), DIGITS + 1)
    return named_lines(format_r(quantiles, DIGITS), ["Min", "1Q", "Median", "3Q", "Max"])


def _variance_components(results: GLMMResults) -> list[str]:
    """lme4's ``formatVC``: Groups, Name, Variance and Std.Dev. (each column formatted
    together to 4 digits), then a term's correlations (2 decimals) in Corr columns."""
    vc = results.varcorr()
    var = vc[vc["var2"].isna()]
    rows = [
        [grp if k == 0 else "", name]
        for _, part in var.groupby("grp", sort=False)
        for k, (grp, name) in enumerate(zip(part["grp"], part["var1"], strict=True))
    ]
    variances, sds = np.asarray(var["vcov"], float), np.asarray(var["sdcor"], float)
    for row, v, s in zip(rows, format_r(variances, DIGITS), format_r(sds, DIGITS), strict=True):
        row += [v.strip(), s.strip()]
    header = ["Groups", "Name", "Variance", "Std.Dev."]
    corr = _correlation_columns(results, var)
    if corr:
        width = max(len(c) for c in corr)
        rows = [row + c + [""] * (width - len(c)) for row, c in zip(rows, corr, strict=True)]
        header += ["Corr"] + [""] * (width - 1)
    return matrix_lines(rows, [""] * len(rows), header, right=False)


def _correlation_columns(results: GLMMResults, var) -> list[list[str]]:
    """Per variance row, its correlations with the earlier columns of its term (lme4's
    ``format(round(r, 2), nsmall = 2)`` of each term's matrix); [] when no term has two."""
    vc = results.varcorr()
    if not bool(vc["var2"].notna().any()):
        return []
    out = []
    for grp, part in var.groupby("grp", sort=False):
        names = list(part["var1"])
        q = len(names)
        cor = np.eye(q)
        pairs = vc[(vc["grp"] == grp) & vc["var2"].notna()]
        for a, b, r in zip(pairs["var1"], pairs["var2"], pairs["sdcor"], strict=True):
            i, j = names.index(b), names.index(a)
            cor[i, j] = cor[j, i] = r
        cells = np.asarray(format_r(np.round(cor, 2).ravel(), 7, nsmall=2)).reshape(q, q)
        out += [[str(cells[i, j]) for j in range(i)] for i in range(q)]
    return out


def _groups_line(results: GLMMResults) -> str:
    """``Number of obs: n, groups:  g1, J1; g2, J2`` (each grouping factor once, lme4's order)."""
    seen: dict[str, int] = {}
    for f, _ in results.design.report_order:
        info = results.design.factors[f]
        seen.setdefault(info.name, info.n_levels)
    groups = "; ".join(f"{name}, {n}" for name, n in seen.items())
    return f"Number of obs: {results.n_obs}, groups:  {groups}"


def _fixed_effects(results: GLMMResults) -> list[str]:
    """R's ``printCoefmat`` of the coefficient table with lme4's ``digits = 4``: estimates
    and standard errors rounded together (to as many decimals as the smallest needs) and
    formatted to 4 digits, z values to 3 decimals, p-values by ``format.pval(digits = 3)``,
    significance codes and their legend when a p-value is below 0.1."""
    table = results.coef_table()
    est_se = table[["Estimate", "Std. Error"]].to_numpy()
    z, p = table["z value"].to_numpy(), table["Pr(>|z|)"].to_numpy()
    size = np.abs(est_se[np.isfinite(est_se) & (est_se != 0)])
    decimals = max(1, DIGITS - (1 + int(np.floor(np.log10(size.min()))))) if size.size else 1
    cs = np.asarray(format_r(np.round(est_se, decimals).ravel(), DIGITS)).reshape(est_se.shape)
    dig_tst = max(1, min(5, DIGITS - 1))
    cells = [
        [cs[i, 0], cs[i, 1], zs, ps]
        for i, (zs, ps) in enumerate(zip(format_r(np.round(z, dig_tst), DIGITS), format_pval(p, dig_tst), strict=True))
    ]
    header = ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    stars = bool(np.any(p[np.isfinite(p)] < 0.1))
    if stars:
        cells = [row + [s] for row, s in zip(cells, signif_stars(p), strict=True)]
        header.append("")
    lines = matrix_lines(cells, list(table.index), header, right=True)
    return lines + (["---", SIGNIF_LEGEND] if stars else [])


def _correlations(results: GLMMResults) -> list[str]:
    """lme4's "Correlation of Fixed Effects": the lower triangle to 3 decimals, rows by
    names abbreviated to 11 characters and columns to 6 (R's ``abbreviate``)."""
    names = list(results.design.fixed_names)
    p = len(names)
    if p < 2:
        return []
    if p > COR_MAX:
        return ["", f"Correlation matrix not shown by default, as p = {p} > {COR_MAX}: see vcov()."]
    cov = np.asarray(results.fit_result.vcov_beta, float)
    sd = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):  # an infinite SE (separation) gives NaN, as in R
        cor = np.round(cov / np.outer(sd, sd), 3)
    cells = np.asarray(format_r(cor.ravel(), 7, nsmall=3)).reshape(p, p)
    rows = [[str(cells[i, j]) if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    lines = matrix_lines(rows, abbreviate(names, 11)[1:], abbreviate(names, 6)[:-1], right=False)
    return ["", "Correlation of Fixed Effects:", *lines]


def _notes(results: GLMMResults) -> list[str]:
    """What lme4 prints after the tables, in jaxmixed's words."""
    notes = []
    if results.nagq > 1:
        notes.append("logLik, AIC and BIC include the saturated model's log-likelihood, which lme4 leaves out at nAGQ > 1")
    if results.singular:
        notes.append("boundary (singular) fit: a variance is exactly 0")
    if not results.converged:
        notes.append(f"the fit did not converge: {results.fit_result.result}")
    if results.separated:
        notes.append(f"complete or quasi-complete separation: {', '.join(results.separated)} (estimates at infinity)")
    return [""] + notes if notes else []
