"""Model matrices by formulaic: the builder for every formula.

The formula's parts (already quoted, see ``_quoting``) go to
``formulaic.model_matrix``; the column names come back in the user's
spelling, and the model specs, which ``predict`` calls on new data, give
those names too.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import formulaic
import numpy as np
import pandas as pd
from formulaic.parser.types import Factor

from ._formula import ParsedFormula, RandomTerm
from ._matrices import FixedPart, ModelMatrix, ModelSpec
from ._quoting import unquoted_name, unquoted_names

__all__ = ["FormulaicBuilder"]


@dataclasses.dataclass(frozen=True)
class FormulaicBuilder:
    """The :class:`~._matrices.MatrixBuilder` of any formula, by formulaic.

    ``parsed``: the formula with its non-Python column names quoted.
    """

    parsed: ParsedFormula
    compact_frame: ClassVar[bool] = True

    def fixed(self, data: pd.DataFrame) -> FixedPart:
        """Response (n,) and fixed-effects matrix (n, p) of ``data``'s rows."""
        parsed = self.parsed
        mm = formulaic.model_matrix(f"{parsed.response} ~ {parsed.fixed}", data, na_action="raise")
        response = unquoted_name(parsed.response)
        if mm.lhs.shape[1] != 1:
            raise ValueError(
                f"the response {response!r} must be one numeric column, but it makes "
                f"{mm.lhs.shape[1]} columns {list(mm.lhs.columns)} (it is not numeric): convert it to numbers"
            )
        y = np.asarray(mm.lhs, dtype=float).reshape(-1)
        return FixedPart(response=response, y=y, X=_named_matrix(mm.rhs, parsed.fixed))

    def terms(self, bar: RandomTerm, data: pd.DataFrame) -> tuple[ModelMatrix, ...]:
        """The Z block (n, k) of each lme4 term of ``bar``."""
        exprs = [bar.expr] if bar.correlated else _split_uncorrelated(bar.expr)
        return tuple(_named_matrix(formulaic.model_matrix(e, data, na_action="raise"), e) for e in exprs)


def _split_uncorrelated(expr: str) -> list[str]:
    """lme4's expansion of ``(expr || g)``: ``1`` if expr has an intercept, then
    ``0 + t`` for each of its other terms (names that need it in backticks)."""
    out = []
    # Formula.from_spec is what Formula(expr) calls (the constructor dispatches to it).
    for term in formulaic.Formula.from_spec(expr):
        if str(term) == "1":
            out.append("1")
            continue
        factors = [
            f"`{f.expr}`"
            if f.eval_method == Factor.EvalMethod.LOOKUP and not f.expr.isidentifier()
            else f.expr
            for f in term.factors
        ]
        out.append("0 + " + ":".join(factors))
    return out


@dataclasses.dataclass(frozen=True)
class _RenamedSpec:
    """A formulaic model spec whose model-matrix columns get the user's names."""

    spec: ModelSpec
    names: tuple[tuple[str, str], ...]

    def get_model_matrix(self, data: Any, **kwargs: Any) -> pd.DataFrame:
        """formulaic's model matrix for ``data``, columns renamed."""
        mm = self.spec.get_model_matrix(data, **kwargs)
        return pd.DataFrame(mm).rename(columns=dict(self.names))


def _named_matrix(mm: Any, expr: str) -> ModelMatrix:
    """formulaic's model matrix ``mm`` of ``expr``, with the user's column names
    (and a spec that gives them; formulaic's own when no name changes)."""
    formulaic_names: list[str] = list(mm.columns)
    names = unquoted_names(formulaic_names, expr)
    spec = _RenamedSpec(mm.model_spec, tuple(names.items())) if names else mm.model_spec
    columns = tuple(names.get(c, c) for c in formulaic_names)
    return ModelMatrix(values=np.asarray(mm, dtype=float), columns=columns, spec=spec)
