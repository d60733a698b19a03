"""Model matrices by formulaic: the builder for every formula.

The formula's parts (already quoted, see ``_quoting``) go to
``formulaic.model_matrix``; the column names come back in the user's
spelling as R writes them (``_rnames``: ``(Intercept)``, ``recipeB``), and the
model specs, which ``predict`` calls on new data, give those names too. The
fixed part's terms (R's labels, their columns and factors) are read from
formulaic's model spec.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import formulaic
import numpy as np
import pandas as pd
from formulaic.parser.types import Factor

from ._formula import ParsedFormula, RandomTerm
from ._matrices import FixedPart, FixedTerm, ModelMatrix, ModelSpec
from ._quoting import unquoted_name, unquoted_names
from ._rnames import r_names
from ._validation import shown_names

__all__ = ["FormulaicBuilder", "full_dummies"]


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
                f"{mm.lhs.shape[1]} columns {shown_names(list(mm.lhs.columns))} (it is not numeric): convert it "
                "to numbers"
            )
        y = np.asarray(mm.lhs, dtype=float).reshape(-1)
        X = _named_matrix(mm.rhs, parsed.fixed)
        terms = _fixed_terms(mm.rhs.model_spec, parsed.fixed)
        return FixedPart(response=response, y=y, X=X, terms=terms, frame=data)

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
        out.append("0 + " + ":".join(_formula_factor(f) for f in term.factors))
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


def _user_spelling(names: list[str], expr: str) -> tuple[str, ...]:
    """formulaic's names of columns or terms of ``expr`` in the user's spelling
    (quoting undone) as R writes them (:func:`~._rnames.r_names`)."""
    unquoted = unquoted_names(names, expr)
    return r_names([unquoted.get(c, c) for c in names])


def _named_matrix(mm: Any, expr: str) -> ModelMatrix:
    """formulaic's model matrix ``mm`` of ``expr``, with R's column names
    (and a spec that gives them; formulaic's own when no name changes)."""
    formulaic_names: list[str] = list(mm.columns)
    columns = _user_spelling(formulaic_names, expr)
    renamed = tuple((a, b) for a, b in zip(formulaic_names, columns, strict=True) if a != b)
    spec = _RenamedSpec(mm.model_spec, renamed) if renamed else mm.model_spec
    return ModelMatrix(values=np.asarray(mm, dtype=float), columns=columns, spec=spec)


def _fixed_terms(spec: Any, expr: str) -> tuple[FixedTerm, ...]:
    """The terms of formulaic's model ``spec`` of the fixed part ``expr``: R's
    label, column positions, factors and their kinds (numeric or categorical)."""
    kinds = {str(f): state[0] for f, state in spec.encoder_state.items()}
    out, start = [], 0
    for structure in spec.structure:
        term, n_columns = structure.term, len(structure.columns)
        columns = tuple(range(start, start + n_columns))
        start += n_columns
        if str(term) == "1":
            out.append(FixedTerm("(Intercept)", columns, (), ()))
            continue
        factors = [f for f in term.factors if f.eval_method != Factor.EvalMethod.LITERAL]
        names = _user_spelling([f.expr for f in factors], expr)
        numeric = tuple(kinds.get(f.expr) != Factor.Kind.CATEGORICAL for f in factors)
        label = ":".join(names)
        quoted = ":".join(_formula_factor(f) for f in factors)
        out.append(FixedTerm(label, columns, names, numeric, None if all(numeric) else quoted))
    return tuple(out)


def _formula_factor(factor: Any) -> str:
    """A factor of a term as formula text (a name that needs them in backticks)."""
    if factor.eval_method == Factor.EvalMethod.LOOKUP and not factor.expr.isidentifier():
        return f"`{factor.expr}`"
    return factor.expr


def full_dummies(term: FixedTerm, frame: pd.DataFrame) -> np.ndarray:
    """The term's full dummy coding (n, k) of the rows of ``frame``: R's
    ``model.matrix(~ 0 + term)``, one column per cell of its categorical
    factors (times its numeric factors), whatever the contrasts."""
    assert term.expr is not None, "a term with categorical factors has its formula text"
    mm = formulaic.model_matrix(f"0 + {term.expr}", frame, na_action="raise")
    return np.asarray(mm, dtype=float)
