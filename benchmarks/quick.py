"""The quick regression suite: the library's own kernels, timed in one process (about a minute).

Per model (sleepstudy, Penicillin, 100,000 simulated rows of ``(x1 | g)``,
InstEval's first 400 students): one evaluation of the profiled criterion
``core.objective`` and of its value and gradient (jitted, compiled before
timing), the first ``fit_reml`` call in the process (compilation included),
its compilation (that call less a steady one) and its steady state. Then fits per
second of ``core.fit_responses`` (one vmapped computation) on 1,000 responses
simulated from sleepstudy's fit.

Writes ``results/quick.json`` (with the git commit) and prints every number
next to the previous ``quick.json``'s: ratio now / before, flagged when the
number is more than 1.2× worse. Timings are only comparable on the same,
otherwise idle machine.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ._common import (
    RESULTS,
    check_idle,
    fmt_s,
    log,
    md_table,
    no_compilation_cache,
    per_call_seconds,
    run_environment,
    timed,
    timed_repeats,
    write_json,
)
from .cases import SEED, SLOPES_FORMULA, load_insteval, reference_model, simulate_slopes

SLOWER = 1.2  # flag a number this many times worse than before
N_RESPONSES = 1_000


@dataclass(frozen=True)
class Number:
    """One measurement: ``value`` in ``unit`` of ``metric`` on ``model``."""

    model: str
    metric: str
    value: float
    unit: str = "s"
    higher_is_better: bool = False

    @property
    def key(self) -> str:
        return f"{self.model} / {self.metric}"


@dataclass(frozen=True)
class QuickModel:
    """A model of the suite and how to make its data."""

    name: str
    formula: str
    data: Callable[[], pd.DataFrame]


def _dataset(name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import jaxmixed as jm

        return jm.load_dataset(name)

    return load


def quick_models() -> tuple[QuickModel, ...]:
    sleep = reference_model("sleepstudy_slopes_reml")
    penicillin = reference_model("penicillin_crossed_reml")
    insteval = reference_model("insteval_crossed_reml")
    return (
        QuickModel("sleepstudy", sleep.formula, _dataset(sleep.dataset)),
        QuickModel("Penicillin", penicillin.formula, _dataset(penicillin.dataset)),
        QuickModel("slopes 100k", SLOPES_FORMULA, lambda: simulate_slopes(100_000, 1_000, SEED + 100_000)),
        QuickModel("InstEval 400 students", insteval.formula, lambda: load_insteval(quick=True)),
    )


def _statistics(formula: str, df: pd.DataFrame):
    """The model's data and statistics (float64), computed once."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from jaxmixed import core
    from jaxmixed import design as jmd

    design, arrays = jmd.build_design(formula, df)
    data = jmd.prepare(design, arrays)
    stats = jax.block_until_ready(eqx.filter_jit(core.model_statistics)(data, jnp.asarray(arrays.y)))
    return data, stats


def kernel_numbers(model: QuickModel) -> list[Number]:
    """The criterion, its value and gradient, and fit_reml's first call and steady state on one model."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import jaxmixed as jm
    from jaxmixed import core

    df = model.data()
    with jax.enable_x64(True):
        _, stats = _statistics(model.formula, df)
        phi = jnp.zeros(stats.n_params)  # the optimiser's start: Λ̃ = I
        value = eqx.filter_jit(core.objective)
        value_grad = eqx.filter_jit(jax.value_and_grad(core.objective))
        jax.block_until_ready((value(phi, stats), value_grad(phi, stats)))  # compile both first
        objective_s = per_call_seconds(lambda: jax.block_until_ready(value(phi, stats)))
        value_grad_s = per_call_seconds(lambda: jax.block_until_ready(value_grad(phi, stats)))
    first_s, _ = timed(jm.fit_reml, model.formula, data=df)
    steady_s = statistics.median(
        timed_repeats(lambda: jm.fit_reml(model.formula, data=df), max_repeats=10, budget=3.0)
    )
    return [
        Number(model.name, "objective", objective_s),
        Number(model.name, "value and gradient", value_grad_s),
        Number(model.name, "fit_reml first call", first_s),
        # The first call less a steady one: the compilation, and the first use of the design code.
        Number(model.name, "fit_reml compilation", first_s - steady_s),
        Number(model.name, "fit_reml steady", steady_s),
    ]


def vmap_numbers(n_fits: int = N_RESPONSES) -> list[Number]:
    """Fits per second of ``core.fit_responses`` on n_fits responses simulated from sleepstudy's fit."""
    import equinox as eqx
    import jax

    import jaxmixed as jm
    from jaxmixed import core

    sleep = reference_model("sleepstudy_slopes_reml")
    options = core.FitOptions()
    with jax.enable_x64(True):
        data, stats = _statistics(sleep.formula, jm.load_dataset(sleep.dataset))
        result = eqx.filter_jit(core.fit)(stats, options)
        ys = jax.block_until_ready(core.simulate(jax.random.key(SEED), data, result, n_fits))
        fit_many = eqx.filter_jit(core.fit_responses)
        first_s, fits = timed(lambda: jax.block_until_ready(fit_many(stats.design, ys, options)))
        steady = timed_repeats(
            lambda: jax.block_until_ready(fit_many(stats.design, ys, options)),
            min_repeats=2,
            max_repeats=3,
            budget=5.0,
        )
    name = f"sleepstudy × {n_fits:,} responses"
    log(f"  {name}: {int(fits.converged.sum())} of {n_fits} fits converged")
    return [
        Number(name, "fit_responses first call", first_s),
        Number(name, "fits per second", n_fits / statistics.median(steady), "fits/s", True),
    ]


def _fmt(value: float, unit: str) -> str:
    return fmt_s(value) if unit == "s" else f"{value:,.0f}"


def _comparison_row(n: Number, old: float | None) -> list[str]:
    if old is None or old <= 0 or n.value <= 0:
        return [f"{n.key} ({n.unit})", "–", _fmt(n.value, n.unit), "–", ""]
    ratio = n.value / old
    worse = (1 / ratio if n.higher_is_better else ratio) > SLOWER
    cells = [f"{n.key} ({n.unit})", _fmt(old, n.unit), _fmt(n.value, n.unit)]
    return [*cells, f"{ratio:.2f}", "SLOWER" if worse else ""]


def comparison(numbers: list[Number], previous: dict | None) -> str:
    """The table of every number beside the previous run's: ratio now / before, flagged when worse."""
    before = {f"{n['model']} / {n['metric']}": n["value"] for n in (previous or {}).get("numbers", [])}
    head = (previous or {}).get("environment", {})
    rows = (_comparison_row(n, before.get(n.key)) for n in numbers)
    lines = [
        f"previous: {head.get('git_commit', '–')} ({head.get('date', 'none')}); "
        f"flag: more than {SLOWER}× worse",
        "",
        *md_table(["model / number", "before", "now", "now / before", ""], rows, "lrrrl"),
    ]
    return "\n".join(lines)


def run_quick(out_dir: Path = RESULTS) -> int:
    """The quick suite; compares with and then replaces out_dir/quick.json."""
    no_compilation_cache()
    check_idle()
    path = out_dir / "quick.json"
    previous = json.loads(path.read_text()) if path.exists() else None
    env = run_environment()
    t0 = time.perf_counter()
    numbers: list[Number] = []
    for model in quick_models():
        log(f"quick: {model.name}")
        numbers += kernel_numbers(model)
    log("quick: fits per second under vmap")
    numbers += vmap_numbers()
    env["total_s"] = time.perf_counter() - t0
    write_json(path, {"environment": env, "numbers": [asdict(n) for n in numbers]})
    print(comparison(numbers, previous), flush=True)
    log(f"wrote {path} ({env['total_s']:.0f} s)")
    return 0
