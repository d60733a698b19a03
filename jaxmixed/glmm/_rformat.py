"""R's ways of printing numbers and tables, for summaries that read as lme4's do.

``format_r`` is R's ``format()`` of a numeric vector (one common layout: fixed or
scientific, as many decimals as the element that needs most for ``digits`` significant
digits); ``format_pval`` is R's ``format.pval``; ``abbreviate`` is R's ``abbreviate()``
(its default method); ``matrix_lines`` and ``named_lines`` lay out what R's
``print.default`` prints for a character matrix and a named vector. Written from R's
documented behaviour and checked against lme4's printed summaries (tests/test_glmm_api.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

__all__ = ["abbreviate", "format_pval", "format_r", "matrix_lines", "named_lines", "signif_stars", "zapsmall"]

R_EPS = float(np.finfo(np.float64).eps)  # R's .Machine$double.eps
SIGNIF_LEGEND = "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"


def _significance(x: float, digits: int) -> tuple[int, int]:
    """(power of ten, significant digits needed) of ``x`` shown to ``digits`` significant
    digits, trailing zeros dropped (R's ``scientific()``); (0, 1) for 0."""
    if x == 0.0:
        return 0, 1
    mantissa, exponent = f"{abs(x):.{digits - 1}e}".split("e")
    figures = mantissa.replace(".", "").rstrip("0")
    return int(exponent), max(1, len(figures))


def format_r(values: Sequence[float] | Float[np.ndarray, " n"], digits: int = 7, nsmall: int = 0) -> list[str]:
    """R's ``format(values, digits = digits, nsmall = nsmall)``: every element in one layout
    and one width (right-justified). Fixed notation with as many decimals as the element
    that needs most (at least ``nsmall``), unless scientific notation is narrower; non-finite
    values as R writes them (NaN, Inf, -Inf)."""
    x = np.asarray(values, float).ravel()
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return _justify([_non_finite(v) for v in x])
    info = [_significance(float(v), digits) for v in finite]
    neg = int(np.any(finite < 0))
    left = max(1, max(e + 1 for e, _ in info))
    rgt = max(nsmall, max(max(0, s - e - 1) for e, s in info))
    fixed_width = neg + left + (rgt + 1 if rgt > 0 else 0)
    mant = max(s for _, s in info)
    big_exp = any(abs(e) >= 100 for e, _ in info)
    sci_width = neg + (mant + 1 if mant > 1 else 1) + (5 if big_exp else 4)
    if fixed_width <= sci_width:
        cells = [f"{v + 0.0:.{rgt}f}" if math.isfinite(v) else _non_finite(v) for v in x]
    else:
        cells = [_scientific(v, mant - 1) if math.isfinite(v) else _non_finite(v) for v in x]
    return _justify(cells)


def _scientific(v: float, decimals: int) -> str:
    """``v`` as R writes it in scientific notation: ``1.47e-09``, two exponent digits at least."""
    mantissa, exponent = f"{v:.{decimals}e}".split("e")
    return f"{mantissa}e{exponent[0]}{int(exponent[1:]):02d}"


def _non_finite(v: float) -> str:
    return "NaN" if math.isnan(v) else ("Inf" if v > 0 else "-Inf")


def _justify(cells: list[str], right: bool = True) -> list[str]:
    width = max((len(c) for c in cells), default=0)
    return [c.rjust(width) if right else c.ljust(width) for c in cells]


def zapsmall(values: Float[np.ndarray, " n"], digits: int) -> Float[np.ndarray, " n"]:
    """R's ``zapsmall``: rounded to ``digits − ceil(log10(max |x|))`` decimals (at least 0)."""
    x = np.asarray(values, float)
    top = float(np.max(np.abs(x[np.isfinite(x)]), initial=0.0))
    decimals = max(0, digits - math.ceil(math.log10(top))) if top > 0 else digits
    return np.round(x, decimals)


def format_pval(pv: Float[np.ndarray, " n"], digits: int, eps: float = R_EPS) -> list[str]:
    """R's ``format.pval``: p-values of 1e-3 and above (1e-4 and above when ``digits`` > 1)
    formatted together in fixed notation, smaller ones together (usually scientific), and
    those below ``eps`` as ``< 2e-16``."""
    p = np.asarray(pv, float)
    out = [""] * len(p)
    small = p < eps
    rest = np.flatnonzero(~small)
    if rest.size:
        expo = np.floor(np.log10(np.where(p[rest] > 0, p[rest], 1e-50)))
        fixed = (expo >= -3) | ((expo == -4) & (digits > 1))
        for group in (rest[fixed], rest[~fixed]):
            for i, cell in zip(group, format_r(p[group], digits) if group.size else [], strict=True):
                out[i] = cell
    if small.any():
        d = max(1, digits - 2)
        sep = " "
        if rest.size:
            width = max(len(out[i]) for i in rest)
            if d > 1 and d + 6 > width:
                d = max(1, width - 7)
            sep = "" if d == 1 and width <= 6 else " "
        elif d == 1:
            sep = ""
        for i in np.flatnonzero(small):
            out[i] = f"<{sep}{format_r([eps], d)[0]}"
    return out


def signif_stars(pv: Float[np.ndarray, " n"]) -> list[str]:
    """R's significance codes of p-values (``***`` below 0.001 … ``.`` below 0.1), padded to one width."""
    cuts = [(0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")]
    stars = [next((s for c, s in cuts if v <= c), " ") if math.isfinite(v) else "" for v in np.asarray(pv, float)]
    return _justify(stars, right=False)


def _strip_chars(name: str, minlength: int) -> str:
    """R's abbreviation of one name (its C ``stripchars``, with lower-case letters as R's
    ``use.classes`` takes them): characters dropped from the right, never a word's first,
    until ``minlength`` are left: lower-case vowels ending a word, then lower-case vowels,
    then lower-case letters ending a word, then lower-case letters, then any."""
    chars = list(name.strip())

    def first(i: int) -> bool:
        return chars[i - 1].isspace()

    def last(i: int) -> bool:
        return not chars[i - 1].isspace() and (i + 1 == len(chars) or chars[i + 1].isspace())

    def short() -> bool:
        return len(chars) - sum(c.isspace() for c in chars) <= minlength

    passes = [
        lambda i: chars[i] in "aeiou" and last(i),
        lambda i: chars[i] in "aeiou" and not first(i),
        lambda i: chars[i].islower() and last(i),
        lambda i: chars[i].islower() and not first(i),
        lambda i: not first(i) and not chars[i].isspace(),
    ]
    if short():
        return "".join(chars)
    for drop in passes:
        for i in range(len(chars) - 1, 0, -1):
            if i < len(chars) and drop(i):
                del chars[i]
            if short():
                return "".join(chars).replace(" ", "")
    return "".join(chars).replace(" ", "")


def abbreviate(names: Sequence[str], minlength: int) -> list[str]:
    """R's ``abbreviate(names, minlength)``: each name shortened to ``minlength``
    characters (``(Intercept)`` → ``(Intr)``, ``period2`` → ``perid2``); names whose
    abbreviations collide are abbreviated again one character longer, until all differ."""
    unique = list(dict.fromkeys(names))
    out = [_strip_chars(n, minlength) for n in unique]
    length = minlength
    while len(set(out)) < len(out):
        length += 1
        seen = {a for a in out if out.count(a) > 1}
        out = [_strip_chars(n, length) if a in seen else a for n, a in zip(unique, out, strict=True)]
    lookup = dict(zip(unique, out, strict=True))
    return [lookup[n] for n in names]


def matrix_lines(
    cells: Sequence[Sequence[str]], row_names: Sequence[str], col_names: Sequence[str], *, right: bool
) -> list[str]:
    """What R's ``print.default(m, quote = FALSE, right = right)`` prints for a character
    matrix: the row names left-justified, each column as wide as its widest cell or name,
    cells and names right- (``right``) or left-justified, one space before each column;
    trailing spaces dropped."""
    w0 = max((len(r) for r in row_names), default=0)
    widths = [max([len(name)] + [len(row[j]) for row in cells]) for j, name in enumerate(col_names)]

    def line(first: str, row: Sequence[str]) -> str:
        body = "".join(" " + (c.rjust(w) if right else c.ljust(w)) for c, w in zip(row, widths, strict=True))
        return (first.ljust(w0) + body).rstrip()

    return [line("", col_names)] + [line(r, row) for r, row in zip(row_names, cells, strict=True)]


def named_lines(cells: Sequence[str], names: Sequence[str]) -> list[str]:
    """What R prints for a named vector whose elements are ``cells``: the names above the
    values, every column as wide as the widest name or value, right-justified."""
    width = max(len(s) for s in [*cells, *names])
    return [" ".join(s.rjust(width) for s in names), " ".join(s.rjust(width) for s in cells)]
