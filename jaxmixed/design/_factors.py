"""Grouping factors: level codes, lme4's order and names of the terms, the Z blocks.

Each lme4 term (a bar, or for ``(x || g)`` each part of lme4's expansion) is
one block of Λ. The computation groups the terms by grouping factor, one
block-diagonal factor after another, the factor with the most levels first;
lme4 reports them in its own order (``mkReTrms``), kept as ``report_order``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from ..core._covariance import CovarianceStructure, structure_for_terms
from ._formula import RandomTerm
from ._matrices import ModelMatrix, ModelSpec

__all__ = [
    "FactorInfo",
    "Factors",
    "Grouping",
    "TermBlock",
    "assemble_factors",
    "factor_info",
    "group_codes",
    "groupings",
]


@dataclasses.dataclass(frozen=True)
class FactorInfo:
    """One grouping factor and the random-effects terms on it.

    Attributes:
        name: the factor's name as lme4 prints it (``"Subject"``, ``"cask:batch"``).
        columns: the data columns whose interaction is the factor.
        levels: the level labels, in the order of the level codes.
        term_names: per term, the group name of its ``varcorr`` rows (lme4
            numbers repeated names: ``Subject``, ``Subject.1``).
        term_columns: per term, the names of its model-matrix columns.
        term_specs: per term, formulaic's model spec or a stand-in (None for
            array input).
        structure: which entries of the factor's Λ are free.
    """

    name: str
    columns: tuple[str, ...]
    levels: pd.Index
    term_names: tuple[str, ...]
    term_columns: tuple[tuple[str, ...], ...]
    term_specs: tuple[ModelSpec | None, ...]
    structure: CovarianceStructure

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for cols in self.term_columns for c in cols)


@dataclasses.dataclass(frozen=True)
class TermBlock:
    """One lme4 term: the bar it comes from, its label and its Z block.

    Attributes:
        bar: the random-effects bar (its grouping columns and factor name).
        label: the bar as the user wrote it, for messages (``(x || g)``).
        matrix: the term's columns, Z (n, k), with names and spec.
    """

    bar: RandomTerm
    label: str
    matrix: ModelMatrix


@dataclasses.dataclass(frozen=True)
class Grouping:
    """The levels of one grouping factor: ``codes`` (n,) int32 index ``levels``."""

    name: str
    codes: Int[np.ndarray, " n"]
    levels: pd.Index

    @property
    def n_levels(self) -> int:
        return len(self.levels)


@dataclasses.dataclass(frozen=True)
class Factors:
    """The random part, as the computation takes it.

    Attributes:
        factors: per grouping factor (computation order), its description.
        codes: per factor, (n,) int32 level codes.
        Z: per factor, (n, q_f) its terms' blocks side by side.
        report_order: lme4's terms in lme4's order, as (factor, term) indices.
    """

    factors: tuple[FactorInfo, ...]
    codes: tuple[Int[np.ndarray, " n"], ...]
    Z: tuple[Float[np.ndarray, "n q"], ...]
    report_order: tuple[tuple[int, int], ...]


def group_codes(data: pd.DataFrame, columns: Sequence[str]) -> tuple[Int[np.ndarray, " n"], pd.Index]:
    """Integer codes (n,) int32 and level labels of the interaction of ``columns``.

    Categoricals keep their category order (unused categories are dropped, as
    lme4 drops unused levels of a grouping factor); other values are sorted.
    The labels of an interaction join the parts' labels with ``:``.
    """
    codes_list, labels_list = [], []
    for col in columns:
        series = data[col]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.cat.remove_unused_categories()
            codes, labels = series.cat.codes.to_numpy(), series.cat.categories
        else:
            codes, labels = pd.factorize(series, sort=True)
        codes_list.append(np.asarray(codes, dtype=np.int64))
        labels_list.append(pd.Index(labels))
    if len(columns) == 1:
        return codes_list[0].astype(np.int32), labels_list[0]
    combined = np.stack(codes_list, axis=1)
    unique, inverse = np.unique(combined, axis=0, return_inverse=True)
    labels = [":".join(str(labels_list[k][u[k]]) for k in range(len(columns))) for u in unique]
    return inverse.reshape(-1).astype(np.int32), pd.Index(labels)


def groupings(data: pd.DataFrame, terms: Sequence[TermBlock]) -> Mapping[tuple[str, ...], Grouping]:
    """The grouping factor of each term's grouping columns, in the order the
    terms first name them (terms on the same columns share one factor): a
    read-only mapping from the columns to their :class:`Grouping`."""
    out: dict[tuple[str, ...], Grouping] = {}
    for term in terms:
        cols = term.bar.group
        if cols not in out:
            codes, levels = group_codes(data, cols)
            out[cols] = Grouping(name=term.bar.name, codes=codes, levels=levels)
    return MappingProxyType(out)


def _lme4_order(n_levels: Sequence[int]) -> list[int]:
    """lme4's order of terms with these numbers of levels (mkReTrms): as they
    are when non-increasing, else ``rev(order(nl))``, which also reverses ties."""
    order = list(range(len(n_levels)))
    if any(b > a for a, b in zip(n_levels, n_levels[1:], strict=False)):
        # Python's sort is stable ascending; reversing it reverses ties, as rev(order()) does.
        order = sorted(order, key=lambda k: n_levels[k])[::-1]
    return order


def _numbered(names: Sequence[str]) -> list[str]:
    """lme4's group names of terms in its order: repeats numbered (``Subject``,
    ``Subject.1``, …)."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        out.append(name if name not in seen else f"{name}.{seen[name]}")
        seen[name] = seen.get(name, 0) + 1
    return out


def assemble_factors(terms: Sequence[TermBlock], groups: Mapping[tuple[str, ...], Grouping]) -> Factors:
    """The terms as the computation takes them: one block per grouping factor,
    the factor with the most levels first (ties: the one lme4 reports first),
    each factor's terms in lme4's order, and that order as ``report_order``."""
    ranked = [terms[k] for k in _lme4_order([groups[t.bar.group].n_levels for t in terms])]
    names = _numbered([t.bar.name for t in ranked])
    first_rank: dict[tuple[str, ...], int] = {}
    for rank, term in enumerate(ranked):
        first_rank.setdefault(term.bar.group, rank)
    keys = sorted(groups, key=lambda cols: (-groups[cols].n_levels, first_rank[cols]))
    # Per factor, the ranks (positions in lme4's order) of its terms.
    members = [[rank for rank, term in enumerate(ranked) if term.bar.group == cols] for cols in keys]
    placed = {rank: (f, t) for f, mine in enumerate(members) for t, rank in enumerate(mine)}
    return Factors(
        factors=tuple(
            factor_info(cols, groups[cols], [ranked[r] for r in mine], [names[r] for r in mine])
            for cols, mine in zip(keys, members, strict=True)
        ),
        codes=tuple(groups[cols].codes for cols in keys),
        Z=tuple(np.concatenate([ranked[r].matrix.values for r in mine], axis=1) for mine in members),
        report_order=tuple(placed[r] for r in range(len(ranked))),
    )


def factor_info(
    columns: tuple[str, ...], grouping: Grouping, terms: Sequence[TermBlock], names: Sequence[str]
) -> FactorInfo:
    """The description of one factor whose terms, in lme4's order, are ``terms``."""
    return FactorInfo(
        name=grouping.name,
        columns=columns,
        levels=grouping.levels,
        term_names=tuple(names),
        term_columns=tuple(t.matrix.columns for t in terms),
        term_specs=tuple(t.matrix.spec for t in terms),
        structure=structure_for_terms([t.matrix.values.shape[1] for t in terms]),
    )
