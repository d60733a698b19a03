"""From a formula and a DataFrame (or from arrays) to validated model arrays.

:func:`build_design` runs the steps of the design layer in order, each in its
own module: which columns the formula reads (``_columns``, with the names
formulaic cannot read quoted by ``_quoting``); checks of the data and rows
with missing values (``_validation``); the model matrices, by one of two
builders chosen once per formula and data (``_numeric``'s fast path for sums
of plain numeric columns, else ``_formulaic``); the grouping factors and
lme4's order of the terms (``_factors``); last the checks that the model is
identifiable. :func:`design_from_arrays` does the same from arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from jaxtyping import Bool, Float, Int, Shaped

from ..core._covariance import CovarianceStructure
from ._columns import AnalysedFormula, analyse_columns
from ._factors import FactorInfo, Grouping, TermBlock, assemble_factors, factor_info, group_codes, groupings
from ._formula import ParsedFormula, RandomTerm, parse_formula
from ._formulaic import FormulaicBuilder
from ._matrices import FixedTerm, MatrixBuilder, ModelMatrix, ModelSpec
from ._numeric import NumericBuilder, numeric_plan
from ._offsets import Offsets, fitted_offset, offset_columns, offsets_of, with_offset_column
from ._quoting import term_label
from ._validation import (
    check_columns,
    check_factor_size,
    check_finite,
    check_not_confounded,
    check_response,
    check_weights,
    complete_rows,
    drop_aliased,
)

__all__ = ["Design", "FactorInfo", "FixedTerm", "ModelArrays", "build_design", "design_from_arrays"]


@dataclasses.dataclass(frozen=True)
class ModelArrays:
    """The numeric model: response, fixed effects, one (codes, Z) per factor.

    Shapes: ``y`` (n,), ``X`` (n, p), ``codes[f]`` (n,) int32 level codes,
    ``Z[f]`` (n, q_f), ``weights`` (n,) prior weights or None, ``offset`` (n,)
    the summed offsets (a linear model: ``y = Xβ + Zb + offset + ε``) or None.
    Numpy arrays in float64; ``y`` is the response as given, offset not taken off.
    """

    y: Float[np.ndarray, " n"]
    X: Float[np.ndarray, "n p"]
    codes: tuple[Int[np.ndarray, " n"], ...]
    Z: tuple[Float[np.ndarray, "n q"], ...]
    weights: Float[np.ndarray, " n"] | None = None
    offset: Float[np.ndarray, " n"] | None = None

    @property
    def working_y(self) -> Float[np.ndarray, " n"]:
        """``y − offset`` (n,) (``y`` without offset): the response a linear model's fit
        sees, as lme4's lmer subtracts the offset from the response."""
        return self.y if self.offset is None else self.y - self.offset


@dataclasses.dataclass(frozen=True)
class Design:
    """What is needed to map a fit back to names and to predict on new data.

    ``report_order`` lists lme4's terms in lme4's order as (factor, term)
    indices into ``factors``; ``all_fixed_names`` are the fixed-effects
    columns before aliased ones were dropped; ``fixed_spec`` makes the
    fixed-effects matrix of new data (None for array input). Names are R's
    (``(Intercept)``, ``recipeB:temperature185``; see ``_rnames``).

    ``fixed_terms``: the fixed part's terms as R labels them, each with its
    columns (positions in ``fixed_names``; aliased columns left out) and its
    factors; array input has one term per column. ``fixed_frame``: the rows
    the formulaic builder read, kept to make the full dummy coding of terms
    with categorical factors (lmerTest's type III hypotheses); None otherwise.
    ``offsets``: the model's ``offset()`` terms and ``offset=`` argument (how to
    evaluate them on new data; their values on the fitted rows are
    ``ModelArrays.offset``); empty without offsets.
    """

    response: str
    fixed_names: tuple[str, ...]
    fixed_spec: ModelSpec | None
    factors: tuple[FactorInfo, ...]
    dropped_fixed: tuple[str, ...]
    n_dropped_rows: int
    formula: str | None
    report_order: tuple[tuple[int, int], ...]
    all_fixed_names: tuple[str, ...]
    fixed_terms: tuple[FixedTerm, ...] = ()
    fixed_frame: pd.DataFrame | None = dataclasses.field(default=None, compare=False, repr=False)
    offsets: Offsets = dataclasses.field(default_factory=Offsets, compare=False, repr=False)

    @property
    def structures(self) -> tuple[CovarianceStructure, ...]:
        """Each factor's covariance structure, in computation order."""
        return tuple(f.structure for f in self.factors)

    @property
    def theta_order(self) -> Int[np.ndarray, " n_params"]:
        """Positions, in the computation's θ (factor by factor), of lme4's θ."""
        starts, offset = {}, 0
        for f, info in enumerate(self.factors):
            for t, (lo, hi) in enumerate(info.structure.term_slices):
                size = hi - lo
                starts[(f, t)] = (offset, size * (size + 1) // 2)
                offset += size * (size + 1) // 2
        return np.concatenate([np.arange(o, o + k) for o, k in (starts[ft] for ft in self.report_order)])


def build_design(
    formula: str,
    data: pd.DataFrame,
    missing: str = "raise",
    weights: str | None = None,
    *,
    offset: str | npt.ArrayLike | None = None,
    allow_offsets: bool = False,
    levels_below_rows: bool = True,
) -> tuple[Design, ModelArrays]:
    """Validates the data and builds the model arrays for ``formula``.

    Args:
        formula: an lme4-style formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``;
            with ``allow_offsets``, ``+ offset(expr)`` terms too.
        data: the data; every column the formula uses must be present.
        missing: ``"raise"`` (default): NaN, inf or missing values in a used
            column (offsets' included) are an error. ``"drop"``: such rows are
            dropped and counted in the result.
        weights: the name of a column of positive prior weights (lme4's
            ``weights``: observation i has residual variance σ²/wᵢ), or None.
        offset: with ``allow_offsets``, lme4's ``offset=``: a column name or
            expression, or an array (n,) (one value per row of ``data``), summed
            with the formula's ``offset()`` terms. Default None.
        allow_offsets: whether the caller fits offsets (default False: an
            ``offset()`` term or ``offset`` is an error, not left out).
        levels_below_rows: lmer's check that each factor has fewer levels than
            rows (a linear model's residual would be confounded with them);
            False for a GLMM, where an observation-level effect is identifiable
            (glmer does not check it).

    Returns:
        The design (names, specs, factors, offsets) and the arrays: y (n,), X
        (n, p) without aliased columns, per factor codes (n,) and Z (n, q_f), the
        weights (n,) or None, the summed offset (n,) or None; n counts the rows kept.
    """
    fit_formula, offsets = offsets_of(formula, offset, allowed=allow_offsets)
    analysed, builder, data, n_dropped = _complete_data(fit_formula, data, missing, weights, offsets)
    n = len(data)
    w = None if weights is None else check_weights(data[weights].to_numpy(dtype=float), repr(weights))

    fixed = builder.fixed(data)
    check_finite(fixed.y, f"the response {fixed.response!r}")
    check_finite(fixed.X.values, "the fixed-effects model matrix", fixed.X.columns)
    # Called here, not in a helper: its warning points at build_design's caller.
    kept = drop_aliased(fixed.X.values, fixed.X.columns, n)
    check_response(fixed.y)

    terms = _term_blocks(builder, analysed.formula.random, data)
    groups = groupings(data, terms)
    random = assemble_factors(terms, groups)
    arrays = ModelArrays(fixed.y, kept.X, random.codes, random.Z, w, fitted_offset(offsets, data))
    _check_identifiable(n, random.factors, kept.basis, terms, groups, levels_below_rows=levels_below_rows)
    design = Design(
        response=fixed.response,
        fixed_names=kept.names,
        fixed_spec=fixed.X.spec,
        factors=random.factors,
        dropped_fixed=kept.dropped,
        n_dropped_rows=n_dropped,
        formula=formula,
        report_order=random.report_order,
        all_fixed_names=fixed.X.columns,
        fixed_terms=kept_terms(fixed.terms, fixed.X.columns, kept.names),
        fixed_frame=fixed.frame if any(t.expr is not None for t in fixed.terms) else None,
        offsets=offsets,
    )
    return design, arrays


def _complete_data(
    formula: str, data: pd.DataFrame, missing: str, weights: str | None, offsets: Offsets
) -> tuple[AnalysedFormula, MatrixBuilder, pd.DataFrame, int]:
    """(the formula read against the data, its matrix builder, the rows without missing
    values in any used column (formula, weights, offsets; an array offset as the
    ``OFFSET`` column) and unused categories, how many rows were dropped)."""
    parsed = _parsed_formula(formula, data, missing)
    data = with_offset_column(data, offsets)
    analysed = analyse_columns(parsed, tuple(data.columns))
    used = analysed.used | offset_columns(offsets, tuple(data.columns))
    check_columns(data, used, analysed.plain)
    used = used | _weights_column(weights, data)
    builder = _choose_builder(analysed.formula, data)
    data, n_dropped = complete_rows(
        data, [c for c in data.columns if c in used], missing, builder.compact_frame
    )
    if len(data) == 0:
        raise ValueError("no observations left to fit")
    return analysed, builder, _without_unused_categories(data, analysed.used), n_dropped


def kept_terms(
    terms: Sequence[FixedTerm], all_names: Sequence[str], kept: Sequence[str]
) -> tuple[FixedTerm, ...]:
    """``terms`` (columns: positions in ``all_names``) with their columns as
    positions in ``kept`` (aliased columns dropped; a term may be left empty)."""
    position = {name: k for k, name in enumerate(kept)}
    return tuple(
        dataclasses.replace(
            t, columns=tuple(position[all_names[c]] for c in t.columns if all_names[c] in position)
        )
        for t in terms
    )


def _without_unused_categories(data: pd.DataFrame, used: Iterable[str]) -> pd.DataFrame:
    """``data`` with the categories no row has removed from its used categorical
    columns, as R's ``model.frame`` drops unused levels: a fixed-effect level with no
    rows would be an all-zero column (aliased) and shift R's names."""
    columns = {c: cast(pd.Series, data[c]) for c in used}  # the used names are unique
    unused = [
        c
        for c, col in columns.items()
        if isinstance(col.dtype, pd.CategoricalDtype)
        and int(col.nunique(dropna=True)) < len(col.cat.categories)
    ]
    if not unused:
        return data
    return data.assign(**{c: columns[c].cat.remove_unused_categories() for c in unused})


def _parsed_formula(formula: str, data: pd.DataFrame, missing: str) -> ParsedFormula:
    """The parsed formula, after the checks of the arguments that need no data."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if missing not in ("raise", "drop"):
        raise ValueError(f"missing must be 'raise' or 'drop', got {missing!r}")
    parsed = parse_formula(formula)
    if not parsed.random:
        raise ValueError(
            f"formula {formula!r} has no random-effects term such as (1 | group); "
            "for a linear model without random effects use ordinary least squares"
        )
    return parsed


def _weights_column(weights: str | None, data: pd.DataFrame) -> frozenset[str]:
    """The weights column as a set of used columns (empty without weights)."""
    if weights is None:
        return frozenset()
    if weights not in data.columns:
        raise ValueError(f"the weights column {weights!r} is not in the data")
    return frozenset({weights})


def _choose_builder(parsed: ParsedFormula, data: pd.DataFrame) -> MatrixBuilder:
    """The numpy fast path when every part of ``parsed`` is a sum of plain
    numeric columns of ``data``, else formulaic (same matrices, names, specs)."""
    plan = numeric_plan(parsed, data)
    return FormulaicBuilder(parsed) if plan is None else NumericBuilder(plan)


def _term_blocks(builder: MatrixBuilder, bars: Sequence[RandomTerm], data: pd.DataFrame) -> list[TermBlock]:
    """lme4's terms of ``bars``, each with its Z block, checked finite and not empty.

    A ``(x || g)`` bar is expanded as lme4 expands it, into ``(1 | g)`` and
    ``(0 + t | g)`` for each term t of x; each term is one block of Λ.
    """
    out = []
    for bar in bars:
        label = term_label(bar)
        for matrix in builder.terms(bar, data):
            check_finite(matrix.values, f"the model matrix of {label}", matrix.columns)
            if matrix.values.shape[1] == 0:
                raise ValueError(f"the random-effects term {label} is empty")
            out.append(TermBlock(bar=bar, label=label, matrix=matrix))
    return out


def _check_identifiable(
    n: int,
    factors: Sequence[FactorInfo],
    basis: Float[np.ndarray, "n p"],
    terms: Sequence[TermBlock],
    groups: Mapping[tuple[str, ...], Grouping],
    *,
    levels_below_rows: bool = True,
) -> None:
    """lme4's checks of the numbers of levels and random effects against the n
    observations, per factor (those against n are lmer's: not with
    ``levels_below_rows=False``); then,
    per term, that its random effects are not all in the span of the fixed effects
    (``basis``: (n, p) orthonormal)."""
    for info in factors:
        sizes = [hi - lo for lo, hi in info.structure.term_slices]
        terms_sizes = list(zip(info.term_names, sizes, strict=True))
        check_factor_size(info.name, info.n_levels, terms_sizes, n, below_rows=levels_below_rows)
    for term in terms:
        grouping = groups[term.bar.group]
        check_not_confounded(
            basis,
            term.matrix.values,
            term.matrix.columns,
            grouping.codes,
            grouping.n_levels,
            label=term.label,
            factor=term.bar.name,
        )


@dataclasses.dataclass(frozen=True)
class _ArrayInput:
    """Array input as float64 arrays of equal length n (rows not yet checked).

    Shapes: ``y`` (n,), ``X`` (n, p), ``Z`` (n, q), ``groups`` (n,) labels,
    ``weights`` (n,) or None, ``offset`` (n,) or None; ``x_names`` and
    ``z_names`` name the columns.
    """

    y: Float[np.ndarray, " n"]
    X: Float[np.ndarray, "n p"]
    x_names: tuple[str, ...]
    Z: Float[np.ndarray, "n q"]
    z_names: tuple[str, ...]
    groups: pd.Series
    weights: Float[np.ndarray, " n"] | None
    offset: Float[np.ndarray, " n"] | None = None

    def missing_rows(self) -> dict[str, Bool[np.ndarray, " n"]]:
        """Per input, (n,) True where its row has a missing or non-finite value."""
        n = len(self.y)
        return {
            "y": ~np.isfinite(self.y),
            "X": ~np.all(np.isfinite(self.X), axis=1),
            "Z": ~np.all(np.isfinite(self.Z), axis=1),
            "groups": self.groups.isna().to_numpy(),
            "weights": np.zeros(n, bool) if self.weights is None else ~np.isfinite(self.weights),
            "offset": np.zeros(n, bool) if self.offset is None else ~np.isfinite(self.offset),
        }


def _as_2d(name: str, values: npt.ArrayLike, n: int | None) -> tuple[Float[np.ndarray, "n k"], list[str]]:
    """``values`` as a float64 matrix (n, k) and its column names: a
    DataFrame's, else ``x0, x1, …`` (from ``name``, lower case)."""
    if isinstance(values, pd.DataFrame):
        names = [str(c) for c in values.columns]
        arr = values.to_numpy(dtype=float)
    else:
        arr = np.asarray(values, dtype=float)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 1- or 2-dimensional, got shape {arr.shape}")
        names = [f"{name.lower()}{k}" for k in range(arr.shape[1])]
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but y has {n}: lengths differ")
    return arr, names


def _array_input(
    y: npt.ArrayLike,
    X: npt.ArrayLike | None,
    Z: npt.ArrayLike | None,
    groups: npt.ArrayLike,
    weights: npt.ArrayLike | None,
    offset: npt.ArrayLike | None = None,
) -> _ArrayInput:
    """The inputs as arrays, with X and Z defaulting to an intercept column;
    shapes and lengths checked."""
    y_arr = np.asarray(y, dtype=float).reshape(-1) if np.ndim(y) <= 1 else None
    if y_arr is None:
        raise ValueError(f"y must be 1-dimensional, got shape {np.shape(y)}")
    n = len(y_arr)
    if X is None:
        X_arr, x_names = np.ones((n, 1)), ["Intercept"]
    else:
        X_arr, x_names = _as_2d("X", X, n)
    if Z is None:
        Z_arr, z_names = np.ones((n, 1)), ["Intercept"]
    else:
        Z_arr, z_names = _as_2d("Z", Z, n)
    g = pd.Series(groups.to_numpy() if isinstance(groups, pd.Series) else np.asarray(groups))
    if g.ndim != 1 or len(g) != n:
        raise ValueError(f"groups has {len(g)} entries but y has {n}: lengths differ")
    w_arr, o_arr = (_vector(name, v, n) for name, v in (("weights", weights), ("offset", offset)))
    return _ArrayInput(y_arr, X_arr, tuple(x_names), Z_arr, tuple(z_names), g, w_arr, o_arr)


def _vector(name: str, values: npt.ArrayLike | None, n: int) -> Float[np.ndarray, " n"] | None:
    """``values`` as a float64 vector (n,) (None stays None); another length is an error."""
    if values is None:
        return None
    out = np.asarray(values, dtype=float).reshape(-1)
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries but y has {n}: lengths differ")
    return out


def _complete_array_rows(inputs: _ArrayInput, missing: str) -> tuple[_ArrayInput, int]:
    """The rows without missing or non-finite values (an error with
    ``missing="raise"``), and how many were dropped."""
    masks = inputs.missing_rows()
    bad = np.logical_or.reduce(list(masks.values()))
    n_dropped = int(bad.sum())
    if not n_dropped:
        return inputs, 0
    if missing == "raise":
        parts = [f"{what}: {int(m.sum())}" for what, m in masks.items() if m.any()]
        raise ValueError(
            f"missing or non-finite values ({', '.join(parts)} row(s)); "
            "clean the data or pass missing='drop' to drop those rows"
        )
    keep = ~bad
    kept = dataclasses.replace(
        inputs,
        y=inputs.y[keep],
        X=inputs.X[keep],
        Z=inputs.Z[keep],
        groups=cast(pd.Series, inputs.groups[keep]).reset_index(drop=True),  # a mask selects a Series
        weights=None if inputs.weights is None else inputs.weights[keep],
        offset=None if inputs.offset is None else inputs.offset[keep],
    )
    return kept, n_dropped


def design_from_arrays(
    y: Float[npt.ArrayLike, " n"],
    X: Float[npt.ArrayLike, "n p"] | None = None,
    Z: Float[npt.ArrayLike, "n q"] | None = None,
    groups: Shaped[npt.ArrayLike, " n"] | None = None,
    group_name: str = "group",
    missing: str = "raise",
    weights: Float[npt.ArrayLike, " n"] | None = None,
    offset: Float[npt.ArrayLike, " n"] | None = None,
) -> tuple[Design, ModelArrays]:
    """Validates array input: ``y`` (n,), ``X`` (n, p), ``Z`` (n, q), ``groups`` (n,).

    ``X`` defaults to an intercept column, ``Z`` to a random intercept;
    ``weights`` (n,): positive prior weights, default none; ``offset`` (n,): a
    known part of the mean (``y = Xβ + Zb + offset + ε``), default none. A row
    missing any of them is dropped or refused as ``missing`` says.
    DataFrame columns give the names; otherwise ``x0, x1, …`` and ``z0, …``.
    One grouping factor, ``group_name``, with one term whose columns are Z's.
    """
    if groups is None:
        raise ValueError("groups is required with array input: one label per observation")
    if missing not in ("raise", "drop"):
        raise ValueError(f"missing must be 'raise' or 'drop', got {missing!r}")
    inputs, n_dropped = _complete_array_rows(_array_input(y, X, Z, groups, weights, offset), missing)
    n = len(inputs.y)
    w = None if inputs.weights is None else check_weights(inputs.weights, "weights")
    # Called here, not in a helper: its warning points at design_from_arrays' caller.
    kept = drop_aliased(inputs.X, inputs.x_names, n)
    check_response(inputs.y)

    codes, levels = group_codes(pd.DataFrame({group_name: inputs.groups}), [group_name])
    grouping = Grouping(name=group_name, codes=codes, levels=levels)
    bar = RandomTerm("Z", (group_name,), group_name)
    term = TermBlock(bar=bar, label=term_label(bar), matrix=ModelMatrix(inputs.Z, inputs.z_names, None))
    info = factor_info((group_name,), grouping, [term], [group_name])
    arrays = ModelArrays(y=inputs.y, X=kept.X, codes=(codes,), Z=(inputs.Z,), weights=w, offset=inputs.offset)
    _check_identifiable(n, [info], kept.basis, [term], {bar.group: grouping})
    design = Design(
        response="y",
        fixed_names=kept.names,
        fixed_spec=None,
        factors=(info,),
        dropped_fixed=kept.dropped,
        n_dropped_rows=n_dropped,
        formula=None,
        report_order=((0, 0),),
        all_fixed_names=inputs.x_names,
        fixed_terms=kept_terms(_column_terms(inputs.x_names, inputs.X), inputs.x_names, kept.names),
        offsets=Offsets(argument=None if offset is None else np.asarray(offset, dtype=float).reshape(-1)),
    )
    return design, arrays


def _column_terms(names: Sequence[str], X: Float[np.ndarray, "n p"]) -> tuple[FixedTerm, ...]:
    """Array input's terms: one per column (numeric), named as the column; a column of
    ones is the intercept (no factors: never tested or dropped on its own)."""
    return tuple(
        FixedTerm(name, (k,), (), ()) if np.all(X[:, k] == 1.0) else FixedTerm(name, (k,), (name,), (True,))
        for k, name in enumerate(names)
    )
