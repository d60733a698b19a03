"""The table of many fits: one row per fit, and each fit on demand (``FitTable``).

Shared by ``fit_reml_many`` (many responses over one design) and
``fit_reml_stacked`` (many data sets of one model).
"""


from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Hashable

import jax
import numpy as np
import pandas as pd

from ..core import FitOptions
from ..core._callers import user_stacklevel
from ..core._fit import FitResult
from ..core._many import (
    default_batch_size,
)
from ..core._status import RESULTS
from ..design._design import Design, ModelArrays
from ..design._names import parameter_names, parameter_values
from ._results import ConvergenceWarning, MixedModelResults, build_results

__all__ = ["FitTable", "TableSource", "checked_batch_size", "fit_table", "warn_unconverged_fits"]


@dataclasses.dataclass(frozen=True)
class TableSource:
    """What ``FitTable.result(k)`` needs: ``model(k)`` gives fit k's design and
    arrays (built when asked: thousands of fits need only the table)."""

    model: Callable[[int], tuple[Design, ModelArrays]]
    fits: FitResult
    options: FitOptions


class FitTable(pd.DataFrame):
    """A tidy table of many fits (one row each) that also gives each fit whole.

    Columns: ``objective`` (REML criterion or deviance), ``converged``,
    ``singular``, ``message`` (why the fit stopped, or why it was not
    fitted), ``n_iter``; the fixed effects by name and their standard errors
    (``se_<name>``); the variance parameters in lme4's
    ``confint(oldNames = FALSE)`` names (``sd_(Intercept)|Subject``,
    ``cor_Days.(Intercept)|Subject``) and ``sigma``. A fit that could not be
    made has NaN estimates and its reason in ``message``.

    ``result(k)``: fit k (a position, or a label of the index) as a
    :class:`MixedModelResults`. Slices of the table are plain DataFrames.
    """

    _metadata = ["_source"]
    _source: TableSource  # set by _table

    @property
    def _constructor(self):
        return pd.DataFrame

    def result(self, k: Hashable) -> MixedModelResults:
        """Fit ``k`` (a position or an index label) as a full :class:`MixedModelResults`."""
        source = self._source
        pos = k if isinstance(k, int | np.integer) and k not in self.index else self.index.get_loc(k)
        if not isinstance(pos, int | np.integer):  # a slice or a mask: a label of several rows
            raise TypeError(f"the label {k!r} names several fits: pass a position")
        if not 0 <= int(pos) < len(self):
            raise IndexError(f"fit {k} is out of range for {len(self)} fits")
        pos = int(pos)
        one = jax.tree.map(lambda a: np.asarray(np.asarray(a)[pos]), source.fits)  # 0-d arrays, not scalars
        design, arrays = source.model(pos)
        levels = [f.n_levels for f in design.factors]
        one = dataclasses.replace(
            one,
            b=tuple(b[:j] for b, j in zip(one.b, levels, strict=True)),
            b_cov=tuple(c[:j] for c, j in zip(one.b_cov, levels, strict=True)),
        )
        return build_results(design, arrays, one, source.options)


def fit_table(
    design: Design, fits: FitResult, index: pd.Index, reasons: dict[int, str], source: TableSource
) -> FitTable:
    """The tidy table of ``fits`` (numpy leaves, leading axis K)."""
    n_fits = len(index)
    messages = [
        RESULTS[jax.tree.map(lambda a, k=k: np.asarray(np.asarray(a)[k]), fits.result)] for k in range(n_fits)
    ]
    for k, why in reasons.items():
        messages[k] = why
    names = list(design.fixed_names)
    beta = np.asarray(fits.beta, float)
    se = np.sqrt(np.diagonal(np.asarray(fits.vcov_beta, float), axis1=1, axis2=2))
    variance = parameter_values(design, [np.asarray(lam) for lam in fits.lambdas], np.asarray(fits.sigma))
    failed = np.zeros(len(index), bool)
    failed[list(reasons)] = True
    columns = {
        "objective": np.where(failed, np.nan, np.asarray(fits.objective, float)),
        "converged": np.asarray(fits.converged, bool) & ~failed,
        "singular": np.asarray(fits.singular, bool) & ~failed,
        "message": messages,
        "n_iter": np.asarray(fits.n_iter),
    }
    for j, name in enumerate(names):
        columns[name] = np.where(failed, np.nan, beta[:, j])
    for j, name in enumerate(names):
        columns[f"se_{name}"] = np.where(failed, np.nan, se[:, j])
    for j, name in enumerate(parameter_names(design)):
        columns[name] = np.where(failed, np.nan, variance[:, j])
    table = FitTable(columns, index=index)
    object.__setattr__(table, "_source", source)
    return table


def warn_unconverged_fits(fits: FitResult, reasons: dict[int, str]) -> None:
    constant = np.asarray(fits.result == RESULTS.constant_response)  # elementwise over the fits
    unconverged = ~np.asarray(fits.converged, bool) & ~constant
    bad = [int(k) for k in np.flatnonzero(unconverged) if k not in reasons]
    if bad:
        warnings.warn(
            f"{len(bad)} of {len(np.asarray(fits.objective))} fits did not converge (first: {bad[:5]}); "
            "see the 'converged' and 'message' columns",
            ConvergenceWarning,
            stacklevel=user_stacklevel(),
        )


def checked_batch_size(batch_size: int | None, n_fits: int, per_fit: int, devices: int) -> int:
    """The chunk size: ``batch_size`` checked, or as many fits as fit in memory."""
    if batch_size is None:
        return default_batch_size(n_fits, per_fit, multiple=devices)
    if int(batch_size) < 1 or int(batch_size) % devices:
        raise ValueError(
            f"batch_size must be a positive multiple of the {devices} device(s), got {batch_size}"
        )
    return int(batch_size)

