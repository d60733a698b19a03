"""What the entry points are asked to fit: one validated record, built once per call.

``fit_reml``, ``fit_reml_many`` and ``fit_reml_stacked`` take the same model
source (a formula with its data, or arrays) and the same fit settings. Each
builds one :class:`Inputs` from its keyword arguments with
:meth:`Inputs.from_arguments`, which checks them (errors name the argument
and the value) and resolves the settings into one ``FitOptions``; the rest of
the call reads the record. What the design layer checks (missing values,
weights' values, columns, offsets' values) is left to it. Offsets (``offset()``
terms of the formula, the ``offset=`` argument) are ``fit_reml``'s only: the
other entry points refuse them here rather than leave them out of the model.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import optax
from jax.sharding import Mesh

from ..core import FitOptions
from ..core._options import checked_reml
from ..core._sharding import as_mesh
from ..design._design import Design, ModelArrays, build_design, design_from_arrays
from ..design._offsets import split_offsets

__all__ = ["Inputs"]

# How each entry point is called, for the errors that say how to call it.
_USAGE = {
    "fit_reml": "fit_reml(formula, data=df) or fit_reml(y=..., X=..., Z=..., groups=...)",
    "fit_reml_many": "fit_reml_many(formula, data, responses=[...]) or fit_reml_many(y=..., groups=...)",
    "fit_reml_stacked": "fit_reml_stacked(formula, datasets) or fit_reml_stacked(y=..., groups=...)",
}
_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
# The defaults of the three settings that FitOptions also holds: an argument
# left at its default never clashes with options=FitOptions(...).
_SETTING_DEFAULTS = {"reml": True, "max_iter": 500, "optimizer": None}


@dataclasses.dataclass(frozen=True, eq=False)
class Inputs:
    """The model source and the settings of one call of an entry point, validated.

    Attributes:
        caller: the entry point's name (``"fit_reml"``, ``"fit_reml_many"``,
            ``"fit_reml_stacked"``), for error messages.
        formula: the lme4-style formula, or None for array input.
        data: with a formula, the DataFrame (``fit_reml``, ``fit_reml_many``)
            or the sequence of K DataFrames (``fit_reml_stacked``); else None.
            As the caller gave it: the design layer checks it.
        y, X, Z, groups: array input (None with a formula). ``fit_reml``:
            ``y`` (n,), ``X`` (n, p), ``Z`` (n, q), ``groups`` (n,);
            ``fit_reml_many``: ``y`` (n, K) responses; ``fit_reml_stacked``:
            each with a leading axis K.
        weights: prior weights: a column name of ``data`` (formula input) or
            an array (n,) (array input); None (default): all 1.
        offset: ``fit_reml``'s ``offset=``: a column name or expression of
            ``data`` or an array (n,) (formula input), an array (n,) (array
            input); None (default): none (the formula's ``offset()`` terms aside).
        missing: ``"raise"`` (default) or ``"drop"`` rows with missing values.
        options: the ``FitOptions`` of the fit (``reml``, ``max_iter``,
            ``optimizer`` and the rest), resolved from the arguments.
        dtype: ``float64`` (default) or ``float32``, as a numpy dtype.
        mesh: the devices to split the work over (``None``: one device).
    """

    caller: str
    formula: str | None
    data: Any
    y: npt.ArrayLike | None
    X: npt.ArrayLike | None
    Z: npt.ArrayLike | None
    groups: npt.ArrayLike | None
    weights: str | npt.ArrayLike | None
    offset: str | npt.ArrayLike | None
    missing: str
    options: FitOptions
    dtype: np.dtype
    mesh: Mesh | None

    @classmethod
    def from_arguments(
        cls,
        caller: str,
        *,
        formula: str | None = None,
        data: Any = None,
        y: npt.ArrayLike | None = None,
        X: npt.ArrayLike | None = None,
        Z: npt.ArrayLike | None = None,
        groups: npt.ArrayLike | None = None,
        weights: str | npt.ArrayLike | None = None,
        offset: str | npt.ArrayLike | None = None,
        missing: str = "raise",
        reml: bool = True,
        max_iter: int = 500,
        optimizer: optax.GradientTransformation | None = None,
        options: FitOptions | None = None,
        dtype: jax.typing.DTypeLike = jnp.float64,
        devices: int | Sequence[Any] | Mesh | None = None,  # Any: jax.Device, not a static type
    ) -> Inputs:
        """The record of an entry point's arguments (defaults as in ``fit_reml``).

        Raises TypeError or ValueError, naming the argument and its value, on
        what cannot be fitted: a formula together with arrays, a formula
        without data, neither, ``reml`` that is not a bool, ``max_iter`` that
        is not a positive integer, a dtype other than float64 or float32,
        ``options`` that is not a ``FitOptions`` or contradicts ``reml``,
        ``max_iter`` or ``optimizer``, ``devices`` that name no devices, or
        offsets given to an entry point other than ``fit_reml``.
        """
        _check_source(caller, formula, data, (y, X, Z, groups), weights)
        _check_offset(caller, formula, offset)
        return cls(
            caller=caller,
            formula=formula,
            data=data,
            y=y,
            X=X,
            Z=Z,
            groups=groups,
            weights=weights,
            offset=offset,
            missing=missing,
            options=_fit_options(options, reml, max_iter, optimizer),
            dtype=_float_dtype(dtype),
            mesh=as_mesh(devices),
        )

    @property
    def reml(self) -> bool:
        """REML (True) or maximum likelihood (False), from ``options``."""
        return self.options.reml

    def model(self) -> tuple[Design, ModelArrays]:
        """The design and arrays of one model: ``fit_reml``'s input (formula or arrays)."""
        if self.formula is not None:
            assert self.weights is None or isinstance(self.weights, str), (
                "_check_source: with a formula, weights is a column name"
            )
            return build_design(
                self.formula,
                self.data,
                missing=self.missing,
                weights=self.weights,
                offset=self.offset,
                allow_offsets=True,
            )
        assert self.y is not None, "_check_source: fit_reml's array input has y"
        assert not isinstance(self.offset, str), "_check_offset: with arrays, offset is an array"
        return design_from_arrays(
            self.y, self.X, self.Z, self.groups, missing=self.missing, weights=self.weights, offset=self.offset
        )


def _check_source(
    caller: str, formula: str | None, data: Any, arrays: tuple[Any, ...], weights: Any
) -> None:
    """A formula with its data, or arrays; not both, not neither."""
    usage = _USAGE[caller]
    if formula is None:
        if data is not None:
            raise ValueError(f"data was given without a formula: {usage}")
        if arrays[0] is None and caller == "fit_reml":
            raise ValueError(f"pass a formula and data, or arrays: {usage}")
        return
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string such as 'y ~ x + (1 | g)', got {formula!r}")
    if any(a is not None for a in arrays):
        given = [name for name, a in zip(("y", "X", "Z", "groups"), arrays, strict=True) if a is not None]
        raise ValueError(f"pass either a formula with data, or arrays, not both (got {given}): {usage}")
    if data is None:
        raise ValueError(f"a formula needs data: {usage}")
    if weights is not None and not isinstance(weights, str):
        raise TypeError(
            f"with a formula, weights is the name of a column of data, got {type(weights).__name__}"
        )


def _check_offset(caller: str, formula: str | None, offset: Any) -> None:
    """Offsets are ``fit_reml``'s: an ``offset()`` term of another entry point's formula is
    an error (not a missing column named ``offset``, nor left out of the model); with
    arrays, ``offset`` is an array, not a column name."""
    if caller != "fit_reml" and isinstance(formula, str) and "~" in formula:
        if split_offsets(formula.split("~", 1)[1])[1]:
            raise ValueError(
                f"{caller} does not support offsets (the formula's offset() terms) yet: "
                "fit each model with fit_reml, which takes them"
            )
    if formula is None and isinstance(offset, str):
        raise TypeError(f"with array input, offset is an array (n,), not a column name ({offset!r})")


def _fit_options(options: FitOptions | None, reml: Any, max_iter: Any, optimizer: Any) -> FitOptions:
    """One ``FitOptions`` from the three loose settings, or ``options`` checked against them."""
    # Checked before any comparison with options: the arguments are the user's.
    reml = checked_reml(reml)
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter must be a positive integer, got {max_iter!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if options is None:
        return FitOptions(reml=reml, max_iter=max_iter, optimizer=optimizer)
    if not isinstance(options, FitOptions):
        raise TypeError(f"options must be a FitOptions, got {type(options).__name__}")
    given = {"reml": reml, "max_iter": max_iter, "optimizer": optimizer}
    clash = [
        name
        for name, value in given.items()
        if not _is_default(value, _SETTING_DEFAULTS[name]) and value != getattr(options, name)
    ]
    if clash:
        raise ValueError(
            f"{clash} given both as arguments and (differently) in options=FitOptions(...): "
            "set them in FitOptions only"
        )
    return options


def _is_default(value: Any, default: Any) -> bool:
    return value is default or value == default


def _float_dtype(dtype: Any) -> np.dtype:
    try:
        resolved = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float64 or float32, got {dtype!r}") from None
    if resolved not in _DTYPES:
        raise ValueError(f"dtype must be float64 or float32, got {resolved}")
    return resolved
