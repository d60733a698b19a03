"""A GLMM's response and offsets from lme4's spellings: ``cbind(successes, failures)``, a 0/1
or proportion column (binomial, trials as ``weights``), or counts (Poisson); ``offset(expr)``
terms of the formula and the ``offset=`` argument, summed as lme4 sums them."""

from __future__ import annotations

import dataclasses
import re

import formulaic
import numpy as np
import pandas as pd
from jaxtyping import Float

from ..design._formula import ParsedFormula, _split_top_level
from ..design._quoting import quote_formula
from ..design._rnames import python_powers

__all__ = ["OFFSET", "RESPONSE", "WEIGHTS", "GLMMFrame", "Offsets", "Response", "glmm_frame", "split_offsets"]

# Columns of the working frame (a data frame holding one of these names is refused).
RESPONSE, WEIGHTS, OFFSET = "jaxmixed_glmm_response", "jaxmixed_glmm_weights", "jaxmixed_glmm_offset"
_CBIND = re.compile(r"^\s*cbind\s*\((?P<args>.*)\)\s*$")
_OFFSET_CALL = re.compile(r"(?<![\w.])offset\s*\(")


def _split_arguments(text: str) -> list[str]:
    """The comma-separated arguments of a call, commas inside brackets kept."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]



@dataclasses.dataclass(frozen=True)
class Response:
    """A GLMM's response as the user wrote it (``text``, the formula's left-hand side) and
    how it was read: ``kind`` "cbind" (``parts``: the expressions of successes and failures),
    "categorical" (``levels``: its two labels, failure first, as R's glm reads a factor) or
    "numeric" (0/1, proportions with trials as weights, or counts)."""

    text: str
    kind: str = "numeric"
    parts: tuple[str, ...] = ()
    levels: tuple = ()


@dataclasses.dataclass(frozen=True, eq=False)
class Offsets:
    """The offsets of a GLMM: ``terms``, the expressions of the formula's ``offset(expr)``
    terms; ``argument``, the ``offset=`` argument (a column name or expression, or an array
    (n,) of the fitted rows); ``values`` (n,), their sum on the fitted rows (lme4 sums them),
    None when there is none."""

    terms: tuple[str, ...] = ()
    argument: str | np.ndarray | None = None
    values: Float[np.ndarray, " n"] | None = None

    def on(self, data: pd.DataFrame, argument: str | np.ndarray | None = None) -> Float[np.ndarray, " m"]:
        """The total offset (m,) of the rows of ``data``: each ``offset(expr)`` term evaluated
        on them, plus the ``offset=`` part: ``argument`` if given (a column name or expression,
        or an array (m,)), else the fitted ``argument`` when it is a column name or
        expression. A model fitted with an array ``offset=`` needs ``argument`` (unlike lme4's
        predict, which drops the argument's offset on new data)."""
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
            total = total + _column_or_array(part, data, "offset")
        return total


@dataclasses.dataclass(frozen=True, eq=False)
class GLMMFrame:
    """What ``glmm_frame`` gives: the working ``formula`` (response, offsets taken out), the
    ``frame`` (the data and the working columns), the ``response`` and the ``offsets``."""

    formula: str
    frame: pd.DataFrame
    response: Response
    offsets: Offsets


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
                matrix = formulaic.model_matrix(f"0 + {python_powers(f'I({parsed.fixed})')}", data, na_action="ignore")
        except Exception as err:  # formulaic raises several kinds; the message names the expression
            raise ValueError(f"cannot evaluate {what} on the data: {err}") from None
        if matrix.shape[1] != 1:
            raise ValueError(f"{what} is not numeric: it gives {matrix.shape[1]} columns")
        values = np.asarray(matrix, float)[:, 0]
    if values.shape != (len(data),) or not np.all(np.isfinite(values)):
        bad = int(np.sum(~np.isfinite(values))) if values.shape == (len(data),) else len(data)
        raise ValueError(f"{what} has {bad} missing or non-finite row(s)")
    return values


def _evaluate(expression: str, data: pd.DataFrame) -> tuple[np.ndarray, tuple]:
    """(numbers (n,), levels) of a response column or an arithmetic expression of columns
    (``size - incidence``): a two-level (or boolean) column as R's glm reads it, its first
    level 0 and the other 1 (``levels``: the two labels; () for a numeric response)."""
    if expression in data.columns:
        column = data[expression]
    else:
        try:
            column = pd.Series(data.eval(expression))
        except Exception as err:  # pandas raises several kinds; the message names the expression
            raise ValueError(f"cannot evaluate {expression!r} of the response on the data: {err}") from None
    levels: tuple = ()
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        cats = list(column.cat.categories) if isinstance(column.dtype, pd.CategoricalDtype) else sorted(column.unique())
        if len(cats) != 2:
            raise ValueError(
                f"the response {expression!r} is categorical with {len(cats)} levels; a binomial "
                "response needs 2 (the first is failure, as in R)"
            )
        values, levels = (column == cats[1]).to_numpy(float), tuple(cats)
    else:
        values = column.to_numpy(float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the response {expression!r} has {int(np.sum(~np.isfinite(values)))} missing or non-finite row(s)")
    return values, levels


def glmm_frame(
    formula: str,
    data: pd.DataFrame,
    weights: str | np.ndarray | None,
    offset: str | np.ndarray | None,
    *,
    binomial: bool,
) -> GLMMFrame:
    """The working formula and frame of a GLMM. ``cbind(k, f) ~ …`` (binomial only) becomes
    the proportion k/(k + f) with k + f trials as prior weights (``weights`` must then be
    None); ``offset(expr)`` terms leave the formula and, with ``offset``, make the
    ``OFFSET`` column (their sum)."""
    if "~" not in formula:
        raise ValueError(f"the formula needs a response and '~', got {formula!r}")
    lhs, rhs = formula.split("~", 1)
    rhs, terms = split_offsets(rhs)
    clash = {RESPONSE, WEIGHTS, OFFSET} & set(map(str, data.columns))
    if clash:
        raise ValueError(f"the data has a column named {sorted(clash)[0]!r}, which jaxmixed uses itself; rename it")
    frame = data.copy()
    response = _read_response(lhs.strip(), data, frame, weights, binomial=binomial)
    if weights is not None and response.kind != "cbind":
        w = frame[WEIGHTS].to_numpy(float)
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"weights must be positive and finite: {int(np.sum(~(np.isfinite(w) & (w > 0))))} row(s) are not")
    offsets = Offsets(terms, offset)
    if terms or offset is not None:
        values = offsets.on(data, offset)
        frame[OFFSET] = values
        offsets = Offsets(terms, offset, values)
    return GLMMFrame(f"{RESPONSE} ~ {rhs}", frame, response, offsets)


def _read_response(
    lhs: str, data: pd.DataFrame, frame: pd.DataFrame, weights: str | np.ndarray | None, *, binomial: bool
) -> Response:
    """Writes the ``RESPONSE`` and ``WEIGHTS`` columns of ``frame`` and says how ``lhs`` was read."""
    match = _CBIND.match(lhs)
    if match and not binomial:
        raise ValueError("cbind(successes, failures) is a binomial response: use family='binomial'")
    if not match:
        frame[RESPONSE], levels = _evaluate(lhs, data)
        if levels and not binomial:
            raise ValueError(
                f"the response {lhs!r} is a two-level factor: that is a binomial response "
                "(family='binomial'); a Poisson response counts events"
            )
        frame[WEIGHTS] = 1.0 if weights is None else _column_or_array(weights, data, "weights")
        return Response(lhs, "categorical" if levels else "numeric", levels=levels)
    args = _split_arguments(match.group("args"))
    if len(args) != 2:
        raise ValueError(f"cbind() of a binomial response takes (successes, failures), got {lhs!r}")
    if weights is not None:
        raise ValueError("cbind(successes, failures) gives the trials: weights= must not be given too")
    k, f = (_evaluate(a, data)[0] for a in args)
    for part, values in zip(args, (k, f), strict=True):
        # whole numbers up to round-off in expressions such as (1 - p) * n
        off = np.abs(values - np.round(values)) > 1e-7 * np.maximum(1.0, np.abs(values))
        bad = ~np.isfinite(values) | (values < 0) | off
        if np.any(bad):
            raise ValueError(
                f"cbind(): {part!r} must count events (whole numbers ≥ 0); {int(np.sum(bad))} row(s) "
                f"are not (first: {values[bad][0]:g})"
            )
    trials = k + f
    if np.any(trials <= 0):
        raise ValueError(
            f"cbind(): {int(np.sum(trials <= 0))} row(s) have no trials (successes + failures = 0); "
            "drop them (they carry no information)"
        )
    frame[RESPONSE] = k / trials
    frame[WEIGHTS] = trials
    return Response(lhs, "cbind", parts=tuple(args))


def _column_or_array(value: str | np.ndarray, data: pd.DataFrame, what: str) -> np.ndarray:
    """A column of ``data`` (or, for the offset, an expression of columns), or an array (n,)."""
    if isinstance(value, str):
        if what == "offset":
            return offset_values(value, data, f"offset={value!r}")
        if value not in data.columns:
            raise ValueError(f"{what}={value!r} is not a column of the data")
        return data[value].to_numpy(float)
    array = np.asarray(value, float)
    if array.shape != (len(data),):
        raise ValueError(f"{what} must have one value per row ({len(data)}), got shape {array.shape}")
    if what == "offset" and not np.all(np.isfinite(array)):
        raise ValueError(f"the offset has {int(np.sum(~np.isfinite(array)))} missing or non-finite row(s)")
    return array
