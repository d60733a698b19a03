"""The model matrices of a formula, and the interface of the two builders that make them.

A builder turns the (validated, complete) rows of the data into the fixed
part (response and X) and each random term's Z blocks. Two implement
:class:`MatrixBuilder`: formulaic's (``_formulaic``), which reads any
formula, and a numpy fast path for sums of plain numeric columns
(``_numeric``), which gives the same matrices, names and ``predict`` specs in
microseconds. ``build_design`` picks one per formula and data, once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from jaxtyping import Float

from ._formula import RandomTerm

__all__ = ["FixedPart", "FixedTerm", "MatrixBuilder", "ModelMatrix", "ModelSpec"]


class ModelSpec(Protocol):
    """What makes a model matrix again for new data: formulaic's model spec, or
    a stand-in that gives the same columns (``_numeric.NumericSpec``, or
    ``_formulaic``'s spec that renames formulaic's columns)."""

    def get_model_matrix(self, data: Any, **kwargs: Any) -> Any:
        """The model matrix (n, k) of the rows of ``data``, as a DataFrame or
        formulaic's ``ModelMatrix`` (a DataFrame too), columns by name."""
        ...


@dataclasses.dataclass(frozen=True)
class ModelMatrix:
    """One model matrix and what is needed to make it again for new data.

    Attributes:
        values: (n, k) float64, one column per model-matrix column.
        columns: the k column names, as R writes them (``(Intercept)``,
            ``x.1``, ``C(g)b``: see ``_rnames``).
        spec: an object whose ``get_model_matrix(newdata)`` gives the same
            columns for new data (formulaic's model spec or a stand-in); None
            for array input, which has no formula to read new data with.
    """

    values: Float[np.ndarray, "n k"]
    columns: tuple[str, ...]
    spec: ModelSpec | None


@dataclasses.dataclass(frozen=True)
class FixedTerm:
    """One term of the fixed part, as R's ``terms`` labels it.

    Attributes:
        label: R's term label (``recipe``, ``recipe:temperature``,
            ``I(IQ^2)``); ``(Intercept)`` for the intercept.
        columns: the positions of its columns in the fixed-effects matrix
            (in a :class:`~._design.Design`, in ``fixed_names``).
        factors: its factors (variables of the formula), R's spelling; none
            for the intercept. A term is contained in another when its
            factors are among the other's (marginality).
        numeric: per factor, whether it is numeric (else categorical), for
            lmerTest's containment rule.
        expr: the term as formulaic reads it (quoted names in backticks), to
            make its full dummy coding (``0 + expr``); None for a term that
            needs none (numeric factors only).
    """

    label: str
    columns: tuple[int, ...]
    factors: tuple[str, ...]
    numeric: tuple[bool, ...]
    expr: str | None = None

    @property
    def is_intercept(self) -> bool:
        return not self.factors


@dataclasses.dataclass(frozen=True)
class FixedPart:
    """The response and the fixed-effects matrix, before any check.

    Attributes:
        response: the response's name as the user wrote it.
        y: (n,) float64 response (may still hold non-finite values).
        X: the fixed-effects model matrix (n, p), aliased columns included.
        terms: the fixed part's terms, their columns positions in ``X``.
        frame: the rows the builder read, when a term's full dummy coding
            must be made from them (categorical factors); else None.
    """

    response: str
    y: Float[np.ndarray, " n"]
    X: ModelMatrix
    terms: tuple[FixedTerm, ...]
    frame: pd.DataFrame | None = None


class MatrixBuilder(Protocol):
    """What ``build_design`` needs from a way of making model matrices.

    ``compact_frame``: whether it wants the data cut to the used columns and
    indexed 0..n-1 (formulaic reads every column it is given) rather than the
    frame as it is when no row is dropped.
    """

    compact_frame: ClassVar[bool]

    def fixed(self, data: pd.DataFrame) -> FixedPart:
        """The response and fixed-effects matrix of the formula, rows of ``data``."""
        ...

    def terms(self, bar: RandomTerm, data: pd.DataFrame) -> tuple[ModelMatrix, ...]:
        """The Z blocks of the lme4 terms of ``bar``: one for ``(x | g)``, and
        for ``(x || g)`` lme4's expansion, the intercept and each term alone."""
        ...
