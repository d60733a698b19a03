"""Model-matrix column names as R (lme4) writes them, and R's ``^`` in formulas.

formulaic names columns ``Intercept``, ``recipe[T.B]``,
``recipe[T.B]:temperature[T.185]``, ``C(x)[T.b]``, ``I(x ** 2)``; R
(``model.matrix``, hence lme4's ``fixef`` and ``VarCorr``) writes
``(Intercept)``, ``recipeB``, ``recipeB:temperature185``, ``C(x)b`` (as R's
``factor(x)b``) and ``I(x^2)``. The rule, applied to each ``:``-separated part
of a name outside brackets, parentheses and quotes:

- ``Intercept`` is ``(Intercept)``;
- a level in brackets at the end of a part, ``expr[T.lvl]`` (treatment
  contrasts), ``expr[S.lvl]``, ``expr[H.lvl]``, ``expr[D.lvl]`` (formulaic's
  sum, Helmert and difference contrasts) or ``expr[lvl]`` (full dummy coding),
  is written ``exprlvl``; formulaic's polynomial ``expr[.L]`` becomes R's
  ``expr.L``. (R numbers sum and Helmert columns ``x1, x2``; jaxmixed keeps the
  level, which says more.)
- in Python code, ``a ** b`` is written ``a^b`` and ``a / b`` ``a/b``, as R
  deparses them.

When two columns would get the same name, the matrix keeps formulaic's names.

In R's formulas ``^`` inside a call is arithmetic (``I(x^2)`` is x squared);
in Python it is XOR, which formulaic would compute silently for integer
columns. :func:`python_powers` writes such ``^`` as ``**`` before formulaic
reads the formula (``(a + b)^2`` outside calls stays formulaic's term power).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Sequence

from ..core._callers import user_stacklevel

__all__ = ["python_powers", "r_names", "r_spelling"]

_QUOTES = "`'\""
_LEVEL = re.compile(r"^(?P<expr>.*)\[(?:[TSHD]\.)?(?P<level>[^\[\]]*)\]$", re.DOTALL)


def _top_level_split(text: str, sep: str) -> list[str]:
    """``text`` split on ``sep`` outside parentheses, brackets and quotes."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in _QUOTES:
            end = text.find(ch, i + 1)
            i = len(text) if end < 0 else end + 1
            continue
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def _outside_quotes(text: str, pattern: str, repl: str) -> str:
    """``text`` with ``pattern`` (a regex) replaced by ``repl`` outside quotes."""
    pieces = re.split(r"(`[^`]*`|'[^']*'|\"[^\"]*\")", text)
    return "".join(p if k % 2 else re.sub(pattern, repl, p) for k, p in enumerate(pieces))


def _part_spelling(part: str) -> str:
    """One ``:``-separated part of a column name in R's spelling."""
    if part == "Intercept":
        return "(Intercept)"
    m = _LEVEL.match(part)
    expr, level = (m.group("expr"), m.group("level")) if m else (part, "")
    expr = _outside_quotes(expr, r"\s*\*\*\s*", "^")
    expr = _outside_quotes(expr, r"\s+/\s+", "/")
    return expr + level


def r_spelling(name: str) -> str:
    """formulaic's column or term name ``name`` as R writes it (see the module)."""
    return ":".join(_part_spelling(p) for p in _top_level_split(name, ":"))


def r_names(names: Sequence[str]) -> tuple[str, ...]:
    """The R spelling of each of ``names``; a name whose R spelling another column shares
    keeps formulaic's spelling (``y ~ a + ab`` with a numeric ``ab``: ``a[T.b]``, ``ab``),
    with a warning, so that names stay unique."""
    out = [r_spelling(n) for n in names]
    counts = Counter(out)
    clashes = [n for n, r in zip(names, out, strict=True) if counts[r] > 1 and r != n]
    if clashes:
        warnings.warn(
            f"columns {clashes} keep formulaic's names: R's spelling would repeat another column's name",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return tuple(n if counts[r] > 1 and r != n else r for n, r in zip(names, out, strict=True))


def python_powers(expr: str) -> str:
    """``expr`` with each ``^`` inside a call's parentheses (``I(x^2)``,
    ``np.log(x^2)``) written ``**``; outside calls (``(a + b)^2``) and in
    quotes it stays."""
    out, calls, i = [], [], 0
    while i < len(expr):
        ch = expr[i]
        if ch in _QUOTES:
            end = expr.find(ch, i + 1)
            end = len(expr) if end < 0 else end + 1
            out.append(expr[i:end])
            i = end
            continue
        if ch == "(":
            before = "".join(out).rstrip()
            calls.append(bool(before) and (before[-1].isalnum() or before[-1] in "_.`"))
        elif ch == ")" and calls:
            calls.pop()
        elif ch == "^" and any(calls):
            out.append("**")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)
