"""The design layer: formulas and data frames to the pure layer's arrays (host side).

This is where pandas and formulaic live; :mod:`jaxmixed.core` never imports
them. The steps, in order:

1. ``parse_formula(formula)`` → :class:`ParsedFormula`: lme4's bars split off
   (``(x | g)``, ``(x || g)``, ``g/h``, ``g:h``) into :class:`RandomTerm` s.
2. ``build_design(formula, data)`` → ``(Design, ModelArrays)``: the fixed-effects
   matrix (formulaic, or a numpy fast path for plain numeric columns), each
   grouping factor's levels, Z columns and covariance structure, the rows kept;
   validation with errors that name the problem; with ``allow_offsets``, the
   ``offset()`` terms and ``offset=`` summed on the rows kept (``_offsets``,
   which GLMMs share). ``design_from_arrays(y, X, Z, groups)`` does the same
   from arrays.
3. ``prepare(design, arrays)`` → :class:`jaxmixed.core.ModelData`, the input of
   the pure statistics.
"""

from ._design import Design, ModelArrays, build_design, design_from_arrays
from ._formula import FormulaError, ParsedFormula, RandomTerm, parse_formula
from ._prepare import prepare

__all__ = [
    "Design",
    "FormulaError",
    "ModelArrays",
    "ParsedFormula",
    "RandomTerm",
    "build_design",
    "design_from_arrays",
    "parse_formula",
    "prepare",
]
