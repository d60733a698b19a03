"""A fast path for formulas of plain numeric columns: model matrices without formulaic.

Most models are written with plain columns: ``Reaction ~ Days + (Days |
Subject)``. Their model matrices are the columns themselves (and a column of
ones), which numpy builds in microseconds where formulaic takes milliseconds
a call. :func:`numeric_plan` recognises such a formula (every part a sum of
plain names, ``1`` and ``0``; every column a numpy integer or float column)
and :class:`NumericBuilder` builds its matrices with the formulaic builder's
column names (R's: ``(Intercept)``) and order; :class:`NumericSpec` stands in for formulaic's model spec in
``predict``. Anything else (categoricals, transformations, interactions,
booleans, quoted names) is left to the formulaic builder (``_formulaic``).
"""

from __future__ import annotations

import dataclasses
import functools
import keyword
import re
from typing import Any, ClassVar

import formulaic
import numpy as np
import pandas as pd

from ._formula import ParsedFormula, RandomTerm
from ._matrices import FixedPart, FixedTerm, ModelMatrix, ModelSpec

__all__ = ["NumericBuilder", "NumericPlan", "NumericSpec", "numeric_matrix", "numeric_plan", "numeric_terms"]


# A term of a sum of plain columns: (intercept, column names in order).
_Sum = tuple[bool, tuple[str, ...]]
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class NumericPlan:
    """A formula whose response is a column and whose fixed part and random
    terms are sums of columns, ``1`` and ``0``: its model matrices are the
    columns themselves, built without formulaic (which costs milliseconds a
    call). ``terms`` maps each bar to its lme4 terms (one, or for ``||`` the
    intercept and each column alone)."""

    response: str
    fixed: _Sum
    terms: dict[RandomTerm, tuple[_Sum, ...]]
    columns: frozenset[str]


def _simple_sum(expr: str) -> _Sum | None:
    """``expr`` as (intercept, columns) if it is a sum of plain names, ``1``
    and ``0``; else None (formulaic reads it). Sums whose meaning depends on
    formulaic's rules (``0`` and ``1`` both, a repeated name, a column named
    like formulaic's ``Intercept``) are left to formulaic too."""
    tokens = [t.strip() for t in expr.split("+")]
    names = [t for t in tokens if t not in ("0", "1")]
    if not all(_PLAIN_NAME.fullmatch(t) and not keyword.iskeyword(t) for t in names):
        return None
    if len(set(names)) != len(names) or "Intercept" in names or ("0" in tokens and "1" in tokens):
        return None
    intercept = "0" not in tokens
    return (intercept, tuple(names)) if intercept or names else None


@functools.lru_cache(maxsize=128)
def _numeric_structure(parsed: ParsedFormula) -> NumericPlan | None:
    """The :class:`NumericPlan` of ``parsed`` if its parts are simple sums
    (the data's dtypes are checked by :func:`numeric_plan`)."""
    fixed = _simple_sum(parsed.fixed)
    if fixed is None or not _PLAIN_NAME.fullmatch(parsed.response) or keyword.iskeyword(parsed.response):
        return None
    terms = {}
    for bar in parsed.random:
        whole = _simple_sum(bar.expr)
        if whole is None:
            return None
        if bar.correlated:
            terms[bar] = (whole,)
        else:  # lme4's expansion of (x || g), as the formulaic builder makes it
            intercept = ((True, ()),) if whole[0] else ()
            terms[bar] = intercept + tuple((False, (c,)) for c in whole[1])
    columns = {parsed.response, *fixed[1]} | {c for sums in terms.values() for s in sums for c in s[1]}
    return NumericPlan(parsed.response, fixed, terms, frozenset(columns))


def numeric_plan(parsed: ParsedFormula, data: pd.DataFrame) -> NumericPlan | None:
    """The plan of ``parsed`` when every column it reads is a plain numpy
    integer or float column of ``data`` (not bool, not a pandas extension
    type, which formulaic may read otherwise); else None."""
    plan = _numeric_structure(parsed)
    if plan is None:
        return None
    for col in plan.columns:
        if col not in data.columns:
            return None
        dtype = data[col].dtype
        if not (isinstance(dtype, np.dtype) and dtype.kind in "iuf"):
            return None
    return plan


def _sum_text(sum_: _Sum) -> str:
    """A formula formulaic reads as the sum ``sum_``."""
    return " + ".join(["1" if sum_[0] else "0", *sum_[1]])


def numeric_matrix(sum_: _Sum, data: pd.DataFrame) -> ModelMatrix:
    """The model matrix (n, k) of the sum ``sum_``: a column of ones first for
    the intercept, then the columns in order, as formulaic orders them."""
    intercept, columns = sum_
    names = ("(Intercept)",) * intercept + tuple(columns)
    out = np.empty((len(data), len(names)))
    if intercept:
        out[:, 0] = 1.0
    for k, col in enumerate(columns, start=int(intercept)):
        out[:, k] = data[col].to_numpy(dtype=float)
    dtypes = tuple((col, _numpy_dtype(data, col)) for col in columns)
    return ModelMatrix(values=out, columns=names, spec=NumericSpec(intercept, columns, dtypes))


def _numpy_dtype(data: pd.DataFrame, col: str) -> np.dtype:
    """The dtype of a column of a :class:`NumericPlan`: a numpy integer or
    float dtype (:func:`numeric_plan` admits no other)."""
    dtype = data[col].dtype
    assert isinstance(dtype, np.dtype), f"column {col!r} of a numeric plan has dtype {dtype}"
    return dtype


def numeric_terms(sum_: _Sum) -> tuple[FixedTerm, ...]:
    """The terms of a sum of columns: the intercept, then one per column."""
    intercept, columns = sum_
    first = (FixedTerm("(Intercept)", (0,), (), ()),) if intercept else ()
    return first + tuple(
        FixedTerm(c, (k,), (c,), (True,)) for k, c in enumerate(columns, start=int(intercept))
    )


@dataclasses.dataclass(frozen=True)
class NumericBuilder:
    """The :class:`~._matrices.MatrixBuilder` of a formula that has a
    :class:`NumericPlan`: numpy copies of the columns, no formulaic."""

    plan: NumericPlan
    # Plain columns are read by name: the frame need not be cut or re-indexed.
    compact_frame: ClassVar[bool] = False

    def fixed(self, data: pd.DataFrame) -> FixedPart:
        """Response (n,) and fixed-effects matrix (n, p) of ``data``'s rows."""
        y = data[self.plan.response].to_numpy(dtype=float).copy()
        X = numeric_matrix(self.plan.fixed, data)
        return FixedPart(response=self.plan.response, y=y, X=X, terms=numeric_terms(self.plan.fixed))

    def terms(self, bar: RandomTerm, data: pd.DataFrame) -> tuple[ModelMatrix, ...]:
        """The Z block (n, k) of each lme4 term of ``bar``."""
        return tuple(numeric_matrix(sum_, data) for sum_ in self.plan.terms[bar])


@dataclasses.dataclass(frozen=True)
class NumericSpec:
    """Stands in for formulaic's model spec of a sum of numeric columns (what
    ``predict`` calls): ``get_model_matrix(newdata)`` gives formulaic's
    columns. Data it cannot take as plain finite numbers (a missing column,
    another dtype, NaN, other options) go to the formulaic spec of the same
    sum, so errors and edge cases are formulaic's."""

    intercept: bool
    columns: tuple[str, ...]
    dtypes: tuple[tuple[str, np.dtype], ...]

    def get_model_matrix(self, data: Any, **kwargs: Any) -> pd.DataFrame:
        """The model matrix of ``data``: ``(Intercept)`` (ones), then the columns."""
        if not self._plain(data, kwargs):
            mm = _formulaic_spec(self).get_model_matrix(data, **kwargs)
            return pd.DataFrame(mm).rename(columns={"Intercept": "(Intercept)"})
        out = {"(Intercept)": np.ones(len(data))} if self.intercept else {}
        out.update((col, data[col].to_numpy()) for col in self.columns)
        return pd.DataFrame(out, index=data.index)

    def _plain(self, data: Any, kwargs: dict[str, Any]) -> bool:
        """Whether ``data`` holds every column as finite plain numbers."""
        if not isinstance(data, pd.DataFrame) or set(kwargs) - {"na_action"}:
            return False
        if not data.columns.is_unique:
            return False
        for col in self.columns:
            if col not in data.columns:
                return False
            dtype = data[col].dtype
            if not (isinstance(dtype, np.dtype) and dtype.kind in "iuf"):
                return False
            if dtype.kind == "f" and not np.isfinite(data[col].to_numpy()).all():
                return False
        return True


@functools.lru_cache(maxsize=64)
def _formulaic_spec(spec: NumericSpec) -> ModelSpec:
    """formulaic's model spec of ``spec``'s sum, from a frame of its dtypes
    (formulaic's spec of numeric columns depends on their kind only)."""
    frame = pd.DataFrame({col: np.ones(2, dtype=dtype) for col, dtype in spec.dtypes})
    if frame.shape[1] == 0:
        frame = pd.DataFrame(index=range(2))
    # na_action="raise", as build_design makes its specs (a spec keeps it as its default).
    model_spec = formulaic.model_matrix(
        _sum_text((spec.intercept, spec.columns)), frame, na_action="raise"
    ).model_spec
    assert model_spec is not None, "formulaic's model matrix of a formula has its spec"
    return model_spec
