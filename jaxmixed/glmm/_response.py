"""A GLMM's response from lme4's spellings: ``cbind(successes, failures)``, a 0/1 or
proportion column (binomial, trials as ``weights``), or counts (Poisson)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["RESPONSE", "WEIGHTS", "OFFSET", "glmm_frame"]

# Columns of the working frame (a data frame holding one of these names is refused).
RESPONSE, WEIGHTS, OFFSET = "jaxmixed_glmm_response", "jaxmixed_glmm_weights", "jaxmixed_glmm_offset"
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


def _evaluate(expression: str, data: pd.DataFrame) -> np.ndarray:
    """A column or an arithmetic expression of columns (``size - incidence``), as numbers:
    a two-level (or boolean) column as R's glm reads it, its first level 0 and the other 1."""
    if expression in data.columns:
        column = data[expression]
    else:
        try:
            column = pd.Series(data.eval(expression))
        except Exception as err:  # pandas raises several kinds; the message names the expression
            raise ValueError(f"cannot evaluate {expression!r} of the response on the data: {err}") from None
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        levels = list(column.cat.categories) if isinstance(column.dtype, pd.CategoricalDtype) else sorted(column.unique())
        if len(levels) != 2:
            raise ValueError(
                f"the response {expression!r} is categorical with {len(levels)} levels; a binomial "
                "response needs 2 (the first is failure, as in R)"
            )
        values = (column == levels[1]).to_numpy(float)
    else:
        values = column.to_numpy(float)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the response {expression!r} has {int(np.sum(~np.isfinite(values)))} missing or non-finite row(s)")
    return values


def glmm_frame(
    formula: str,
    data: pd.DataFrame,
    weights: str | np.ndarray | None,
    offset: str | np.ndarray | None,
    *,
    binomial: bool,
) -> tuple[str, pd.DataFrame, str]:
    """(the formula with the working response, the data with the working columns, the
    response's name as the user wrote it). ``cbind(k, f) ~ …`` (binomial only) becomes
    the proportion k/(k + f) with k + f trials as prior weights (``weights`` must then be
    None)."""
    if "~" not in formula:
        raise ValueError(f"the formula needs a response and '~', got {formula!r}")
    lhs, rhs = formula.split("~", 1)
    if "offset(" in rhs.replace(" ", ""):
        raise ValueError("offset() in the formula is not read yet: pass offset= (a column name or an array)")
    clash = {RESPONSE, WEIGHTS, OFFSET} & set(map(str, data.columns))
    if clash:
        raise ValueError(f"the data has a column named {sorted(clash)[0]!r}, which jaxmixed uses itself; rename it")
    frame = data.copy()
    match = _CBIND.match(lhs)
    if match and not binomial:
        raise ValueError("cbind(successes, failures) is a binomial response: use family='binomial'")
    if match:
        args = _split_arguments(match.group("args"))
        if len(args) != 2:
            raise ValueError(f"cbind() of a binomial response takes (successes, failures), got {lhs.strip()!r}")
        if weights is not None:
            raise ValueError("cbind(successes, failures) gives the trials: weights= must not be given too")
        k, f = (_evaluate(a, data) for a in args)
        trials = k + f
        if np.any(trials <= 0):
            raise ValueError(
                f"cbind(): {int(np.sum(trials <= 0))} row(s) have no trials (successes + failures = 0); "
                "drop them (they carry no information)"
            )
        frame[RESPONSE] = k / trials
        frame[WEIGHTS] = trials
    else:
        frame[RESPONSE] = _evaluate(lhs.strip(), data)
        frame[WEIGHTS] = 1.0 if weights is None else _column_or_array(weights, data, "weights")
    if weights is not None and not match:
        w = frame[WEIGHTS].to_numpy(float)
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"weights must be positive and finite: {int(np.sum(~(np.isfinite(w) & (w > 0))))} row(s) are not")
    if offset is not None:
        values = _column_or_array(offset, data, "offset")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"the offset has {int(np.sum(~np.isfinite(values)))} missing or non-finite row(s)")
        frame[OFFSET] = values
    return f"{RESPONSE} ~ {rhs}", frame, lhs.strip()


def _column_or_array(value: str | np.ndarray, data: pd.DataFrame, what: str) -> np.ndarray:
    if isinstance(value, str):
        if value not in data.columns:
            raise ValueError(f"{what}={value!r} is not a column of the data")
        return data[value].to_numpy(float)
    array = np.asarray(value, float)
    if array.shape != (len(data),):
        raise ValueError(f"{what} must have one value per row ({len(data)}), got shape {array.shape}")
    return array
