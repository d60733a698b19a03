"""Parametric bootstrap of a GLMM (lme4's ``bootMer`` and ``confint(method = "boot")``).

Each replicate draws a response from the fitted model (new random effects, as
``bootMer``'s default ``use.u = FALSE``; ``_predict.draw_responses``) and refits
the same model to it. Every replicate shares the design, so the refits are
``fit_glmm_many``'s vmapped chunks, compiled once. Replicates whose fixed effects are
separated (a draw with only successes in some level, say) are counted in a
``SeparationWarning`` and kept.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from jaxtyping import Float

from ..core._family import Family
from ..design._design import Design
from ..design._names import host_lambdas, parameter_names, parameter_values
from ..linear._bootstrap import BootstrapResults
from ._many_api import _fit_chunks, _screen, response_separation, separation_count
from ._predict import draw_responses
from ._separation import SeparationWarning

__all__ = ["glmm_bootstrap"]


def _estimates(design: Design, theta: np.ndarray, beta: np.ndarray) -> Float[np.ndarray, "*K m"]:
    """(..., parameters): the random effects' sds and correlations (lme4's
    ``confint(oldNames = FALSE)`` order, no σ: a GLMM has none), then β."""
    lams = host_lambdas(design, np.asarray(theta, float))
    values = parameter_values(design, lams, np.ones(np.shape(theta)[:-1]))[..., :-1]
    return np.concatenate([values, np.asarray(beta, float)], axis=-1)


def glmm_bootstrap(results, n: int, seed: int | None, *, batch_size: int | None, verbose: bool) -> BootstrapResults:
    """``n`` replicates of ``results`` (a :class:`GLMMResults`); see ``GLMMResults.bootstrap``."""
    design, arrays, fam = results.design, results.arrays, results.family
    assert isinstance(fam, Family) and arrays.weights is not None
    ys = draw_responses(results, n, seed)
    skipped = _screen(ys, arrays.weights, fam)  # e.g. a replicate with no successes at all
    fits = _fit_chunks(
        design, arrays, ys, skipped=skipped, family=fam, nagq=results.nagq, offset=results.offsets.values,
        batch_size=batch_size, verbose=verbose,
        standard_errors=False,  # the replicates' estimates alone: no Hessian per replicate
    )  # fmt: skip
    separated = response_separation(
        design, arrays, ys, fits, skipped=skipped, family=fam, offset=results.offsets.values
    )
    if separated:
        message = separation_count(len(separated), n, "bootstrap replicates")
        warnings.warn(message + " (they are kept: such draws are part of the model)", SeparationWarning, stacklevel=3)
    names = [*parameter_names(design)[:-1], *design.fixed_names]
    est = _estimates(design, np.asarray(fits.theta), np.asarray(fits.beta))
    converged = np.asarray(fits.converged, bool)
    converged[skipped.indices] = False
    est[skipped.indices] = np.nan
    original = _estimates(design, np.asarray(results.fit_result.theta), np.asarray(results.fit_result.beta))
    return BootstrapResults(
        replicates=pd.DataFrame(est, columns=names),
        original=pd.Series(original, index=names),
        converged=converged,
        singular=np.any(np.asarray(fits.at_boundary), axis=1) & converged,
        objective=np.where(converged, np.asarray(fits.deviance, float), np.nan),
    )
