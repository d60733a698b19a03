"""The real-models suite's report: real.md (the table, also printed) and real.json (every number)."""

from __future__ import annotations

import statistics
from pathlib import Path

from ._common import fmt_mib, fmt_rel, fmt_s, md_table, write_results

COLUMNS = (
    "model | rows | factor levels | jaxmixed first call | jaxmixed steady | lme4 first fit | lme4 steady "
    "| ratio | objective rel. diff. | jaxmixed REML criterion | peak MiB (jaxmixed / lme4)"
)


def median_ratio(results: dict) -> float | None:
    """The median over models of lme4's steady time over jaxmixed's (None when no model has both)."""
    ratios = [m["lme4_over_jaxmixed"] for m in results["models"] if m["lme4_over_jaxmixed"] is not None]
    return statistics.median(ratios) if ratios else None


def _levels(levels: dict[str, int]) -> str:
    return ", ".join(f"{col} {n:,}" for col, n in levels.items())


def _status(r: dict) -> str:
    return "" if r.get("status") == "ok" else str(r.get("status"))


def _row(m: dict) -> list[str]:
    jm, r4 = m["jaxmixed"], m["lme4"]
    jm_ok, r4_ok = jm.get("status") == "ok", r4.get("status") == "ok"
    times = r4.get("fit_times", []) if r4_ok else []
    return [
        f"{m['key']} (`{m['formula']}`)".replace("|", "\\|"),  # a bar inside a cell ends it
        f"{m['n_obs']:,}",
        _levels(m["levels"]),
        fmt_s(jm["first_call_s"]) if jm_ok else _status(jm),
        fmt_s(jm["fit_reml_s"]) if jm_ok else "",
        fmt_s(times[0]) if times else _status(r4),
        fmt_s(statistics.median(times[1:])) if len(times) > 1 else "",
        f"{m['lme4_over_jaxmixed']:.2f}×" if m["lme4_over_jaxmixed"] is not None else "–",
        fmt_rel(m["objective_rel_diff"]),
        f"{jm['objective']:.4f}" if jm_ok else "–",
        f"{fmt_mib(jm.get('maxrss_bytes'))} / {fmt_mib(r4.get('maxrss_bytes'))}",
    ]


def _notes(results: dict) -> list[str]:
    notes = []
    for m in results["models"]:
        for tool in ("jaxmixed", "lme4"):
            r = m[tool]
            if r.get("status") != "ok":
                notes.append(
                    f"- {m['key']} {tool}: {r.get('status')}: {str(r.get('error', '')).strip()[-400:]}"
                )
            for w in r.get("warnings", []) + r.get("messages", []):
                notes.append(f"- {m['key']} {tool} warned: {w}")
            if tool == "jaxmixed" and r.get("status") == "ok" and not r.get("converged", True):
                notes.append(f"- {m['key']} jaxmixed did not converge: {r.get('convergence_message')}")
    return ["", "## Notes", "", *dict.fromkeys(notes)] if notes else []


def markdown(results: dict) -> str:
    """The table of every model, the median ratio and the notes."""
    env = results["environment"]
    ratio = median_ratio(results)
    lines = [
        "# jaxmixed against lme4 on mlmRev's models",
        "",
        f"{env['date']}; {env['platform']}, {env['cpu_count']} CPUs; Python {env['python']}, jax {env['jax']}; "
        f"lme4: {results.get('lme4_versions', 'not run')}; jaxmixed at {env['git_commit']}"
        f"{' (working tree modified)' if env['jaxmixed_dirty'] else ''}.",
        "",
        f"Command: `{env['command']}`",
        "",
        "REML fits, seconds. jaxmixed: first `fit_reml` call in a fresh process (compilation included), "
        "then the steady state (median of 5 further calls). lme4: six `lmer` fits in one R process; "
        "the first is a warm-up, the median of the other five its steady state. ratio = lme4 steady / "
        "jaxmixed steady (above 1: "
        "jaxmixed is faster). Objective: relative difference of the REML criteria, lme4 as reference "
        "(jaxmixed lower than lme4 is allowed: lme4 stops at a tolerance). Peak memory: the fitting "
        "process's maximum resident set size.",
        "",
        *md_table(COLUMNS, map(_row, results["models"]), "lrl" + "r" * 8),
        "",
        f"Median ratio lme4 / jaxmixed: {f'{ratio:.2f}×' if ratio is not None else '–'} "
        f"(over {sum(m['lme4_over_jaxmixed'] is not None for m in results['models'])} models).",
        *_notes(results),
    ]
    return "\n".join(lines) + "\n"


def save(results: dict, out_dir: Path) -> None:
    """real.json and real.md in out_dir."""
    results = {**results, "median_lme4_over_jaxmixed": median_ratio(results)}
    write_results(out_dir, "real", results, markdown(results))
