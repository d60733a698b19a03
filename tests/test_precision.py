"""Every matrix product the library traces runs at HIGHEST precision (``core._precision``).

A GPU runs float32 products on TF32 by default (sleepstudy's criterion 1.2e-4
off on an H100). No GPU here: the setting is checked in the lowered programs'
``dot_general`` operations, which carry it on every backend.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

import jaxmixed as jm
from jaxmixed.core._compile import CompiledFunction
from jaxmixed.core._precision import highest_precision

DOT = re.compile(r"stablehlo\.dot_general.*?precision = \[(\w+), (\w+)\]")


def _precisions(text: str) -> list[tuple[str, str]]:
    dots = [ln for ln in text.splitlines() if "stablehlo.dot_general" in ln]
    found = [m.groups() for ln in dots if (m := DOT.search(ln))]
    assert len(found) == len(dots), "a product without a precision attribute"
    return found


@pytest.fixture(scope="module")
def stats():
    fit = jm.fit_reml("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))
    data = jm.design.prepare(fit.design, fit.arrays, dtype=jnp.float32)
    return data, jnp.asarray(fit.arrays.y, jnp.float32), jnp.asarray(fit.fit_result.phi, jnp.float32)


def test_pure_layer_products_are_highest_inside_a_users_jit(stats):
    """Traced under the user's own jit with the default precision, the core's entry
    points still ask for HIGHEST in every product."""
    data, y, phi = stats
    programs = {
        "model_statistics": jax.jit(jm.core.model_statistics).lower(data, y),
        "objective": jax.jit(jm.core.objective).lower(phi, jm.core.model_statistics(data, y)),
        "fit": jax.jit(jm.core.fit).lower(jm.core.model_statistics(data, y)),
    }
    for name, lowered in programs.items():
        found = _precisions(lowered.as_text())
        assert found, f"{name}: no products found"
        assert set(found) == {("HIGHEST", "HIGHEST")}, name


def test_compiled_programs_are_lowered_at_highest():
    """CompiledFunction lowers any function (here one not decorated) at HIGHEST."""

    def product(a, b):
        return a @ b + jnp.einsum("ij,jk->ik", a, b)

    a = jnp.ones((3, 3), jnp.float32)
    lowered = CompiledFunction(product).lower(((a, a), {}), ((None, None), {}))
    assert set(_precisions(lowered.as_text())) == {("HIGHEST", "HIGHEST")}


def test_users_default_is_left_alone():
    """The setting holds while the library traces, and the user's default is restored."""
    before = jax.config.jax_default_matmul_precision  # pyright: ignore[reportAttributeAccessIssue]
    a = jnp.ones((2, 2), jnp.float32)
    inside = highest_precision(lambda: jax.config.jax_default_matmul_precision)()  # pyright: ignore[reportAttributeAccessIssue]
    assert inside == "highest"
    assert jax.config.jax_default_matmul_precision == before  # pyright: ignore[reportAttributeAccessIssue]
    plain = _precisions(jax.jit(lambda x: x @ x).lower(a).as_text())
    assert plain == [("DEFAULT", "DEFAULT")]
