"""From a validated design to the pure layer's :class:`~jaxmixed.core.ModelData` (host side).

The last step of the design layer: the arrays of a :class:`Design` handed to
:func:`jaxmixed.core.model_data`, which builds the integer structure the pure
statistics need.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ..core._statistics import ModelData, model_data
from ._design import Design, ModelArrays

__all__ = ["prepare"]


def prepare(
    design: Design,
    arrays: ModelArrays,
    *,
    dtype: jax.typing.DTypeLike = jnp.float64,
    memory_limit: int | None = None,
    n_levels: Sequence[int] | None = None,
    on_device: bool = True,
) -> ModelData:
    """The pure layer's :class:`ModelData` of a validated design (host side).

    ``n_levels``: per factor, at least its number of levels (default: exactly
    that); more gives padded levels without rows (``_padding``). ``on_device``:
    see :func:`model_data`. Call inside
    ``with jax.enable_x64(True):`` for float64.
    """
    return model_data(
        arrays.X,
        arrays.Z,
        arrays.codes,
        [f.n_levels for f in design.factors] if n_levels is None else list(n_levels),
        design.structures,
        weights=arrays.weights,
        dtype=dtype,
        memory_limit=memory_limit,
        on_device=on_device,
    )
