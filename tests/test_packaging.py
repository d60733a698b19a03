"""The dependency range: every JAX from 0.9.2 except the three releases that deadlock."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {r.name: r for r in map(Requirement, project["dependencies"])}


@pytest.mark.parametrize("name", ["jax", "jaxlib"])
def test_jax_range_excludes_exactly_the_deadlocking_releases(name):
    spec = _requirements()[name].specifier
    for bad in ("0.10.0", "0.10.1", "0.10.2", "0.9.1"):
        assert bad not in spec, bad
    for good in ("0.9.2", "0.10.3", "0.11.2", "1.0.0"):
        assert good in spec, good


def test_lock_pins_the_verified_jax():
    lock = (ROOT / "requirements-lock.txt").read_text().splitlines()
    assert "jax==0.9.2" in lock and "jaxlib==0.9.2" in lock
