"""Prediction from a fitted model: ``Xβ̂ (+ Zb̂) + offset`` of new rows (host side, numpy).

``fixed_matrix`` and ``random_part`` also serve the networks' results (a
learned fixed part with the same random part).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd
from formulaic.errors import DataMismatchWarning
from jaxtyping import Float, Int, Shaped

from ..core._callers import user_stacklevel
from ..design._design import Design, FactorInfo

if TYPE_CHECKING:  # the results import this module
    from ._results import MixedModelResults

__all__ = ["fixed_matrix", "predict", "random_part"]


def predict(
    results: MixedModelResults,
    newdata: pd.DataFrame | None = None,
    include_random: bool = True,
    *,
    X: Float[npt.ArrayLike, "n p"] | None = None,
    Z: Float[npt.ArrayLike, "n q"] | None = None,
    groups: Shaped[npt.ArrayLike, " n"] | None = None,
    offset: str | Float[npt.ArrayLike, " n"] | None = None,
) -> Float[np.ndarray, " n"]:
    """Predictions (n,) ``Xβ̂ (+ Zb̂) + offset`` of ``results`` (``MixedModelResults.predict``).

    ``newdata`` None (and no ``X``): a copy of the fitted values. A model
    fitted from a formula reads ``newdata``; one fitted from arrays reads
    ``X`` (n, p), ``Z`` (n, q) and ``groups`` (n,). The new rows' offset is the
    formula's ``offset()`` terms on ``newdata`` plus the ``offset=`` part:
    ``offset`` (an array (n,), or a column name or expression of ``newdata``), else
    the fit's column or expression (``Offsets.on``); array input adds ``offset``.
    """
    if newdata is None and X is None:
        if offset is not None:
            raise ValueError("offset= goes with newdata (or X); the fitted rows have their own offsets")
        return (results.fitted if include_random else results.fitted_fixed).copy()
    if results.design.fixed_spec is None:
        pred = _predict_arrays(results, X, Z, groups, include_random)
        return pred + _array_offset(results, offset, len(pred))
    xm = fixed_matrix(results.design, newdata, list(results.fixed_effects.index))
    assert isinstance(newdata, pd.DataFrame), "fixed_matrix checked that newdata is a DataFrame"
    pred = xm @ results.fixed_effects.to_numpy()
    if include_random:
        pred = pred + random_part(results, newdata)
    offsets = results.design.offsets
    if offsets.given or offset is not None:
        pred = pred + offsets.on(newdata, offset)
    return pred


def _array_offset(
    results: MixedModelResults, offset: str | Float[npt.ArrayLike, " n"] | None, n: int
) -> Float[np.ndarray, " n"] | float:
    """The offset (n,) of new array input: ``offset``, an array (n,) that a model fitted with
    one needs (0 for a model without, if not given)."""
    if isinstance(offset, str):
        raise TypeError(f"a model fitted from arrays takes offset= an array (n,), not a column name ({offset!r})")
    if offset is None:
        if results.design.offsets.given:
            raise ValueError("the model was fitted with offset= an array: pass offset= (n,) for the new rows")
        return 0.0
    values = np.asarray(offset, float).reshape(-1)
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise ValueError(f"offset must have {n} finite values, one per row of X; got shape {values.shape}")
    return values


def fixed_matrix(design: Design, newdata: object, names: list[str]) -> Float[np.ndarray, "n k"]:
    """The columns ``names`` (n, k) of the fixed-effects model matrix of ``newdata``.

    ``newdata`` must be a DataFrame (else a TypeError); ``design`` one built
    from a formula. A category of a fixed-effects factor not seen in fitting is
    an error (formulaic would code it as the reference level: a silent wrong
    answer).
    """
    if not isinstance(newdata, pd.DataFrame):
        raise TypeError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    spec = design.fixed_spec
    assert spec is not None, "a design built from a formula has the fixed part's spec"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataMismatchWarning)
        try:
            xm = spec.get_model_matrix(newdata, na_action="raise")
        except DataMismatchWarning as err:
            raise ValueError(f"newdata has a category not seen in fitting: {err}") from None
    return np.asarray(xm[names], dtype=float)


def random_part(results: MixedModelResults, newdata: pd.DataFrame) -> Float[np.ndarray, " n"]:
    """``Zb̂`` (n,) of the rows of ``newdata``: each grouping factor's conditional
    mode for the row's level.

    A level not seen in fitting contributes 0, and a warning says how many
    rows that was, at the user's line.
    """
    pred = np.zeros(len(newdata))
    for info in results.design.factors:
        missing_cols = [c for c in info.columns if c not in newdata.columns]
        if missing_cols:
            raise ValueError(f"newdata lacks the grouping column(s) {missing_cols}")
        codes = _factor_codes(info, newdata)
        b = results.random_effects[info.name]
        pred = pred + _factor_part(b, info, codes, _factor_design(info, newdata))
    return pred


def _predict_arrays(
    results: MixedModelResults,
    X: Float[npt.ArrayLike, "n p"] | None,
    Z: Float[npt.ArrayLike, "n q"] | None,
    groups: Shaped[npt.ArrayLike, " n"] | None,
    include_random: bool,
) -> Float[np.ndarray, " n"]:
    """Predictions of a model fitted from arrays (one grouping factor) at new arrays."""
    X = np.asarray(X, dtype=float)
    X = X[:, None] if X.ndim == 1 else X
    all_names = list(results.design.all_fixed_names)
    if X.shape[1] != len(all_names):
        raise ValueError(f"X has {X.shape[1]} columns; the model was fitted with {len(all_names)}")
    # Aliased columns were dropped in fitting: keep the columns of the estimates (the
    # index of fixed_effects).
    keep = [all_names.index(name) for name in results.design.fixed_names]
    pred = X[:, keep] @ results.fixed_effects.to_numpy()
    if not include_random:
        return pred
    info = results.design.factors[0]
    if groups is None:
        raise ValueError("groups is required to include the random effects")
    z = _array_z(info, Z, len(X))
    codes = info.levels.get_indexer(pd.Index(np.asarray(groups)))
    return pred + _factor_part(results.random_effects[info.name], info, codes, z)


def _array_z(info: FactorInfo, Z: Float[npt.ArrayLike, "n q"] | None, n: int) -> Float[np.ndarray, "n q"]:
    """The random-effects columns (n, q) of new array input; None: the intercept."""
    q = info.structure.q
    if Z is None and info.column_names != ("Intercept",):
        raise ValueError(f"Z is required: the model has random effects {list(info.column_names)}")
    z = np.ones((n, 1)) if Z is None else np.asarray(Z, dtype=float).reshape(n, -1)
    if z.shape[1] != q:
        raise ValueError(f"Z has {z.shape[1]} columns; the model was fitted with {q}")
    return z


def _factor_design(info: FactorInfo, data: pd.DataFrame) -> Float[np.ndarray, "n q"]:
    """The random-effects columns (n, q) of one factor's terms for the rows of ``data``."""
    mats = []
    for spec, cols in zip(info.term_specs, info.term_columns, strict=True):
        assert spec is not None, "a design built from a formula has each term's spec"
        mm = spec.get_model_matrix(data, na_action="raise")
        mats.append(np.asarray(mm[list(cols)], dtype=float))
    return np.concatenate(mats, axis=1)


def _factor_codes(info: FactorInfo, data: pd.DataFrame) -> Int[np.ndarray, " n"]:
    """Level codes (n,) of the rows of ``data`` for the factor ``info``; -1 for a
    level not seen in fitting.

    Labels match by value; labels of another kind than the fitted ones (strings
    for integers, or integers for strings) match by their string forms ("3" is
    3). New labels of another kind of which none match are an error.
    """
    if len(info.columns) > 1:
        labels = data[list(info.columns)].astype(str).agg(":".join, axis=1)
        return info.levels.get_indexer(pd.Index(labels))
    assert len(info.columns) == 1, "a grouping factor is one column or an interaction of several"
    values = data[info.columns[0]]
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    new = pd.Index(values)
    codes = info.levels.get_indexer(new)
    kinds = [pd.api.types.infer_dtype(x, skipna=True) for x in (info.levels, new)]
    numeric = ("integer", "floating", "mixed-integer-float", "decimal")
    if (codes >= 0).all() or kinds[0] == kinds[1] or (kinds[0] in numeric and kinds[1] in numeric):
        return codes
    return _codes_by_string(info, new, codes, kinds)


def _codes_by_string(
    info: FactorInfo, new: pd.Index, codes: Int[np.ndarray, " n"], kinds: list[str]
) -> Int[np.ndarray, " n"]:
    """``codes`` with the unmatched labels matched by their string forms (first level wins)."""
    by_str = {str(label): k for k, label in reversed(list(enumerate(info.levels)))}
    str_codes = np.asarray([by_str.get(str(v), -1) for v in new], dtype=codes.dtype)
    codes = np.where(codes >= 0, codes, str_codes)
    if len(new) and (codes < 0).all():
        raise ValueError(
            f"the labels of grouping factor {info.name!r} in newdata are of type {kinds[1]} and "
            f"none matches the fitted labels, of type {kinds[0]}: convert them to the fitted type"
        )
    return codes


def _factor_part(
    b: pd.DataFrame,
    info: FactorInfo,
    codes: Int[np.ndarray, " n"],
    z: Float[np.ndarray, "n q"],
) -> Float[np.ndarray, " n"]:
    """``z·b[level]`` (n,) for one factor; 0 (and a warning) for unseen levels (code -1)."""
    unseen = codes < 0
    if unseen.any():
        warnings.warn(
            f"{int(unseen.sum())} row(s) have levels of {info.name!r} not seen in "
            "fitting: they get no random effect for that factor",
            stacklevel=user_stacklevel(),
        )
    contrib = np.einsum("nq,nq->n", z, b.to_numpy()[np.where(unseen, 0, codes)])
    return np.where(unseen, 0.0, contrib)
