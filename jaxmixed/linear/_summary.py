"""The printed forms of a fitted model: ``summary()`` (lme4's and statsmodels' manner) and ``repr``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pandas as pd

from ._intervals import wald_intervals

if TYPE_CHECKING:  # the results import this module
    from ._results import MixedModelResults

__all__ = ["Summary", "repr_text", "summary_text"]


class Summary(str):
    """A fit's printed summary, laid out as lme4's, with the tables it shows.

    A ``str``: it prints, compares and searches as its text. ``tables`` holds the
    DataFrames it shows by name (``"random effects"``, ``"fixed effects"``), as
    statsmodels' ``Summary.tables``; ``repr`` is the text itself, so that an interactive
    prompt or a notebook shows it laid out rather than as one quoted line.
    """

    tables: dict[str, pd.DataFrame]

    def __new__(cls, text: str, tables: dict[str, pd.DataFrame] | None = None) -> Summary:
        out = super().__new__(cls, text)
        out.tables = dict(tables or {})
        return out

    def __repr__(self) -> str:
        return str(self)

    def as_text(self) -> str:
        """The text, a plain ``str`` (statsmodels' name)."""
        return str(self)

def repr_text(results: MixedModelResults) -> str:
    """One line: the model, its criterion, the rows and the fit's state, e.g.
    ``<MixedModelResults 'Reaction ~ Days + (Days | Subject)', REML criterion 1743.6283,
    180 obs, converged>`` (the estimates are in ``summary()`` and the tables)."""
    model = repr(results.formula) if results.formula else "(arrays)"
    criterion = "REML criterion" if results.reml else "deviance"
    state = "converged" if results.converged else "not converged"
    if results.singular:
        state += ", singular"
    return f"<{type(results).__name__} {model}, {criterion} {results.objective:.4f}, {results.nobs} obs, {state}>"


def summary_text(results: MixedModelResults, ddf: str = "satterthwaite", table: pd.DataFrame | None = None) -> str:
    """The printable table of ``MixedModelResults.summary()``: the fit, its
    diagnostics, the variance components and the fixed effects (tested as
    ``coef_table(ddf)`` tests them; ``table``: that table, when the caller has it)."""
    lines = _header(results)
    lines += ["", "Random effects:", *_random_effects_table(results.varcorr)]
    lines += ["", "Fixed effects:", *_fixed_effects_table(results, ddf, table)]
    return "\n".join(lines)


def _header(results: MixedModelResults) -> list[str]:
    """The method, formula, criteria, sizes and convergence of the fit."""
    crit = "REML criterion" if results.reml else "Deviance"
    lines = [f"Linear mixed model fit by {'REML' if results.reml else 'maximum likelihood'} (jaxmixed)"]
    if results.formula:
        lines.append(f"Formula: {results.formula}")
    lines.append(
        f"{crit}: {results.objective:.4f}   logLik: {results.loglik:.4f}   "
        f"AIC: {results.aic:.4f}   BIC: {results.bic:.4f}"
    )
    groups = ", ".join(f"{k} {v}" for k, v in results.n_levels.items())
    lines.append(f"Observations: {results.nobs}   Groups: {groups}")
    if results.n_dropped_rows:
        lines.append(f"Rows dropped for missing values: {results.n_dropped_rows}")
    if results.dropped_columns:
        lines.append(f"Aliased fixed effects dropped: {', '.join(results.dropped_columns)}")
    lines.append(
        f"Converged: {'yes' if results.converged else 'NO'} ({results.convergence_message}; "
        f"{results.n_iter} iterations, max|grad| {results.grad_norm:.2e})"
    )
    if results.singular:
        lines.append(
            "Boundary (singular) fit: a random-effects covariance matrix is singular "
            "(a variance estimated as 0, or correlations of ±1)"
        )
    return lines


def _random_effects_table(vc: pd.DataFrame) -> list[str]:
    """lme4's random-effects block from ``varcorr``: variance and SD per term, then
    the term's correlations with the terms above it."""
    width = max([len("Groups")] + [len(str(g)) for g in vc.grp])
    name_w = max([len("Name")] + [len(str(v)) for v in vc.var1.dropna()])
    lines = [f" {'Groups':<{width}}  {'Name':<{name_w}}  {'Variance':>12}  {'Std.Dev.':>10}  Corr"]
    for grp, part in vc[vc.var2.isna()].groupby("grp", sort=False):
        cors = vc[(vc.grp == grp) & vc.var2.notna()]
        for k, (var1, vcov, sdcor) in enumerate(zip(part.var1, part.vcov, part.sdcor, strict=True)):
            corr = cors.sdcor[cors.var2 == var1].to_numpy()
            corr_s = " ".join(f"{c:6.3f}" for c in corr)
            label = grp if k == 0 else ""
            name = "" if pd.isna(var1) else var1
            lines.append(f" {label:<{width}}  {name:<{name_w}}  {vcov:12.5g}  {sdcor:10.5g}  {corr_s}")
    return lines


def _fixed_effects_table(results: MixedModelResults, ddf: str, table: pd.DataFrame | None = None) -> list[str]:
    """Estimates, standard errors, df (Satterthwaite's or Kenward–Roger's; none: z
    tests), test statistics, p-values and 95% Wald intervals of the fixed effects, from
    the table's standard errors (Kenward–Roger's adjusted ones with that ddf)."""
    table = results.coef_table(ddf) if table is None else table
    names = results.design.fixed_names  # the index of the table
    ci = wald_intervals(cast(pd.Series, table["Estimate"]), cast(pd.Series, table["Std. Error"]), 0.95)
    t_test = "df" in table.columns
    stat, p_col = ("t value", "Pr(>|t|)") if t_test else ("z value", "Pr(>|z|)")
    fe_w = max([0] + [len(n) for n in names])
    df_head = f"  {'df':>8}" if t_test else ""
    lines = [
        f" {'':<{fe_w}}  {'Estimate':>12}  {'Std.Error':>10}{df_head}  {stat:>8}  {p_col:>9}  "
        f"{'[0.025':>12}  {'0.975]':>12}"
    ]
    for name in names:
        row = table.loc[name]
        df_cell = f"  {row['df']:8.2f}" if t_test else ""
        lines.append(
            f" {name:<{fe_w}}  {row['Estimate']:12.5g}  {row['Std. Error']:10.5g}{df_cell}  "
            f"{row[stat]:8.3f}  {row[p_col]:9.3g}  {ci.iloc[:, 0][name]:12.5g}  {ci.iloc[:, 1][name]:12.5g}"
        )
    return lines
