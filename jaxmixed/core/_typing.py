"""Array types of the pure layer's records.

The records that carry data (``ModelData``, ``DesignIndex``) are built with
numpy on the host and handed to compiled functions, which place them on the
device; inside a traced function the same fields are JAX arrays. Their fields
are typed as either, with jaxtyping shapes (dimension names used across the
package: n rows, p fixed effects, q a factor's random-effect columns, J a
factor's levels, K dense columns per row or many fits, E stored non-zeros of
Z₁ᵀZ₂, P pairs of them, n_params θ entries).
"""

from __future__ import annotations

from typing import TypeAlias

import jax
import numpy as np

__all__ = ["HostOrDevice"]

# A numpy array on the host, or a JAX array (on a device, or traced).
HostOrDevice: TypeAlias = jax.Array | np.ndarray
