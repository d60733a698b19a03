"""Offsets: a known part of the linear predictor, added with coefficient 1.

lme4 takes them from two places and sums them: ``offset(expr)`` terms of the formula
(several allowed; ``expr`` a column or an expression of columns such as ``log(size)``) and
the ``offset=`` argument (a column name or expression, or an array with one value per row).
A linear mixed model's response is then ``y = Xβ + Zb + offset + ε`` and a GLMM's linear
predictor ``η = Xβ + Zb + offset``. Here the formula's terms are split off (the rest goes to
formulaic), the columns they read are named (so that rows missing them are dropped or
refused as rows missing any used column are), and their sum is evaluated on given rows: the
fitted ones or new data.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import formulaic
import numpy as np
import numpy.typing as npt
import pandas as pd
from jaxtyping import Float

from ._columns import expression_columns
from ._formula import ParsedFormula, _split_top_level
from ._quoting import quote_formula
from ._rnames import python_powers

__all__ = [
    "OFFSET",
    "Offsets",
    "offset_columns",
    "offset_values",
    "offsets_of",
    "split_offsets",
]

# The working column that holds an ``offset=`` array while rows with missing values are
# dropped (R's model frame names it so); data holding a column of this name is refused.
OFFSET = "(offset)"
_OFFSET_CALL = re.compile(r"(?<![\w.])offset\s*\(")


@dataclasses.dataclass(frozen=True, eq=False)
class Offsets:
    """The offsets of a model.

    Attributes:
        terms: the expressions of the formula's ``offset(expr)`` terms, in order (default ()).
        argument: the ``offset=`` argument: a column name or expression, an array (n,) of the
            rows given to the fit (before any were dropped), or None (default).
        values: (n,) their sum on the fitted rows, or None (none given, or not kept here:
            a linear model keeps it in ``ModelArrays.offset``).
    """

    terms: tuple[str, ...] = ()
    argument: str | np.ndarray | None = None
    values: Float[np.ndarray, " n"] | None = None

    @property
    def given(self) -> bool:
        """Whether the model has an offset (a term or the argument)."""
        return bool(self.terms) or self.argument is not None

    def on(self, data: pd.DataFrame, argument: str | npt.ArrayLike | None = None) -> Float[np.ndarray, " m"]:
        """The total offset (m,) of the rows of ``data``: each ``offset(expr)`` term evaluated
        on them, plus the ``offset=`` part: ``argument`` if given (a column name or expression,
        or an array (m,)), else the fitted ``argument`` when it is a column name or
        expression. A model fitted with an array ``offset=`` needs ``argument`` (unlike lme4's
        predict, which drops the argument's offset on new data). Missing or non-finite values
        are an error naming the term."""
        total = np.zeros(len(data))
        for expr in self.terms:
            total = total + offset_values(expr, data, f"offset({expr})")
        if argument is None and isinstance(self.argument, np.ndarray):
            raise ValueError(
                "the model was fitted with offset= an array: pass offset= (an array with one value "
                "per row of newdata, or a column name) to give the new rows theirs"
            )
        part = self.argument if argument is None else argument
        if part is not None:
            total = total + _argument_values(part, data)
        return total


def split_offsets(rhs: str) -> tuple[str, tuple[str, ...]]:
    """(``rhs`` without its ``offset(expr)`` terms, their expressions): ``period +
    offset(log(size)) + (1 | herd)`` gives ``("period + (1 | herd)", ("log(size)",))``. A
    right-hand side left empty becomes "1" (the intercept stays, as in R). ``offset()`` other
    than as a term added at the top level (``- offset(x)``, inside a call or a bar) is an
    error."""
    kept, terms = [], []
    for part in _split_top_level(rhs, "+"):
        text = part.strip()
        match = _OFFSET_CALL.match(text)
        if match and _closing(text, match.end() - 1) == len(text) - 1:
            inner = text[match.end() : -1].strip()
            if not inner:
                raise ValueError("offset() in the formula needs an expression, e.g. offset(log(size))")
            terms.append(inner)
        elif _OFFSET_CALL.search(text):
            raise ValueError(
                f"offset() must be a term added to the formula on its own (+ offset(expr)), got {text!r}"
            )
        elif text:
            kept.append(text)
    return (" + ".join(kept) or "1"), tuple(terms)


def _closing(text: str, start: int) -> int:
    """The index of the bracket that closes the one at ``text[start]`` (-1 if none)."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, "[": 1, ")": -1, "]": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return -1


def offsets_of(formula: str, offset: str | npt.ArrayLike | None, *, allowed: bool) -> tuple[str, Offsets]:
    """(``formula`` without its ``offset()`` terms, the :class:`Offsets`: terms and
    argument, no values). ``allowed`` False (a fit without offsets): a term or an argument
    is an error, which says so rather than leaving them out of the model. An array
    argument is taken as float64 (its length is checked against the data later)."""
    if "~" in formula:
        lhs, rhs = formula.split("~", 1)
        rest, terms = split_offsets(rhs)
        rest = f"{lhs}~ {rest}"
    else:
        rest, terms = formula, ()
    if not allowed and (terms or offset is not None):
        raise ValueError(
            "offsets (offset() terms of the formula or offset=) are not supported by this fit: "
            "fit the model with jaxmixed.fit_reml (or jaxmixed.fit_glmm), which take them"
        )
    argument = (
        offset if offset is None or isinstance(offset, str) else np.asarray(offset, dtype=float).reshape(-1)
    )
    return (rest if terms else formula), Offsets(terms, argument)


def offset_columns(offsets: Offsets, columns: tuple[Any, ...]) -> frozenset[str]:
    """The columns of data with ``columns`` that ``offsets`` read: each term's and a column
    or expression argument's variables, and ``OFFSET`` for an array argument (the column
    :func:`with_offset_column` adds), so that rows missing them are handled as rows missing
    any used column."""
    parts = [*offsets.terms] + ([offsets.argument] if isinstance(offsets.argument, str) else [])
    used = frozenset().union(*(expression_columns(p, columns) for p in parts))
    return used | ({OFFSET} if isinstance(offsets.argument, np.ndarray) else frozenset())


def with_offset_column(data: pd.DataFrame, offsets: Offsets) -> pd.DataFrame:
    """``data`` with an array argument as its ``OFFSET`` column (one value per row; else
    ``data`` itself), so that dropping rows with missing values drops its values too."""
    if not isinstance(offsets.argument, np.ndarray):
        return data
    if OFFSET in data.columns:
        raise ValueError(
            f"the data has a column named {OFFSET!r}, which jaxmixed uses for offset=; rename it"
        )
    if offsets.argument.shape != (len(data),):
        raise ValueError(
            f"offset must have one value per row ({len(data)}), got shape {offsets.argument.shape}"
        )
    return data.assign(**{OFFSET: offsets.argument})


def fitted_offset(offsets: Offsets, data: pd.DataFrame) -> Float[np.ndarray, " n"] | None:
    """The total offset (n,) of the rows of ``data`` as :func:`with_offset_column` left
    them (an array argument read from its ``OFFSET`` column); None without offsets."""
    if not offsets.given:
        return None
    array = isinstance(offsets.argument, np.ndarray)
    return offsets.on(data, argument=data[OFFSET].to_numpy(float) if array else None)


def offset_values(expression: str, data: pd.DataFrame, what: str) -> Float[np.ndarray, " n"]:
    """The numbers (n,) of a column or an expression of columns (``log(size)``, R's ``^``
    allowed inside calls) on the rows of ``data``, evaluated as the formula's terms are
    (formulaic, with numpy's functions); ``what`` names it in errors."""
    if expression in data.columns:
        column = data[expression]
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            raise ValueError(f"{what}: the column {expression!r} is not numeric")
        values = column.to_numpy(float)
    else:
        parsed = quote_formula(ParsedFormula(response="", fixed=expression, random=()), data.columns)
        try:
            with np.errstate(divide="ignore", invalid="ignore"):  # log(0) and the like: reported below
                matrix = formulaic.model_matrix(
                    f"0 + {python_powers(f'I({parsed.fixed})')}", data, na_action="ignore"
                )
        except Exception as err:  # formulaic raises several kinds; the message names the expression
            raise ValueError(f"cannot evaluate {what} on the data: {err}") from None
        if matrix.shape[1] != 1:
            raise ValueError(f"{what} is not numeric: it gives {matrix.shape[1]} columns")
        values = np.asarray(matrix, float)[:, 0]
    if values.shape != (len(data),) or not np.all(np.isfinite(values)):
        bad = int(np.sum(~np.isfinite(values))) if values.shape == (len(data),) else len(data)
        raise ValueError(f"{what} has {bad} missing or non-finite row(s)")
    return values


def _argument_values(value: str | npt.ArrayLike, data: pd.DataFrame) -> Float[np.ndarray, " n"]:
    """The ``offset=`` part (n,) of the rows of ``data``: a column or an expression of
    columns, or an array (n,) (finite)."""
    if isinstance(value, str):
        return offset_values(value, data, f"offset={value!r}")
    array = np.asarray(value, float)
    if array.shape != (len(data),):
        raise ValueError(f"offset must have one value per row ({len(data)}), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"the offset has {int(np.sum(~np.isfinite(array)))} missing or non-finite row(s)")
    return array
