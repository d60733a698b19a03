"""``fit_glmm``: lme4's ``glmer`` — build the design on the host, fit in the pure layer."""

from __future__ import annotations

import dataclasses
import warnings
from concurrent.futures import ThreadPoolExecutor

import jax
import numpy as np
import pandas as pd

from ..core._agq import check_agq, check_nagq
from ..core._compile import compiled
from ..core._family import Binomial, Family, family_from_name
from ..core._glmm import fit_glmm_data
from ..design._design import Design, ModelArrays, build_design
from ..design._offsets import Offsets
from ..design._prepare import prepare
from ..linear._results import ConvergenceWarning
from ..linear._update import FitCall
from ._response import WEIGHTS, Response, glmm_frame
from ._results import GLMMResults
from ._separation import SeparationWarning, separated_coefficients, separation_message

__all__ = ["SeparationWarning", "fit_built", "fit_glmm"]

_jit_fit_glmm = compiled(fit_glmm_data)


def fit_glmm(
    formula: str,
    data: pd.DataFrame,
    family: str | Family = "binomial",
    *,
    nAGQ: int = 1,  # noqa: N803  (lme4's name)
    weights: str | np.ndarray | None = None,
    offset: str | np.ndarray | None = None,
) -> GLMMResults:
    """Fits a generalized linear mixed model as lme4's ``glmer`` does.

    Model: ``η = offset + Xβ + ZΛu``, ``u ~ N(0, I)``, and yᵢ given u from the
    family with mean ``g⁻¹(ηᵢ)``. The deviance −2 log L is approximated by
    Laplace's method (``nAGQ=1``, conditional modes by PIRLS) or by adaptive
    Gauss–Hermite quadrature (``nAGQ`` 2–25, one scalar random effect per level),
    and minimised over (θ, β) together; standard errors come from its exact
    Hessian.

    Args:
        formula: lme4-style. The response: ``cbind(successes, failures)``
            (expressions of columns allowed: ``cbind(incidence, size - incidence)``),
            a 0/1 or proportion column (binomial; trials as ``weights``), or counts
            (Poisson). Any random part: ``(1 | herd)``, slopes, nested and crossed
            factors. ``+ offset(expr)`` terms (one or several; columns or expressions of
            them such as ``offset(log(size))``) are added to the linear predictor.
        data: a DataFrame with the columns the formula uses (no missing values).
        family: ``"binomial"`` (logit), ``"poisson"`` (log), or
            ``jm.Binomial(link="probit" | "cloglog")`` and the like.
        nAGQ: 1 (default, Laplace) to 25 (quadrature points; ``(1 | g)`` models only).
        weights: prior weights, a column name or an array (n,): binomial trials
            for a proportion response (not with ``cbind``).
        offset: a column name or expression (``"log(exposure)"``) or an array (n,)
            added to the linear predictor; summed with the formula's ``offset()`` terms,
            as lme4 sums them.

    Returns:
        A :class:`GLMMResults`. A fit that did not converge emits a
        ``ConvergenceWarning``; a diagonal entry of θ below ``SINGULAR_TOL`` (1e-4) is set to
        exactly 0 where that raises the deviance by at most ``BOUNDARY_TOL`` (1e-7)
        relative, and the fit is reported singular. Fixed effects whose estimates lie at infinity (complete or
        quasi-complete separation, a linear-programming test on the data: ``_separation``)
        emit a ``SeparationWarning`` naming them.

    Examples:
        lme4's ``glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
        binomial)``:

        >>> import jaxmixed as jm
        >>> m = jm.fit_glmm("cbind(incidence, size - incidence) ~ period + (1 | herd)", jm.load_dataset("cbpp"))
        >>> round(m.loglik, 2), m.fixef.round(2).tolist()
        (-92.03, [-1.4, -0.99, -1.13, -1.58])
    """
    fam = family_from_name(family)
    check_nagq(nAGQ)  # before the design is built
    work = glmm_frame(formula, data, weights, offset, binomial=isinstance(fam, Binomial))
    design, arrays = build_design(work.formula, work.frame, "raise", weights=WEIGHTS, levels_below_rows=False)
    results = fit_built(
        design, arrays, fam, nagq=nAGQ, formula=formula, response=work.response, offsets=work.offsets,
        index=data.index, stacklevel=3,
    )  # fmt: skip
    call = FitCall.record(fit_glmm, formula, data, family=family, nAGQ=nAGQ, weights=weights, offset=offset)
    return dataclasses.replace(results, call=call)


def fit_built(
    design: Design,
    arrays: ModelArrays,
    family: Family,
    *,
    nagq: int,
    formula: str,
    response: Response,
    offsets: Offsets,
    index: pd.Index | None,
    stacklevel: int = 2,
) -> GLMMResults:
    """The fit of a built model (``fit_glmm`` after its design; ``GLMMResults.refit``): the
    response checked, the separation test on a host thread while the fit computes, and the
    warnings ``fit_glmm`` documents, at ``stacklevel`` as ``warnings.warn`` counts it
    from here."""
    if arrays.weights is None:  # pragma: no cover - the working frame always has weights
        raise AssertionError("prior weights missing")
    family.check_response(arrays.y, arrays.weights)
    binomial = isinstance(family, Binomial)
    # The separation test (a linear program on the host) runs while the fit computes.
    with ThreadPoolExecutor(max_workers=1) as pool:
        separation = pool.submit(separated_coefficients, arrays.X, arrays.y, list(design.fixed_names), binomial=binomial)
        with jax.enable_x64(True):
            model = prepare(design, arrays, dtype=np.float64, on_device=False)
            check_agq(model, nagq)  # before int(): 2.7 or True are errors, not 2 or 1
            fit = _jit_fit_glmm(model, np.asarray(arrays.y), family, offset=offsets.values, nagq=int(nagq))
            fit = jax.tree.map(np.asarray, fit)
        separated = separation.result()
    results = GLMMResults(
        design=design, arrays=arrays, family=family, nagq=int(nagq), fit_result=fit, formula=formula,
        response=response, offsets=offsets, index=index, separated=tuple(separated),
    )  # fmt: skip
    _warn(results, stacklevel + 1)
    return results


def _warn(results: GLMMResults, stacklevel: int) -> None:
    """A ``SeparationWarning`` naming separated fixed effects; a ``ConvergenceWarning``
    for a fit that did not converge (both at the caller of ``fit_glmm``)."""
    if results.separated:
        warnings.warn(
            separation_message(list(results.separated), results.coef_table()), SeparationWarning, stacklevel=stacklevel
        )
    if not results.converged:
        fit = results.fit_result
        warnings.warn(
            f"the GLMM fit did not converge ({fit.result}; PIRLS settled: {bool(fit.pirls_converged)})",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
