"""Column names that formulaic cannot read as they are, in and out of backticks.

R allows names such as ``x.1`` or ``x.sq``; in formulaic's Python-like
formulas they read as attribute access (or not at all). Before a formula goes
to formulaic, such names that are columns of the data are put in backticks
(:func:`quote_formula`); the model-matrix column names formulaic makes from
them get the user's spelling back (:func:`unquoted_names`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ._formula import ParsedFormula, RandomTerm

__all__ = ["quote_formula", "term_label", "unquoted_name", "unquoted_names"]

# Names in formula text: quoted names and strings are matched whole (and kept
# as they are), so that names inside them are not taken for column names.
_NAME_TOKEN = re.compile(r"""`[^`]*`|'[^']*'|"[^"]*"|(?<![\w.])[A-Za-z_.][\w.]*""")
# What _quote_names may have put in backticks: a dotted name.
_DOTTED = re.compile(r"[A-Za-z_.][\w.]*")


def _quote_names(expr: str, columns: set[str]) -> str:
    """``expr`` with backticks around its names that are columns but not
    Python names (``x.1``, ``x.sq``). Calls (``np.log(``) are left alone, as
    are names already quoted."""

    def quote(m: re.Match) -> str:
        tok = m.group(0)
        call = expr[m.end() :].lstrip().startswith("(")
        if tok in columns and not tok.isidentifier() and not call:
            return f"`{tok}`"
        return tok

    return _NAME_TOKEN.sub(quote, expr)


def quote_formula(parsed: ParsedFormula, columns: Iterable[Any]) -> ParsedFormula:
    """``parsed`` with the column names that are not Python names in backticks,
    in the response, the fixed part and every random term's expression."""
    names = {str(c) for c in columns}
    return dataclasses.replace(
        parsed,
        response=_quote_names(parsed.response, names),
        fixed=_quote_names(parsed.fixed, names),
        random=tuple(dataclasses.replace(t, expr=_quote_names(t.expr, names)) for t in parsed.random),
    )


def unquoted_names(names: Sequence[str], expr: str) -> dict[str, str]:
    """formulaic's column names → the user's, for those that differ.

    The backticks that :func:`quote_formula` put around dotted names in
    ``expr`` are taken out of ``names`` (``np.log(`x.1`)`` → ``np.log(x.1)``);
    names the user quoted otherwise keep their quotes.
    """
    quoted = {q for q in re.findall(r"`([^`]*)`", expr) if _DOTTED.fullmatch(q)}
    out = {}
    for name in names:
        new = name
        for q in quoted:
            new = new.replace(f"`{q}`", q)
        if new != name:
            out[name] = new
    return out


def unquoted_name(expr: str) -> str:
    """``expr`` as the user wrote it, without the backticks that quoting added."""
    return unquoted_names([expr], expr).get(expr, expr)


def term_label(bar: RandomTerm) -> str:
    """A random-effects term as the user wrote it: ``(x.1 | g)``, ``(x || g)``."""
    return f"({unquoted_name(bar.expr)} {'|' if bar.correlated else '||'} {bar.name})"
