"""A GLMM's response and offsets from lme4's spellings: ``cbind(successes, failures)``, a 0/1
or proportion column (binomial, trials as ``weights``), or counts (Poisson); ``offset(expr)``
terms of the formula and the ``offset=`` argument, summed as lme4 sums them (the design
layer's ``_offsets``, which the linear model shares)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd

from ..design._offsets import OFFSET, Offsets, split_offsets

__all__ = ["RESPONSE", "WEIGHTS", "GLMMFrame", "Response", "glmm_frame"]

# Columns of the working frame (a data frame holding one of these names, or the design
# layer's OFFSET, is refused).
RESPONSE, WEIGHTS = "jaxmixed_glmm_response", "jaxmixed_glmm_weights"
_CBIND = re.compile(r"^\s*cbind\s*\((?P<args>.*)\)\s*$")


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
class GLMMFrame:
    """What ``glmm_frame`` gives: the working ``formula`` (response, offsets taken out), the
    ``frame`` (the data and the working columns), the ``response`` and the ``offsets``."""

    formula: str
    frame: pd.DataFrame
    response: Response
    offsets: Offsets


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
    if offset is not None and not isinstance(offset, str):  # a list or a Series: an array, as fit_reml takes it
        offset = np.asarray(offset, dtype=float).reshape(-1)
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
    """A column of ``data``, or an array (n,)."""
    if isinstance(value, str):
        if value not in data.columns:
            raise ValueError(f"{what}={value!r} is not a column of the data")
        return data[value].to_numpy(float)
    array = np.asarray(value, float)
    if array.shape != (len(data),):
        raise ValueError(f"{what} must have one value per row ({len(data)}), got shape {array.shape}")
    return array
