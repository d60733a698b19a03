"""Which columns of the data a formula reads.

Every part of a formula (response, fixed part, each random term) is read by
formulaic's parser; its variables are matched to the data's columns. The
answer, with the formula's non-Python names quoted, is an
:class:`AnalysedFormula`, cached per formula and column names (repeated fits
of one model ask again).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import formulaic
from formulaic.parser.types import Factor
from formulaic.transforms import TRANSFORMS
from formulaic.utils.variables import get_required_variables

from ._formula import ParsedFormula
from ._quoting import quote_formula
from ._rnames import python_powers

__all__ = ["AnalysedFormula", "analyse_columns", "expression_columns"]


@dataclasses.dataclass(frozen=True)
class AnalysedFormula:
    """A formula read against the data's column names.

    Attributes:
        formula: the parsed formula, column names that are not Python names
            in backticks and R's ``^`` inside calls written ``**`` (what
            formulaic is given).
        used: every column the formula reads, grouping columns included.
        plain: the columns read as they are (not inside Python code such as
            ``np.log(x)``): these must be numbers or categories themselves.
    """

    formula: ParsedFormula
    used: frozenset[str]
    plain: frozenset[str]


def analyse_columns(parsed: ParsedFormula, columns: tuple[Any, ...]) -> AnalysedFormula:
    """The :class:`AnalysedFormula` of ``parsed`` for data with ``columns``."""
    try:
        return _analyse_cached(parsed, columns)
    except TypeError:  # an unhashable column label: no cache
        return _analyse(parsed, columns)


def _analyse(parsed: ParsedFormula, columns: tuple[Any, ...]) -> AnalysedFormula:
    quoted = _with_python_powers(quote_formula(parsed, columns))
    used, plain = set(), set()
    for expr in [quoted.response, quoted.fixed] + [t.expr for t in quoted.random]:
        for name, as_is in _required_variables(expr):
            col = _resolve_variable(name, as_is, columns)
            used.add(col)
            if as_is:
                plain.add(col)
    for term in quoted.random:
        used |= set(term.group)
    return AnalysedFormula(quoted, frozenset(used), frozenset(plain))


_analyse_cached = functools.lru_cache(maxsize=64)(_analyse)


def expression_columns(expr: str, columns: tuple[Any, ...]) -> frozenset[str]:
    """The columns of data with ``columns`` that one expression reads (an offset's
    ``log(size)``, evaluated as ``I(expr)``): ``expr`` itself if it names a column."""
    if expr in columns:
        return frozenset({expr})
    quoted = quote_formula(ParsedFormula(response="", fixed=expr, random=()), columns).fixed
    return frozenset(
        _resolve_variable(name, as_is, columns) for name, as_is in _required_variables(python_powers(f"I({quoted})"))
    )


def _with_python_powers(parsed: ParsedFormula) -> ParsedFormula:
    """``parsed`` with R's ``^`` inside calls (``I(x^2)``) written as Python's
    ``**``: formulaic would compute XOR (see ``_rnames.python_powers``)."""
    return dataclasses.replace(
        parsed,
        response=python_powers(parsed.response),
        fixed=python_powers(parsed.fixed),
        random=tuple(dataclasses.replace(t, expr=python_powers(t.expr)) for t in parsed.random),
    )


@functools.lru_cache(maxsize=256)
def _required_variables(expr: str) -> frozenset[tuple[str, bool]]:
    """The variables that ``expr`` uses, as (name, used as it is) pairs.

    Names are not cut at dots (formulaic's ``required_variables`` reads
    ``x.sq`` as ``x``); :func:`_resolve_variable` matches them to columns.
    """
    try:
        # Formula.from_spec is what Formula(expr) calls (the constructor dispatches to it).
        formula = formulaic.Formula.from_spec(expr)
    except Exception as err:  # formulaic's parser errors vary by version
        raise ValueError(f"cannot parse the formula part {expr!r}: {err}") from err
    out = set()
    for term in formula:
        for factor in term.factors:
            if factor.eval_method == Factor.EvalMethod.LOOKUP:
                out.add((factor.expr, True))
            elif factor.eval_method == Factor.EvalMethod.PYTHON:
                out |= {(str(v), False) for v in _python_variables(factor.expr)}
    return frozenset(out)


def _python_variables(expr: str) -> set[str]:
    """Variables of a Python factor, less formulaic's transforms (``np``, ``C``)."""
    try:
        variables = get_required_variables(expr, TRANSFORMS)
    except Exception:  # malformed code: formulaic reports it when it evaluates
        return set()
    return {str(v) for v in variables if v.split(".", 1)[0] not in TRANSFORMS}


def _resolve_variable(name: str, as_is: bool, columns: tuple[Any, ...]) -> str:
    """The column a variable refers to: the whole name if it is a column
    (``x.sq``), else, in Python code, the part before the first dot
    (``x.fillna`` → ``x``)."""
    if name in columns or as_is:
        return name
    return name.split(".", 1)[0]
