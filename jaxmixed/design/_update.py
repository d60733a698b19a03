"""R's ``update.formula`` for lme4's formulas: ``. ~ . + x``, ``. ~ . - (1 | g)``.

A new formula is written against the old one: ``.`` on the left of ``~`` stands for the
old response, and a ``.`` term on the right for all the old terms. Terms then added
(``+ t``) are appended, and terms removed (``- t``) are taken out where the old formula
has them as written (spaces aside). Unlike R, a removal does not expand interactions
first: ``. ~ . - a`` on ``y ~ a * b`` is an error that says to write the formula out,
never a silently different model. ``- 1`` and ``+ 0`` remove the intercept, as in R.
"""

from __future__ import annotations

import re

from ._formula import _QUOTES, FormulaError, _skip_quoted, _split_top_level

__all__ = ["update_formula"]

_DOT = re.compile(r"(?<![\w.])\.(?![\w.])")  # a lone `.`, not part of a name or a number


def update_formula(old: str, new: str) -> str:
    """The formula ``new`` written against ``old``, as R's ``update.formula``.

    Args:
        old: the fitted formula, ``"Reaction ~ Days + (Days | Subject)"``.
        new: ``"~ . - Days"``, ``". ~ . + (1 | g)"``, ``"log(.) ~ ."``, or a whole formula
            (without ``.``, which replaces ``old``).

    Returns:
        The new formula as a string: ``update_formula("y ~ x + (1 | g)", ". ~ . + z")`` is
        ``"y ~ x + (1 | g) + z"``.

    Raises:
        FormulaError: ``new`` removes a term that ``old`` does not have as written, puts
            ``.`` inside a term of its right-hand side (``~ .:z``: R would expand it), or
            either formula lacks its ``~``.
    """
    old_lhs, old_rhs = _sides(old, "the fitted formula")
    lhs, rhs = _sides(new if "~" in new else f". ~ {new}", "the update")
    lhs = lhs.strip() or "."
    response = old_lhs.strip()
    if not re.fullmatch(r"[\w.]+|`[^`]+`", response):  # an expression: keep it whole inside another
        response = f"({response})"
    lhs = _DOT.sub(lambda _: response, lhs) if lhs != "." else old_lhs.strip()
    terms: list[str] = []
    for sign, term in _signed_terms(rhs):
        if term != "." and _DOT.search(term):
            raise FormulaError(
                f"'.' stands for the old terms only as a term of its own (. + x), not inside {term!r}: "
                "write the terms out (e.g. ~ . + x:z)"
            )
        if term == ".":
            terms += [t if s == "+" else f"- {t}" for s, t in _signed_terms(old_rhs)]
        elif sign == "+" and term == "0" or sign == "-" and term == "1":
            terms.append("- 1")
        elif sign == "+" and term == "1":  # the intercept back: drop what removed it
            terms = [t for t in terms if _normal(t) not in {"-1", "0"}]
        elif sign == "+":
            if _normal(term) not in {_normal(t) for t in terms}:
                terms.append(term)
        else:
            terms = _without(terms, term, old)
    return f"{lhs} ~ {' + '.join(terms) if terms else '1'}".replace("+ - ", "- ")


def _sides(formula: str, what: str) -> tuple[str, str]:
    parts = _split_top_level(formula, "~")
    if len(parts) != 2:
        raise FormulaError(f"{what} needs one '~' (response ~ terms), got {formula!r}")
    return parts[0], parts[1]


def _signed_terms(rhs: str) -> list[tuple[str, str]]:
    """The top-level terms of a right-hand side with their signs: ``"x - 1 + (1 | g)"``
    gives ``[("+", "x"), ("-", "1"), ("+", "(1 | g)")]``."""
    out, sign, start, depth, i = [], "+", 0, 0, 0
    text = rhs.strip()
    while i < len(text):
        ch = text[i]
        if ch in _QUOTES:
            i = _skip_quoted(text, i)
            continue
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
        if depth == 0 and ch in "+-" and not _in_number(text, i):
            if text[start:i].strip():
                out.append((sign, text[start:i].strip()))
            sign, start = ch, i + 1
        i += 1
    if text[start:].strip():
        out.append((sign, text[start:].strip()))
    return out


def _in_number(text: str, i: int) -> bool:
    """Whether the sign at ``text[i]`` is an exponent's (``1e-3``), not a term's."""
    return i > 1 and text[i - 1] in "eE" and text[i - 2].isdigit()


def _normal(term: str) -> str:
    return re.sub(r"\s+", "", term)


def _without(terms: list[str], term: str, old: str) -> list[str]:
    kept = [t for t in terms if _normal(t) != _normal(term)]
    if len(kept) == len(terms):
        raise FormulaError(
            f"cannot remove {term!r}: it is not a term of {old!r} as written (its terms: {terms}); "
            "write the new formula out in full"
        )
    return kept
