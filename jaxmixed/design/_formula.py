"""Parsing of lme4-style mixed-model formulas.

jaxmixed parses the random-effects bars itself and leaves everything else to
formulaic: ``"y ~ x + (x | g)"`` becomes the fixed-effects formula ``"x"`` and
one random-effects term with the model formula ``"x"`` (an intercept is implied,
as in lme4) grouped by ``g``.
"""

from __future__ import annotations

import dataclasses
import functools
import re

__all__ = ["ParsedFormula", "RandomTerm", "parse_formula"]

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$")
_BACKTICKED = re.compile(r"^`(?P<name>[^`]+)`$")
_Q_CALL = re.compile(r"""^Q\(\s*(?P<q>['"])(?P<name>.+)(?P=q)\s*\)$""")
_QUOTES = "`'\""


class FormulaError(ValueError):
    """A formula that jaxmixed cannot parse."""


@dataclasses.dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(expr | group)`` or ``(expr || group)``.

    Attributes:
        expr: the term's model formula as formulaic reads it (``"1 + Days"``).
        group: the grouping factor's column names; several names mean their
            interaction (``("batch", "cask")`` for ``batch:cask``).
        name: the grouping factor's name as lme4 prints it (``"cask:batch"``
            for the inner factor of ``batch/cask``).
        correlated: False for ``||``: a diagonal covariance matrix.
    """

    expr: str
    group: tuple[str, ...]
    name: str
    correlated: bool = True


@dataclasses.dataclass(frozen=True)
class ParsedFormula:
    """A formula split into response, fixed part and random-effects terms."""

    response: str
    fixed: str
    random: tuple[RandomTerm, ...]


def _skip_quoted(text: str, i: int) -> int:
    """Index just past the quoted name or string (`...`, '...', "...") at ``text[i]``."""
    end = text.find(text[i], i + 1)
    if end < 0:
        raise FormulaError(f"unclosed {text[i]} in {text!r}")
    return end + 1


def _split_top_level(text: str, sep: str) -> list[str]:
    """Splits ``text`` on ``sep`` where it is outside all parentheses and quotes."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in _QUOTES:
            i = _skip_quoted(text, i)
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced parentheses in {text!r}")
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced parentheses in {text!r}")
    parts.append(text[start:])
    return parts


def _closing_paren(text: str, i: int) -> int:
    """Index just past the parenthesis that closes the one at ``text[i]``."""
    depth, j = 1, i + 1
    while j < len(text) and depth:
        if text[j] in _QUOTES:
            j = _skip_quoted(text, j)
            continue
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        j += 1
    if depth:
        raise FormulaError(f"unbalanced parentheses in {text!r}")
    return j


def _find_bar_terms(rhs: str) -> tuple[str, list[str]]:
    """Removes the parenthesised bar terms from ``rhs``.

    Returns the remaining (fixed) text and the contents of each bar term.
    """
    fixed_chars: list[str] = []
    bars: list[str] = []
    i = 0
    while i < len(rhs):
        if rhs[i] in _QUOTES:
            j = _skip_quoted(rhs, i)
            fixed_chars.extend(rhs[i:j])
            i = j
        elif rhs[i] == "(":
            j = _closing_paren(rhs, i)
            inner = rhs[i + 1 : j - 1]
            if len(_split_top_level(inner, "|")) > 1:
                # A bar term: it must be joined to the rest by '+'.
                before = "".join(fixed_chars).rstrip()
                if before and not before.endswith("+"):
                    raise FormulaError(
                        f"a random-effects term ({inner}) must be added with '+', "
                        f"found {before[-1]!r} before it"
                    )
                bars.append(inner)
                fixed_chars = list(before[:-1] if before.endswith("+") else before)
            else:
                fixed_chars.extend(rhs[i:j])
            i = j
        else:
            fixed_chars.append(rhs[i])
            i += 1
    fixed = "".join(fixed_chars).strip()
    fixed = re.sub(r"^\+\s*", "", fixed)
    return fixed, bars


def _column_name(text: str, group: str) -> str:
    """The column named by ``text``: a plain name, `a name` or Q("a name")."""
    text = text.strip()
    quoted = _BACKTICKED.match(text) or _Q_CALL.match(text)
    if quoted:
        return quoted.group("name")
    if not _NAME.match(text):
        raise FormulaError(
            f"grouping factor {group!r}: {text!r} is not a column name (use plain "
            "names, `quoted names` or Q(\"quoted names\") joined by ':' or '/')"
        )
    return text


def _group_names(group: str) -> list[tuple[tuple[str, ...], str]]:
    """Expands ``a/b/c`` into ``a``, ``b:a`` and ``c:(b:a)`` as lme4 does.

    Returns (columns, lme4 name) pairs; the columns are in the order of the
    name, which is also the order of the parts of the level labels. Names are
    built from the column names (without backticks or ``Q("…")``).
    """
    out: list[tuple[tuple[str, ...], str]] = []
    for piece in _split_top_level(group, "/"):
        columns = [_column_name(c, group) for c in _split_top_level(piece, ":")]
        piece_name = ":".join(columns)
        if out:
            inner_columns, inner = out[-1]
            name = f"{piece_name}:({inner})" if len(inner_columns) > 1 else f"{piece_name}:{inner}"
            columns = columns + list(inner_columns)
        else:
            name = piece_name
        out.append((tuple(columns), name))
    return out


def parse_formula(formula: str) -> ParsedFormula:
    """Parses an lme4-style formula.

    Supports ``(1 | g)``, ``(x | g)``, ``(0 + x | g)``, ``(x || g)``,
    ``(1 | a/b)`` (``(1 | a) + (1 | a:b)``) and ``(1 | a:b)``; a grouping
    column may be written `with backticks` or as ``Q("with quotes")``.
    Everything outside the bars is passed to formulaic unchanged.
    """
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string, got {type(formula).__name__}")
    return _parse(formula)


@functools.lru_cache(maxsize=128)
def _parse(formula: str) -> ParsedFormula:
    """:func:`parse_formula` of a string, cached: a fit calls it every time
    with the same text, and the result (frozen dataclasses) is immutable.
    (A :class:`FormulaError` is not cached; it is raised again.)"""
    sides = _split_top_level(formula, "~")
    if len(sides) != 2 or not sides[0].strip():
        raise FormulaError(f"formula {formula!r} needs the form 'response ~ terms'")
    response, rhs = sides[0].strip(), sides[1].strip()
    fixed, bars = _find_bar_terms(rhs)
    if len(_split_top_level(fixed, "|")) > 1:
        raise FormulaError(
            f"formula {formula!r} has a bar '|' outside parentheses; write each random-effects "
            "term in parentheses, as lme4 does: (Days | Subject)"
        )
    if not fixed:
        fixed = "1"
    elif re.fullmatch(r"-\s*1", fixed):
        fixed = "0"
    terms: list[RandomTerm] = []
    for bar in bars:
        double = _split_top_level(bar, "||")
        if len(double) == 2:
            expr, group, correlated = double[0], double[1], False
        else:
            single = _split_top_level(bar, "|")
            if len(single) != 2:
                raise FormulaError(f"cannot read the random-effects term ({bar})")
            expr, group, correlated = single[0], single[1], True
        expr, group = expr.strip(), group.strip()
        if not expr or not group:
            raise FormulaError(f"empty side in the random-effects term ({bar})")
        for columns, name in _group_names(group):
            terms.append(RandomTerm(expr, columns, name, correlated))
    return ParsedFormula(response, fixed, tuple(terms))
