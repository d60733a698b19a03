"""Big rows: 10,000,000 rows in 100,000 groups from arrays, over 4 host devices and over one.

``fit_reml`` from arrays with ``devices=4`` (a process with 4 host devices,
XLA_FLAGS ``--xla_force_host_platform_device_count=4``) and ``devices=None``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import _common as bench
from . import common

SEED = 20250403
FORMULA = "y ~ x1 + (x1 | g)"
DEVICES = (4, None)


def bigrows_arrays(n: int, n_groups: int, draw: int = 0):
    """y (n,), X (n, 2) = [1, x1], Z = X, groups (n,): groups of n / n_groups rows.

    Random intercept SD 1 and slope SD 0.5, correlation 0.3; residual SD 1;
    fixed effects (1, 0.5). ``draw`` changes y only (same X, Z, groups).
    """
    rng = np.random.default_rng([SEED, 0])
    groups = np.repeat(np.arange(n_groups, dtype=np.int64), -(-n // n_groups))[:n]
    x1 = rng.standard_normal(n)
    X = np.empty((n, 2))
    X[:, 0] = 1.0
    X[:, 1] = x1
    rng = np.random.default_rng([SEED, 1 + draw])
    cov = np.array([[1.0, 0.15], [0.15, 0.25]])
    b = rng.multivariate_normal(np.zeros(2), cov, size=n_groups)
    y = 1.0 + 0.5 * x1 + b[groups, 0] + b[groups, 1] * x1 + rng.standard_normal(n)
    return y, X, groups


def worker_bigrows_jaxmixed(spec: dict) -> dict:
    """Two ``fit_reml`` calls from arrays (first, then a new y); the host design from arrays alone."""
    out = common.start_jax()
    import jax

    import jaxmixed as jm

    devices = spec["devices"]
    out["jax_devices"] = len(jax.devices())
    out["simulate_s"], (y, X, groups) = bench.timed(bigrows_arrays, spec["n"], spec["groups"])
    # The host part of fit_reml alone: validation of the arrays, the design.
    out["design_arrays_s"], _ = bench.timed(jm.design.design_from_arrays, y, X, X, groups)
    with bench.caught_warnings() as caught:
        out["first_s"], res = bench.timed(jm.fit_reml, y=y, X=X, Z=X, groups=groups, devices=devices)
        out["memory_after_first"] = bench.peak_memory()
        y2, _, _ = bigrows_arrays(spec["n"], spec["groups"], draw=1)
        out["steady_s"], res2 = bench.timed(jm.fit_reml, y=y2, X=X, Z=X, groups=groups, devices=devices)
    out["warnings"] = bench.warning_lines(caught, 200)
    out["memory"] = bench.peak_memory()
    out["objective"] = float(res.objective)
    out["objective_steady"] = float(res2.objective)
    out["converged"] = bool(res.converged) and bool(res2.converged)
    out["n_iter"] = int(res.n_iter)
    out["fixef"] = [float(v) for v in res.fixed_effects.values]
    if spec.get("formula_design"):  # after the memory readings: a DataFrame and formulaic
        df = pd.DataFrame({"y": y, "x1": X[:, 1], "g": groups})
        out["design_formula_s"], _ = bench.timed(jm.design.build_design, FORMULA, df)
    return {**out, "versions": common.versions()}


def _about(n: int, g: int) -> str:
    return (
        f"`{FORMULA}`: {n:,} rows in {g:,} groups of {n // g}; random intercept SD 1, slope SD 0.5, "
        "correlation 0.3, residual SD 1. Generated as numpy arrays and fitted from arrays: "
        "`jm.fit_reml(y=y, X=X, Z=X, groups=g, devices=...)` in a fresh process; `devices=4` in a process "
        "with `XLA_FLAGS=--xla_force_host_platform_device_count=4` (4 host devices sharing the machine's cores), "
        "`devices=None` in a plain process. First call includes compilation; steady: a second call with a new y "
        "(same X, Z, groups). Peak memory: VmHWM of the process (data included; `ru_maxrss` alongside), after "
        "both calls. Host design building: `jaxmixed.design.design_from_arrays` alone (part of both calls)."
    )


def _run(ctx: common.Context, devices: int | None):
    """One process fitting with ``devices``: (its answer, None) or (None, error)."""
    n, g = ctx.sz["big_n"], ctx.sz["big_groups"]
    spec = {
        "n": n,
        "groups": g,
        "devices": devices,
        "formula_design": devices is None and ctx.args.formula_design,
    }
    res, err = common.run_worker("bigrows_jaxmixed", spec, ctx, xla_devices=devices)
    if err:
        bench.log(err)
        return None, err
    mem = res["memory"]
    bench.log(
        f"  devices={devices}: ({res['jax_devices']} JAX devices) first {res['first_s']:.2f} s, steady "
        f"{res['steady_s']:.2f} s, design (arrays) {res['design_arrays_s']:.2f} s, "
        f"peak VmHWM {bench.fmt_mib(mem['vmhwm'], unit=True)}, ru_maxrss {bench.fmt_mib(mem['ru_maxrss'], unit=True)}"
        + (f", formula design {res['design_formula_s']:.1f} s" if "design_formula_s" in res else "")
    )
    return res, None


def _row(devices: int | None, res: dict | None) -> list:
    if res is None:
        return [devices, "failed: see below", *[""] * 7]
    seconds = [res["first_s"], res["steady_s"], res["design_arrays_s"]]
    memory = [
        bench.fmt_mib(res["memory"]["vmhwm"], unit=True),
        bench.fmt_mib(res["memory"]["ru_maxrss"], unit=True),
    ]
    return [
        devices,
        res["jax_devices"],
        *map(bench.fmt_s, seconds),
        *memory,
        f"{res['objective']:.10g}",
        res["n_iter"],
    ]


def _comparison(a: dict, b: dict, n: int) -> list[str]:
    """devices=4 (a) against devices=None (b), and the formula route's host design when timed."""
    rel = abs(a["objective"] - b["objective"]) / abs(b["objective"])
    lines = [
        f"devices=4 / devices=None: first call {a['first_s'] / b['first_s']:.2f}, steady "
        f"{a['steady_s'] / b['steady_s']:.2f}; objectives differ by {rel:.1e} (relative). "
        f"Simulating the data (numpy, not counted): {bench.fmt_s(b['simulate_s'])} s.",
        "",
    ]
    if "design_formula_s" in b:
        lines += [
            f'For comparison, the formula route\'s host design (`jm.design.build_design("{FORMULA}", df)` on '
            f"a {n:,}-row DataFrame, formulaic): {bench.fmt_s(b['design_formula_s'])} s, against "
            f"{bench.fmt_s(b['design_arrays_s'])} s from arrays.",
            "",
        ]
    return lines


def case_bigrows(ctx: common.Context) -> list[str]:
    """The big-rows section of many.md: one process per device setting."""
    n, g = ctx.sz["big_n"], ctx.sz["big_groups"]
    bench.log(f"\n== Big rows: {n:,} rows in {g:,} groups, {FORMULA}, from arrays")
    runs = {devices: _run(ctx, devices) for devices in DEVICES}
    some = next((r for r, _ in runs.values() if r), None)
    columns = ["devices", "JAX devices", "first call (s)", "steady (s)", "host design from arrays (s)"]
    columns += ["peak memory", "ru_maxrss", "objective", "iterations"]
    lines = common.section_head(f"## Big rows: {n:,} rows, {g:,} groups, `(x1 | g)`", ctx, some, _about(n, g))
    lines += [*bench.md_table(columns, (_row(d, r) for d, (r, _) in runs.items())), ""]
    (a, _), (b, _) = runs[4], runs[None]
    if a and b:
        lines += _comparison(a, b, n)
    for devices, (res, err) in runs.items():
        lines += (
            common.failed(f"devices={devices}", err)
            if err
            else common.warned(f"devices={devices}", res["warnings"])
        )
    return lines


WORKERS = {"bigrows_jaxmixed": worker_bigrows_jaxmixed}
