"""lme4's ``update``: a fit made again with some of its arguments changed.

A fit records its call (:class:`FitCall`: the function, the formula, the data it was
given and the other arguments as given), as R keeps a model's call. ``update`` calls
the function again with the formula rewritten by R's rules
(:func:`jaxmixed.design._update.update_formula`: ``. ~ . + x``) and any argument
replaced: ``fit.update("~ . - Days")``, ``fit.update(reml=False)``,
``fit.update(data=other)``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from ..design._update import update_formula

__all__ = ["FitCall", "update"]


@dataclasses.dataclass(frozen=True, eq=False)
class FitCall:
    """The call that made a fit: ``function`` (``fit_reml`` or ``fit_glmm``), its
    ``formula`` (None for array input), the ``data`` it was given (the DataFrame itself,
    not a copy: changing it in place changes what ``update`` refits) and ``keywords``,
    the other arguments by name (a plain dict, so that results pickle; treat it as
    read-only)."""

    function: Callable[..., Any]
    formula: str | None
    data: pd.DataFrame | None
    keywords: Mapping[str, Any]

    @classmethod
    def record(
        cls, function: Callable[..., Any], formula: str | None, data: pd.DataFrame | None, **keywords: Any
    ) -> FitCall:
        """The call ``function(formula, data, **keywords)``."""
        return cls(function, formula, data, dict(keywords))


def update(call: FitCall | None, formula: str | None = None, **changes: Any) -> Any:
    """``call`` made again with ``formula`` written against the old one (R's
    ``update.formula``; None keeps it) and ``changes`` replacing arguments by name
    (``data=`` too). Returns what the function returns (a new results object).

    Raises:
        ValueError: no recorded call (a result of ``refit`` or of a many-fit table), a
            formula for an array fit, or an argument the function does not take.
    """
    if call is None:
        raise ValueError(
            "this result has no recorded call to update (it came from refit(), a table of many fits "
            "or the pure layer): fit the new model with fit_reml or fit_glmm"
        )
    name = getattr(call.function, "__name__", "the fit")
    known = set(inspect.signature(call.function).parameters)
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"{name} has no argument(s) {unknown}; it takes {sorted(known)}")
    if formula is not None and call.formula is None:
        raise ValueError("this fit was made from arrays, without a formula: change its arrays (y=, X=, ...) instead")
    new_formula = call.formula if formula is None else update_formula(call.formula, formula)  # type: ignore[arg-type]
    data = changes.pop("data", call.data)
    keywords = {**call.keywords, **changes}
    options = keywords.get("options")
    if options is not None and "reml" in changes and "options" not in changes:
        # the recorded options would contradict the new reml (fit_reml refuses that)
        keywords["options"] = dataclasses.replace(options, reml=changes["reml"])
    return call.function(new_formula, data, **keywords)
