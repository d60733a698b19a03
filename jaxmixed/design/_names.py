"""lme4's names for the variance parameters, and the tables built from them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from jaxtyping import Float

from ._design import Design

__all__ = ["parameter_names", "parameter_values", "theta_names", "varcorr_table"]


def _lme4_name(column: str) -> str:
    return "(Intercept)" if column == "Intercept" else column


def varcorr_table(design: Design, lams: Sequence[Float[np.ndarray, "q q"]], sigma: float) -> pd.DataFrame:
    """lme4's ``as.data.frame(VarCorr(m))``: one row per variance and covariance.

    Terms in lme4's order; per term the variances in column order, then the
    covariances of the lower triangle in column-major order (``sdcor`` holds
    the correlation); last the ``Residual`` row with σ² and σ. Absent names
    are ``None``.
    """
    rows = []
    for f, t in design.report_order:
        info = design.factors[f]
        name, cols = info.term_names[t], info.term_columns[t]
        start, stop = info.structure.term_slices[t]
        lam_t = lams[f][start:stop, start:stop]
        rel = lam_t @ lam_t.T  # σ-relative covariance: SDs and correlations need no σ²
        rel_sd = np.sqrt(np.diag(rel))
        with np.errstate(over="ignore", under="ignore"):
            cov = np.float64(sigma) ** 2 * rel  # inf or 0 when σ² leaves float64's range
        for i, c in enumerate(cols):
            rows.append((name, c, None, cov[i, i], sigma * rel_sd[i]))
        for j in range(len(cols)):
            for i in range(j + 1, len(cols)):
                denom = rel_sd[i] * rel_sd[j]
                corr = rel[i, j] / denom if denom > 0 else float("nan")
                rows.append((name, cols[j], cols[i], cov[i, j], corr))
    with np.errstate(over="ignore", under="ignore"):
        rows.append(("Residual", None, None, np.float64(sigma) ** 2, sigma))
    grp, var1, var2, vcov, sdcor = zip(*rows, strict=True)
    # Object columns keep None (not NaN) for absent names.
    return pd.DataFrame(
        {
            "grp": pd.Series(grp, dtype=object),
            "var1": pd.Series(var1, dtype=object),
            "var2": pd.Series(var2, dtype=object),
            "vcov": np.asarray(vcov, dtype=float),
            "sdcor": np.asarray(sdcor, dtype=float),
        }
    )


def host_lambdas(design: Design, theta: Float[np.ndarray, "*K n_params"]) -> list[Float[np.ndarray, "*K q q"]]:
    """Each factor's Λ (..., q_f, q_f) from θ (..., n_params), computation order, on the host."""
    out, start = [], 0
    for st in design.structures:
        lam = np.zeros((*theta.shape[:-1], st.q, st.q))
        lam[..., np.asarray(st.rows), np.asarray(st.cols)] = theta[..., start : start + st.n_params]
        out.append(lam)
        start += st.n_params
    return out


def theta_names(design: Design) -> list[str]:
    """lme4's names of θ in lme4's order: ``Subject.Days`` (diagonal),
    ``Subject.Days.(Intercept)`` (row, column); the columns' names are R's
    (``_rnames``; array input's ``Intercept`` is written ``(Intercept)`` too)."""
    names = []
    for f, t in design.report_order:
        info = design.factors[f]
        cols = ["(Intercept)" if c == "Intercept" else c for c in info.term_columns[t]]
        size = len(cols)
        for j in range(size):
            for i in range(j, size):
                names.append(f"{info.name}.{cols[i]}" if i == j else f"{info.name}.{cols[i]}.{cols[j]}")
    return names


def parameter_names(design: Design) -> list[str]:
    """lme4's ``confint(..., oldNames = FALSE)`` names of the variance parameters.

    Per term in lme4's order: ``sd_(Intercept)|Subject``, ``sd_Days|Subject``,
    then ``cor_Days.(Intercept)|Subject`` for each correlation; last ``sigma``.
    The same order as :func:`parameter_values`.
    """
    names = []
    for f, t in design.report_order:
        info = design.factors[f]
        grp, cols = info.term_names[t], [_lme4_name(c) for c in info.term_columns[t]]
        names += [f"sd_{c}|{grp}" for c in cols]
        names += [f"cor_{cols[i]}.{cols[j]}|{grp}" for j in range(len(cols)) for i in range(j + 1, len(cols))]
    return names + ["sigma"]


def parameter_values(
    design: Design, lams: Sequence[Float[np.ndarray, "*K q q"]], sigma: Float[np.ndarray, "*K"]
) -> Float[np.ndarray, "*K n_params+1"]:
    """Standard deviations, correlations and σ of one or many fits.

    Args:
        design: the model's design (names, terms).
        lams: per factor (computation order), Λ (..., q_f, q_f) in user units.
        sigma: (...) residual standard deviations.

    Returns:
        (..., len(parameter_names(design))), one more than θ's n_params
        entries: ``σ·sqrt(diag(ΛΛᵀ))`` per term,
        then the correlations ``(ΛΛᵀ)ᵢⱼ / sqrt((ΛΛᵀ)ᵢᵢ(ΛΛᵀ)ⱼⱼ)`` (NaN where a
        standard deviation is 0), then σ.
    """
    sigma = np.asarray(sigma, float)
    columns = []
    for f, t in design.report_order:
        start, stop = design.factors[f].structure.term_slices[t]
        lam = np.asarray(lams[f], float)[..., start:stop, start:stop]
        rel = lam @ np.swapaxes(lam, -1, -2)
        sd = np.sqrt(np.diagonal(rel, axis1=-2, axis2=-1))
        columns += [sigma * sd[..., i] for i in range(stop - start)]
        with np.errstate(invalid="ignore", divide="ignore"):
            for j in range(stop - start):
                for i in range(j + 1, stop - start):
                    denom = sd[..., i] * sd[..., j]
                    columns.append(
                        np.where(denom > 0, rel[..., i, j] / np.where(denom > 0, denom, 1.0), np.nan)
                    )
    return np.stack(columns + [sigma], axis=-1)
