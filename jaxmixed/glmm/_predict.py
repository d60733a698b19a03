"""Predictions, residuals and simulated responses of a fitted GLMM (host side, numpy),
as lme4's ``predict``, ``residuals`` and ``simulate`` methods for ``glmer`` fits.

The linear predictor of a row is ``η = xβ̂ + offset + Σ_f z_f b̂_f[level]``; the mean
``μ = g⁻¹(η)`` through the family's link (kept within R's bounds, as in the fit).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from ..core._callers import user_stacklevel
from ..core._family import Binomial
from ..design._factors import FactorInfo
from ..linear._predict import _factor_codes, _factor_design, fixed_matrix

if TYPE_CHECKING:  # the results import this module
    from ._results import GLMMResults

__all__ = ["include_random", "linear_predictor", "mean_of", "residuals", "simulate"]

_RESIDUAL_TYPES = ("deviance", "pearson", "working", "response")


def include_random(re_form: object) -> bool:
    """lme4's ``re.form``: None (R's NULL, every random effect) → True; ``"~0"``, ``"NA"``,
    NaN or ``pd.NA`` (R's NA or ~0, none) → False. A subset of the random terms is not
    supported."""
    if re_form is None:
        return True
    if re_form is pd.NA or (isinstance(re_form, float) and math.isnan(re_form)):
        return False
    if isinstance(re_form, str) and re_form.replace(" ", "") in ("~0", "NA", "~-1"):
        return False
    if isinstance(re_form, str) and "|" in re_form:
        raise NotImplementedError(
            f"re_form={re_form!r}: a subset of the random-effects terms is not supported; use None "
            "(every random effect) or '~0' (none)"
        )
    raise ValueError(f"re_form must be None (every random effect) or '~0' / NA (none), got {re_form!r}")


def linear_predictor(
    results: GLMMResults,
    newdata: pd.DataFrame | None = None,
    *,
    random: bool = True,
    allow_new_levels: bool = False,
    offset: str | np.ndarray | None = None,
) -> Float[np.ndarray, " m"]:
    """η (m,) of the fitted rows (``newdata`` None: m = n) or of the rows of ``newdata``:
    ``xβ̂ + offset`` plus, with ``random``, each grouping factor's conditional mode for the
    row's level (0 for a level not seen in fitting when ``allow_new_levels``, else an
    error). On new data the offsets are the formula's ``offset()`` terms evaluated on it plus
    the ``offset=`` part (``Offsets.on``)."""
    beta = np.asarray(results.fit_result.beta, float)
    if newdata is None:
        if offset is not None:
            raise ValueError("offset= goes with newdata; the fitted rows have their own offsets")
        arrays = results.arrays
        eta = arrays.X @ beta
        if results.offsets.values is not None:
            eta = eta + results.offsets.values
        if random:
            for codes, z, b in zip(arrays.codes, arrays.Z, results.modes, strict=True):
                eta = eta + np.einsum("nq,nq->n", z, b[codes])
        return eta
    eta = fixed_matrix(results.design, newdata, list(results.design.fixed_names)) @ beta
    eta = eta + results.offsets.on(newdata, offset)
    if random:
        for info, b in zip(results.design.factors, results.modes, strict=True):
            eta = eta + _factor_part(info, b, newdata, allow_new_levels)
    return eta


def _factor_part(
    info: FactorInfo, b: Float[np.ndarray, "J q"], newdata: pd.DataFrame, allow_new_levels: bool
) -> Float[np.ndarray, " m"]:
    """``z·b̂[level]`` (m,) of one grouping factor for the rows of ``newdata``."""
    missing = [c for c in info.columns if c not in newdata.columns]
    if missing:
        raise ValueError(f"newdata lacks the grouping column(s) {missing} of {info.name!r}")
    codes = _factor_codes(info, newdata)
    unseen = codes < 0
    if unseen.any() and not allow_new_levels:
        labels = pd.unique(newdata[list(info.columns)].astype(str).agg(":".join, axis=1).to_numpy()[unseen])
        shown = ", ".join(repr(v) for v in labels[:5]) + (", ..." if len(labels) > 5 else "")
        raise ValueError(
            f"newdata has {len(labels)} level(s) of {info.name!r} not seen in fitting ({shown}): pass "
            "allow_new_levels=True to predict them at the population level (no random effect), as lme4 does"
        )
    z = _factor_design(info, newdata)
    part = np.einsum("nq,nq->n", z, b[np.where(unseen, 0, codes)])
    return np.where(unseen, 0.0, part)


def mean_of(results: GLMMResults, eta: Float[np.ndarray, "*m"]) -> Float[np.ndarray, "*m"]:
    """μ = g⁻¹(η) through the family's link, elementwise (float64)."""
    with jax.enable_x64(True):
        return np.asarray(results.family.link.inverse(jnp.asarray(eta, jnp.float64)))


def residuals(results: GLMMResults, type: str = "deviance") -> Float[np.ndarray, " n"]:  # noqa: A002 (lme4's name)
    """lme4's ``residuals(m, type)`` of a glmer fit (n,), with μ̂ the fitted means, y on the
    family's scale (binomial: proportions) and a the prior weights (binomial: trials):

    - ``"deviance"`` (default): sign(y − μ̂)·√dᵢ, dᵢ the row's deviance contribution;
    - ``"pearson"``: (y − μ̂)·√(aᵢ/V(μ̂));
    - ``"working"``: (y − μ̂)/(dμ/dη);
    - ``"response"``: y − μ̂.
    """
    if type not in _RESIDUAL_TYPES:
        raise ValueError(f"type must be one of {list(_RESIDUAL_TYPES)}, got {type!r}")
    y = np.asarray(results.arrays.y, float)
    a = np.ones_like(y) if results.arrays.weights is None else np.asarray(results.arrays.weights, float)
    eta = linear_predictor(results)
    fam = results.family
    with jax.enable_x64(True):
        eta_j, y_j, a_j = (jnp.asarray(v, jnp.float64) for v in (eta, y, a))
        mu = fam.link.inverse(eta_j)
        parts = {
            "deviance": jnp.sign(y_j - mu) * jnp.sqrt(jnp.maximum(fam.deviance_residuals(y_j, mu, a_j), 0.0)),
            "pearson": (y_j - mu) * jnp.sqrt(a_j / fam.variance(mu)),
            "working": (y_j - mu) / fam.link.mu_eta(eta_j),
            "response": y_j - mu,
        }
        return np.asarray(parts[type])


def _new_random_part(
    results: GLMMResults, rng: np.random.Generator, nsim: int
) -> Float[np.ndarray, "nsim n"]:
    """``Z b`` (nsim, n) with new random effects b = Λ̂u, u ~ N(0, I), per simulation and
    level of each grouping factor (lme4's unconditional draw)."""
    total = np.zeros((nsim, results.n_obs))
    for info, lam, codes, z in zip(
        results.design.factors, results.lambdas, results.arrays.codes, results.arrays.Z, strict=True
    ):
        u = rng.standard_normal((nsim, info.n_levels, info.structure.q))
        b = u @ lam.T
        total = total + np.einsum("nq,snq->sn", z, b[:, codes])
    return total


def _checked_nsim(nsim: object) -> int:
    if isinstance(nsim, bool) or not isinstance(nsim, int | np.integer | float) or int(nsim) != nsim or nsim < 1:
        raise ValueError(f"nsim must be a positive integer, got {nsim!r}")
    return int(nsim)


def _simulated_means(
    results: GLMMResults, rng: np.random.Generator, nsim: int, re_form: object
) -> Float[np.ndarray, "nsim n"]:
    """μ (nsim, n) of each simulation: new random effects (``re_form`` "~0", lme4's
    default) or the fitted modes (None)."""
    conditional = include_random(re_form)
    eta = np.broadcast_to(linear_predictor(results, random=conditional), (nsim, results.n_obs))
    if not conditional:
        eta = eta + _new_random_part(results, rng, nsim)
    return mean_of(results, eta)


def draw_responses(
    results: GLMMResults, nsim: int, seed: int | None = None, re_form: object = "~0"
) -> Float[np.ndarray, "nsim n"]:
    """``nsim`` responses (nsim, n) from the fitted model in the family's working convention
    (binomial: successes / trials with the fitted trials; Poisson: counts), for refitting
    (the parametric bootstrap); random effects as in :func:`simulate`."""
    nsim = _checked_nsim(nsim)
    rng = np.random.default_rng(seed)
    mu = _simulated_means(results, rng, nsim, re_form)
    if isinstance(results.family, Binomial):
        trials = np.asarray(results.arrays.weights, float)
        return rng.binomial(trials.astype(np.int64), mu) / trials
    return rng.poisson(mu).astype(float)


def simulate(results: GLMMResults, nsim: int = 1, seed: int | None = None, re_form: object = "~0") -> pd.DataFrame:
    """lme4's ``simulate(m, nsim, seed, re.form)`` of a glmer fit; see
    ``GLMMResults.simulate``."""
    nsim = _checked_nsim(nsim)
    rng = np.random.default_rng(seed)
    mu = _simulated_means(results, rng, nsim, re_form)
    names = [f"sim_{k + 1}" for k in range(nsim)]
    index = results.index if results.index is not None else pd.RangeIndex(results.n_obs)
    weights = np.ones(results.n_obs) if results.arrays.weights is None else np.asarray(results.arrays.weights, float)
    if isinstance(results.family, Binomial):
        frame = _binomial_draws(results, rng, mu, weights, names, index)
    else:
        if np.any(weights != 1.0):
            warnings.warn("simulate: ignoring the prior weights (as lme4 does)", UserWarning, stacklevel=user_stacklevel())
        frame = pd.DataFrame(rng.poisson(mu).T, index=index, columns=names)
    frame.attrs["seed"] = seed
    return frame


def _binomial_draws(
    results: GLMMResults,
    rng: np.random.Generator,
    mu: Float[np.ndarray, "nsim n"],
    trials: Float[np.ndarray, " n"],
    names: list[str],
    index: pd.Index,
) -> pd.DataFrame:
    """Binomial draws in the response's own form, as R's binomial family simulates:
    cbind → (successes, failures) per simulation; a two-level factor → its labels; else
    proportions k/trials (0/1 for a 0/1 response)."""
    response = results.response
    if response.kind == "categorical":
        k: Int[np.ndarray, "nsim n"] = rng.binomial(1, mu)
        labels = np.asarray(response.levels, dtype=object)[k]
        return pd.DataFrame(labels.T, index=index, columns=names)
    k = rng.binomial(trials.astype(np.int64), mu)
    if response.kind == "cbind":
        pairs = np.stack([k, trials.astype(np.int64) - k], axis=-1)  # (nsim, n, 2)
        columns = pd.MultiIndex.from_product([names, list(response.parts)])
        return pd.DataFrame(pairs.transpose(1, 0, 2).reshape(len(index), -1), index=index, columns=columns)
    return pd.DataFrame((k / trials).T, index=index, columns=names)
