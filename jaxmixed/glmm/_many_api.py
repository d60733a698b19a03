"""``fit_glmm_many``: one GLMM per response, every response over one design, as one computation.

Many binary or count outcomes measured on the same units (traits over one panel
of animals, items over one survey) share the formula's design: it is built and
checked once, and each chunk of responses is one vmapped fit
(``core._glmm.fit_glmm_responses``), compiled once. Like ``fit_reml_many`` it
returns a tidy table with one row per response whose ``result(k)`` gives fit k
as a full :class:`GLMMResults`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Hashable, Sequence

import jax
import numpy as np
import numpy.typing as npt
import pandas as pd
from jaxtyping import Float, Int

from ..core._agq import check_agq, check_nagq
from ..core._compile import compiled
from ..core._family import Binomial, Family, family_from_name
from ..core._glmm import GLMMResult, fit_glmm_responses
from ..core._progress import Progress
from ..core._status import RESULTS
from ..design._design import Design, build_design
from ..design._names import theta_names
from ..design._prepare import prepare
from ..linear._many_api import _response_matrix
from ..linear._results import ConvergenceWarning
from ._response import WEIGHTS, Response, glmm_frame
from ._results import GLMMResults
from ._separation import SeparationWarning, separated_responses

__all__ = ["GLMMTable", "fit_glmm_many"]

_PLACEHOLDER = "jaxmixed_glmm_many_response"
_jit_fit_responses = compiled(fit_glmm_responses)
_DEFAULT_BATCH = 256  # responses per vmapped chunk: each fit holds a few copies of its rows


@dataclasses.dataclass(frozen=True)
class Unfittable:
    """The responses that cannot be fitted (they are not), and why.

    Attributes:
        messages: response index k -> the reason, as the table's ``message`` says it.
    """

    messages: dict[int, str] = dataclasses.field(default_factory=dict)

    @property
    def indices(self) -> list[int]:
        """The unfittable responses' indices, in order."""
        return sorted(self.messages)


@dataclasses.dataclass(frozen=True, eq=False)
class _Source:
    """What ``GLMMTable.result`` rebuilds a fit from."""

    make: Callable[[int], GLMMResults]


class GLMMTable(pd.DataFrame):
    """A tidy table of many GLMM fits (one row per response) that also gives each fit whole.

    Columns: ``deviance`` (−2 log L, every constant), ``loglik``, ``aic``, ``converged``,
    ``singular``, ``message`` (why the fit stopped, or why it was not fitted),
    ``n_iter``, ``separated`` (the fixed effects whose estimates lie at infinity, comma
    separated; "" for none: ``_separation``); the fixed effects by name and their
    standard errors (``se_<name>``);
    θ by lme4's names (``theta_<factor>.<term>``). A response that could not be fitted
    has NaN estimates and its reason in ``message``.

    ``result(k)``: fit k (a position or an index label) as a :class:`GLMMResults`.
    Slices of the table are plain DataFrames.
    """

    _metadata = ["_source"]
    _source: _Source

    @property
    def _constructor(self):
        return pd.DataFrame

    def result(self, k: Hashable) -> GLMMResults:
        """Fit ``k`` (a position or an index label) as a full :class:`GLMMResults`."""
        pos = k if isinstance(k, int | np.integer) and k not in self.index else self.index.get_loc(k)
        if not isinstance(pos, int | np.integer):
            raise TypeError(f"the label {k!r} names several fits: pass a position")
        if not 0 <= int(pos) < len(self):
            raise IndexError(f"fit {k} is out of range for {len(self)} fits")
        if isinstance(self["message"].iloc[int(pos)], str) and self["message"].iloc[int(pos)].startswith("not fitted"):
            raise ValueError(f"response {self.index[int(pos)]!r} was {self['message'].iloc[int(pos)]}")
        return self._source.make(int(pos))


def fit_glmm_many(
    formula: str,
    data: pd.DataFrame,
    responses: Sequence[Hashable] | pd.Index | Float[npt.ArrayLike, "n K"],
    family: str | Family = "binomial",
    *,
    nAGQ: int = 1,  # noqa: N803  (lme4's name)
    weights: str | np.ndarray | None = None,
    offset: str | np.ndarray | None = None,
    batch_size: int | None = None,
    verbose: bool = True,
) -> GLMMTable:
    """Fits one GLMM per response, every response over the same design, in one computation.

    The formula's right-hand side (with any ``offset()`` terms) gives the design, built
    and checked once; its left-hand side is ignored. Each chunk of ``batch_size``
    responses is one vmapped :func:`fit_glmm` (same Laplace or quadrature deviance,
    same exact standard errors), compiled once for every chunk.

    Args:
        formula: as in :func:`fit_glmm`; its left-hand side is ignored.
        data: the covariates and the responses.
        responses: the names of the response columns of ``data``, or an (n, K) matrix
            (array or DataFrame: its column names label the fits), in the family's
            convention: 0/1 or proportions (binomial, trials as ``weights``, shared by
            every response) or counts (Poisson). ``cbind`` responses are not taken here.
        family: as in :func:`fit_glmm`.
        nAGQ: as in :func:`fit_glmm`.
        weights: prior weights (binomial trials), a column name or an array (n,).
        offset: as in :func:`fit_glmm`.
        batch_size: responses per vmapped chunk (default min(K, 256)); every chunk has
            this size, so one compiled program serves all.
        verbose: a progress bar over the chunks (tqdm when installed).

    Returns:
        A :class:`GLMMTable`, one row per response (index: the response names). A
        response with missing values, or values the family cannot take, is not fitted
        and its row says why; so is a response of all 0 (binomial: or all 1), whose
        intercept would lie at infinity.
        Fits that did not converge are counted in one ``ConvergenceWarning``, responses
        with separated fixed effects in one ``SeparationWarning`` (each fit is checked:
        from its fitted means where they certify overlap, by a linear program elsewhere).
    """
    fam = family_from_name(family)
    ys, labels = _response_matrix(data, responses, None)
    check_nagq(nAGQ)  # before the design is built
    design, arrays, work_offsets = _shared_design(formula, data, labels, ys, fam, weights, offset)
    assert arrays.weights is not None  # the working frame always has weights
    skipped = _screen(ys, arrays.weights, fam)
    fits = _fit_chunks(
        design, arrays, ys, skipped=skipped, family=fam, nagq=nAGQ, offset=work_offsets.values,
        batch_size=batch_size, verbose=verbose,
    )  # fmt: skip
    separated = response_separation(design, arrays, ys, fits, skipped=skipped, family=fam, offset=work_offsets.values)
    table = _table(design, fits, labels, skipped)
    table["separated"] = [", ".join(separated.get(k, [])) for k in range(len(table))]
    n_bad = int(np.sum(~table["converged"] & ~table["message"].str.startswith("not fitted")))
    if n_bad:
        warnings.warn(f"{n_bad} of {len(table)} GLMM fits did not converge (see the message column)", ConvergenceWarning, stacklevel=2)
    if separated:
        message = separation_count(len(separated), len(table), "responses") + " (the separated column names them)"
        warnings.warn(message, SeparationWarning, stacklevel=2)

    def make(k: int) -> GLMMResults:
        one = jax.tree.map(lambda a: np.asarray(np.asarray(a)[k]), fits)
        name = str(labels[k])
        arrays_k = dataclasses.replace(arrays, y=ys[k])
        formula_k = f"{name} ~{formula.split('~', 1)[1]}"
        return GLMMResults(
            design=dataclasses.replace(design, response=name), arrays=arrays_k, family=fam, nagq=int(nAGQ),
            fit_result=one, formula=formula_k, response=Response(name), offsets=work_offsets,
            index=data.index, separated=tuple(separated.get(k, [])),
        )  # fmt: skip

    out = GLMMTable(table)
    out._source = _Source(make)
    return out


def _shared_design(formula, data, labels, ys, fam, weights, offset):
    """(design, arrays, offsets) every response shares: the formula's right-hand side over
    the covariates, with the first response standing in for the left-hand side."""
    if "~" not in formula:
        raise ValueError(f"formula {formula!r} has no '~'")
    covariates = data.drop(columns=[c for c in labels if c in data.columns])
    frame = covariates.assign(**{_PLACEHOLDER: np.arange(ys.shape[1]) % 2.0})  # the design ignores it
    work = glmm_frame(f"{_PLACEHOLDER} ~{formula.split('~', 1)[1]}", frame, weights, offset, binomial=isinstance(fam, Binomial))
    design, arrays = build_design(work.formula, work.frame, "raise", weights=WEIGHTS, levels_below_rows=False)
    if ys.shape[1] != len(arrays.y):
        raise ValueError(f"the responses have {ys.shape[1]} rows but the design has {len(arrays.y)}")
    return design, arrays, work.offsets


def _screen(ys: Float[np.ndarray, "K n"], weights: Float[np.ndarray, " n"], fam: Family) -> Unfittable:
    """Responses that cannot be fitted, with the reason (they are not fitted)."""
    messages = {}
    for k, y in enumerate(ys):
        bad = int(np.sum(~np.isfinite(y)))
        if bad:
            messages[k] = f"not fitted: the response has {bad} missing or non-finite value(s)"
            continue
        try:
            fam.check_response(y, weights)
        except ValueError as err:
            messages[k] = f"not fitted: {err}"
            continue
        if np.all(y == 0) or (isinstance(fam, Binomial) and np.all(y == 1)):
            messages[k] = "not fitted: every response is 0 (or, binomial, 1): the intercept would lie at infinity"
    return Unfittable(messages)


def _fit_chunks(
    design: Design,
    arrays,
    ys: Float[np.ndarray, "K n"],
    *,
    skipped: Unfittable,
    family: Family,
    nagq: int,
    offset: Float[np.ndarray, " n"] | None,
    batch_size: int | None,
    verbose: bool,
    standard_errors: bool = True,
) -> GLMMResult:
    """Every response's fit (leading axis K), in chunks of ``batch_size`` (host loop); the
    last chunk is filled up by repeating a fittable response, and the ``skipped`` responses
    are replaced by one (their rows are reported as not fitted)."""
    n_fits = len(ys)
    size = min(n_fits, _DEFAULT_BATCH) if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    good = [k for k in range(n_fits) if k not in skipped.messages]
    filler = ys[good[0]] if good else np.r_[1.0, np.zeros(ys.shape[1] - 1)]
    ys = ys.copy()
    ys[skipped.indices] = filler
    progress = Progress(n_fits, "fit", bool(verbose and n_fits > size))
    chunks = []
    with jax.enable_x64(True):
        model = prepare(design, arrays, dtype=np.float64, on_device=False)
        check_agq(model, nagq)
        for start in range(0, n_fits, size):
            ids: Int[np.ndarray, " b"] = np.arange(start, start + size)
            ids = np.where(ids < n_fits, ids, start)
            out = _jit_fit_responses(
                model, ys[ids], family, offset=offset, nagq=int(nagq), standard_errors=standard_errors
            )
            real = int(min(size, n_fits - start))
            chunks.append(jax.tree.map(lambda a, m=real: np.asarray(a)[:m], out))
            progress.update(real)
    progress.close()
    return jax.tree.map(lambda *a: np.concatenate(a, axis=0), *chunks)


def response_separation(
    design: Design,
    arrays,
    ys: Float[np.ndarray, "K n"],
    fits: GLMMResult,
    *,
    skipped: Unfittable,
    family: Family,
    offset: Float[np.ndarray, " n"] | None,
) -> dict[int, list[str]]:
    """Response k -> its separated fixed effects (``_separation``), for the fitted responses
    that have any: certified from each fit's means where it can be, by the LP elsewhere."""
    fitted = np.setdiff1d(np.arange(len(ys)), skipped.indices)
    if len(fitted) == 0:
        return {}
    eta = np.asarray(fits.beta, float)[fitted] @ np.asarray(arrays.X, float).T
    if offset is not None:
        eta = eta + offset
    for codes, z, b in zip(arrays.codes, arrays.Z, fits.b, strict=True):
        eta = eta + np.einsum("nq,knq->kn", z, np.asarray(b, float)[fitted][:, codes])
    with jax.enable_x64(True):
        mus = np.asarray(family.link.inverse(jax.numpy.asarray(eta)))
    assert arrays.weights is not None
    found = separated_responses(
        arrays.X, ys[fitted], mus, arrays.weights, list(design.fixed_names), binomial=isinstance(family, Binomial)
    )
    return {int(fitted[k]): names for k, names in found.items()}


def separation_count(n_separated: int, n_fits: int, what: str) -> str:
    """The warning's text for ``n_separated`` of ``n_fits`` separated responses."""
    return (
        f"{n_separated} of {n_fits} {what} have complete or quasi-complete separation: some fixed effects' "
        "maximum likelihood estimates lie at infinity, and the estimates and standard errors the fits "
        "stopped at mean nothing"
    )


def _message(fits: GLMMResult, k: int) -> str:
    """Why fit k stopped: the optimiser's result, or that PIRLS did not settle at its optimum."""
    if not bool(np.asarray(fits.pirls_converged)[k]):
        return "PIRLS did not settle at the optimum (the conditional modes are not converged)"
    return str(RESULTS[jax.tree.map(lambda a: np.asarray(np.asarray(a)[k]), fits.result)])


def _table(design: Design, fits: GLMMResult, labels: pd.Index, skipped: Unfittable) -> pd.DataFrame:
    """The tidy table: one row per response."""
    fixed = list(design.fixed_names)
    deviance = np.asarray(fits.deviance, float)
    n_par = fits.theta.shape[1] + fits.beta.shape[1]
    converged = np.asarray(fits.converged, bool)
    cols: dict[str, object] = {
        "deviance": deviance,
        "loglik": -0.5 * deviance,
        "aic": deviance + 2.0 * n_par,
        "converged": converged,
        "singular": np.any(np.asarray(fits.at_boundary), axis=1),
        "message": [_message(fits, k) for k in range(len(deviance))],
        "n_iter": np.asarray(fits.n_iter),
    }
    se = np.sqrt(np.diagonal(np.asarray(fits.vcov_beta, float), axis1=1, axis2=2))
    for j, name in enumerate(fixed):
        cols[name] = np.asarray(fits.beta[:, j], float)
    for j, name in enumerate(fixed):
        cols[f"se_{name}"] = se[:, j]
    theta = np.asarray(fits.theta, float)[:, design.theta_order]  # lme4's order, as its names
    for j, name in enumerate(theta_names(design)):
        cols[f"theta_{name}"] = theta[:, j]
    table = pd.DataFrame(cols, index=labels)
    for k, why in skipped.messages.items():
        table.iloc[k, table.columns.get_loc("message")] = why
        numeric = [c for c in table.columns if c not in ("message", "converged", "singular", "n_iter")]
        table.iloc[k, [table.columns.get_loc(c) for c in numeric]] = np.nan
        table.iloc[k, table.columns.get_loc("converged")] = False
        table.iloc[k, table.columns.get_loc("singular")] = False
        table.iloc[k, table.columns.get_loc("n_iter")] = 0
    return table
