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
    data: pd.DataFrame | None = dataclasses.field(repr=False)
    keywords: Mapping[str, Any] = dataclasses.field(repr=False)

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
    return call.function(new_formula, data, **_consistent(call.keywords, changes))


_LOOSE = ("reml", "max_iter", "optimizer")  # fit_reml's settings that FitOptions also holds


def _consistent(recorded: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded arguments with ``changes``, kept consistent with ``options``: new
    options replace the loose settings recorded beside them; a new ``reml`` enters the
    recorded options; other loose settings beside recorded options are an error that says
    to change the options instead (fit_reml refuses the two disagreeing)."""
    keywords = {**recorded, **changes}
    if "options" in changes:
        for name in _LOOSE:
            if name not in changes:
                keywords.pop(name, None)
        return keywords
    options = recorded.get("options")
    if options is None:
        return keywords
    other = sorted(set(changes) & {"max_iter", "optimizer"})
    if other:
        raise ValueError(
            f"this fit was made with options=FitOptions(...), which hold {other}: "
            "change them with update(options=FitOptions(...))"
        )
    if "reml" in changes:
        keywords["options"] = dataclasses.replace(options, reml=changes["reml"])
    return keywords
