"""Shared helpers: lme4 references and a dense (explicit V) criterion."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

from jaxmixed.core._compile import compilation_cache_dir

# float32 and float64 must never mix silently: every test runs with JAX's strict
# dtype promotion (an implicit promotion is an error).
jax.config.update("jax_numpy_dtype_promotion", "strict")

# The suite compiles the same programs in many modules (the per-module cache clearing
# below drops them) and in both pytest-xdist workers and the subprocess tests: a
# persistent compilation cache under .pytest_cache (git-ignored) compiles each once,
# in a directory per jax version and CPU (jaxmixed's fingerprint): XLA's CPU programs
# from another machine may use instructions this one lacks.
_CACHE = compilation_cache_dir(Path(__file__).resolve().parent.parent / ".pytest_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))  # inherited by subprocesses
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Exporting each program costs 0.1-0.3 s more per compilation, hundreds of times in the
# suite: off here, and test_export_cache runs its processes with it on.
os.environ.setdefault("JAXMIXED_EXPORT_CACHE", "0")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_code():
    """Drops JAX's compiled executables after each test module.

    Every compiled executable keeps memory maps; a process that compiles a few
    hundred distinct shapes (the property tests draw new shapes each example)
    runs out of ``vm.max_map_count`` and XLA crashes while compiling
    (segmentation fault, seen here after ~140 tests). Clearing per module keeps
    the count flat; the speed issue bounds it inside the library.
    """
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def lme4_refs() -> dict:
    """lme4's fits (see tests/data/README.md for their origin)."""
    return json.loads((DATA / "lme4_reference.json").read_text())


# The GLMM modules (pytestmark = GLMM_GROUP) run in one xdist worker (--dist loadgroup):
# their fits compile for 5-20 s each, and in one process the session fits below and the
# persistent compilation cache serve every module that needs the same program.
GLMM_GROUP = pytest.mark.xdist_group("glmm")


def fit_glmm_quietly(*args, **kwargs):
    """``jm.fit_glmm`` that fails on any warning (a clean fit must not warn)."""
    import jaxmixed as jm

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return jm.fit_glmm(*args, **kwargs)


GLMM_CBIND = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
GLMM_OFFSET = "incidence ~ period + offset(log(size)) + (1 | herd)"
GLMM_GROUSE = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)"


@pytest.fixture(scope="session")
def cbpp_frame() -> pd.DataFrame:
    """lme4's cbpp (tests/data/cbpp.csv), herd and period as strings, with two columns
    of the GLMM tests: half = log(size)/2 and t = period/4."""
    df = pd.read_csv(DATA / "cbpp.csv")
    df = df.assign(herd=df["herd"].astype(str), period=df["period"].astype(str))
    return df.assign(half=np.log(df["size"]) / 2, t=df["period"].astype(float) / 4)


@pytest.fixture(scope="session")
def grouse_frame() -> pd.DataFrame:
    """lme4's grouseticks (tests/data/grouseticks.csv), its factors as strings."""
    return pd.read_csv(DATA / "grouseticks.csv", dtype={c: str for c in ("BROOD", "INDEX", "LOCATION", "YEAR")})


@pytest.fixture(scope="session")
def cbpp_logit_fit(cbpp_frame):
    """glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)."""
    return fit_glmm_quietly(GLMM_CBIND, cbpp_frame)


@pytest.fixture(scope="session")
def cbpp_offset_fit(cbpp_frame):
    """glmer(incidence ~ period + offset(log(size)) + (1 | herd), cbpp, poisson)."""
    return fit_glmm_quietly(GLMM_OFFSET, cbpp_frame, family="poisson")


@pytest.fixture(scope="session")
def grouse_fit(grouse_frame):
    """glmer(TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION), poisson)."""
    return fit_glmm_quietly(GLMM_GROUSE, grouse_frame, family="poisson")


def dense_v0(n, codes, Z, lams, weights=None):
    """V₀ = ZΛΛᵀZᵀ + W⁻¹ built explicitly (n×n)."""
    blocks = []
    for c, z, lam in zip(codes, Z, lams, strict=True):
        j = int(c.max()) + 1
        q = z.shape[1]
        full = np.zeros((n, j * q))
        for i in range(n):
            full[i, c[i] * q : (c[i] + 1) * q] = z[i]
        blocks.append(full @ np.kron(np.eye(j), lam))
    zl = np.concatenate(blocks, axis=1)
    w_inv = np.ones(n) if weights is None else 1.0 / np.asarray(weights)
    return zl @ zl.T + np.diag(w_inv)


def dense_criterion(y, X, codes, Z, lams, reml: bool, weights=None) -> float:
    """-2 log-likelihood (ML) or the REML criterion with V built explicitly.

    V₀ = Z Λ Λᵀ Zᵀ + W⁻¹ (prior weights W, default I); β̂ by generalised least squares; σ̂² = r²/n (ML) or
    r²/(n−p) (REML); then -2 log N(y; Xβ̂, σ̂² V₀), plus log|XᵀV⁻¹X| − p log 2π
    for REML... written out in full below, with no use of the package.
    """
    n, p = X.shape
    v0 = dense_v0(n, codes, Z, lams, weights)
    v0_inv = np.linalg.inv(v0)
    xtvx = X.T @ v0_inv @ X
    beta = np.linalg.solve(xtvx, X.T @ v0_inv @ y)
    resid = y - X @ beta
    r2 = resid @ v0_inv @ resid
    dof = n - p if reml else n
    sigma2 = r2 / dof
    v = sigma2 * v0
    _, logdet_v = np.linalg.slogdet(v)
    value = n * np.log(2 * np.pi) + logdet_v + resid @ np.linalg.solve(v, resid)
    if reml:
        _, logdet_xvx = np.linalg.slogdet(X.T @ np.linalg.solve(v, X))
        value += logdet_xvx - p * np.log(2 * np.pi)
    return float(value)
