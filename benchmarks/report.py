"""The peer comparison's agreement of estimates and its markdown report (latest.md).

The results are the JSON of ``latest.json``: per case, one dict per tool
(the worker's answer, see ``workers`` and ``lme4.R``) and the comparisons.
"""

from __future__ import annotations

import math

import numpy as np

from ._common import fmt_mib, fmt_rel, fmt_s, md_table

TOOLS = ("jaxmixed", "statsmodels", "lme4")


# --------------------------------------------------------------------------------------
# Agreement of the estimates
# --------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.replace("(", "").replace(")", "").strip()


def jm_vc_dict(jm: dict) -> dict[tuple[str, str, str], float]:
    """jaxmixed's varcorr rows keyed by (group, var1, var2)."""
    return {(_norm(r["grp"]), _norm(r["var1"]), _norm(r["var2"])): r["vcov"] for r in jm["varcorr"]}


def vc_rel_diff(ref: dict, other: dict) -> float:
    """Largest |difference| of matched variances/covariances, each over sqrt(var_i var_j) of ref.

    For variances this is the relative difference; for covariances it is the
    difference on the correlation scale (times the ratio of the SDs). The
    residual variance is one of the entries. NaN unless every entry of ref matched.
    """
    var = {(g, v1): val for (g, v1, v2), val in ref.items() if not v2}
    worst = 0.0
    matched = 0
    for key, val in ref.items():
        if key not in other:
            continue
        g, v1, v2 = key
        scale = math.sqrt(var.get((g, v1), 0.0) * var.get((g, v2 or v1), 0.0))
        floor = 1e-10 * max(abs(x) for x in ref.values())
        worst = max(worst, abs(other[key] - val) / max(scale, floor))
        matched += 1
    return worst if matched == len(ref) else float("nan")


def rel_diff(a, b) -> float:
    """Largest |a - b| / |b| (NaN when the shapes differ)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        return float("nan")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))) if a.size else 0.0


def abs_diff(a, b) -> float:
    """Largest |a - b| (NaN when the shapes differ or are empty)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b))) if a.shape == b.shape and a.size else float("nan")


def statsmodels_vc(group: str | None, jm: dict, sm: dict) -> dict:
    """statsmodels' variance components keyed like jaxmixed's varcorr rows."""
    out = {("Residual", "", ""): sm["scale"]}
    if group is not None:
        cols = [r["var1"] for r in jm["varcorr"] if r["grp"] == group and not r["var2"]]
        cov = np.asarray(sm["cov_re"])
        if cov.shape != (len(cols), len(cols)):
            return {}
        for j, cj in enumerate(cols):  # the same column order: intercept, then the formula's
            out[(group, _norm(cj), "")] = cov[j, j]
            for i in range(j + 1, len(cols)):
                out[(group, _norm(cj), _norm(cols[i]))] = cov[i, j]
    for name, value in zip(sm["vcomp_names"], sm["vcomp"], strict=True):
        out[(name, "Intercept", "")] = value
    return out


def lme4_vc(r: dict) -> dict:
    """lme4's VarCorr rows keyed like jaxmixed's."""
    return {
        (_norm(g), _norm(v1), _norm(v2)): val
        for g, v1, v2, val in zip(r["vc_grp"], r["vc_var1"], r["vc_var2"], r["vc_vcov"], strict=True)
    }


def compare(sm_groups: str | None, jm: dict, peer: dict, which: str) -> dict:
    """Largest relative differences between jaxmixed's estimates and a peer's (the reference).

    ``sm_groups``: statsmodels' grouping column of the case (None: one group).
    """
    if jm.get("status") != "ok" or peer.get("status") != "ok":
        return {}
    peer_vc = statsmodels_vc(sm_groups, jm, peer) if which == "statsmodels" else lme4_vc(peer)
    return {
        # Fixed effects matched by position: both use treatment coding in formula order.
        "fixef": rel_diff(jm["fixef"], peer["fixef"]),
        "objective": rel_diff([jm["objective"]], [peer["objective"]]),
        "objective_abs": abs(jm["objective"] - peer["objective"]),
        "varcomp": vc_rel_diff(peer_vc, jm_vc_dict(jm)),
        # θ is relative to σ already (unitless) and may be 0 at the boundary: absolute difference.
        "theta_abs": abs_diff(jm["theta"], peer["theta"]) if which == "lme4" else None,
    }


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------


def peer_time(r: dict) -> str:
    if r.get("status") == "ok":
        return fmt_s(r["fit_s"])
    if r.get("status") == "timeout":
        return r["error"]
    if r.get("status") == "skipped":
        return "skipped"
    return "failed"


def ratio(r: dict, jm: dict) -> str:
    if r.get("status") != "ok" or jm.get("status") != "ok":
        return "–"
    return f"{r['fit_s'] / jm['fit_reml_s']:.1f}×"


def short_note(note) -> str:
    if not note:
        return "–"
    note = str(note)
    return note if len(note) < 60 and "\n" not in note else "failed (see latest.json)"


def _header(results: dict) -> list[str]:
    env = results["environment"]
    return [
        "# jaxmixed benchmarks",
        "",
        f"{env['date']}; {env['platform']}, {env['cpu_count']} CPUs; Python {env['python']}, "
        f"jax {env['jax']}, statsmodels {env['statsmodels']}; lme4: {results.get('lme4_versions') or env['lme4']}; "
        f"jaxmixed at {env['git_commit']}{' (working tree modified)' if env['jaxmixed_dirty'] else ''}.",
        "",
        f"Command: `{env['command']}`",
    ]


def _time_row(key: str, c: dict) -> list:
    jm, sm, r4 = c["jaxmixed"], c["statsmodels"], c["lme4"]
    head = [f"({key}) {c['spec']['title']}", f"{c['n_obs']:,}"]
    if jm.get("status") != "ok":
        return [*head, f"jaxmixed {jm.get('status')}", *[""] * 5, peer_time(sm), "", peer_time(r4), ""]
    seconds = [jm[k] for k in ("first_call_s", "fit_reml_s", "fit_statistics_s", "model_statistics_s")]
    jaxmixed = [*map(fmt_s, seconds), f"{jm['fit_reml_s'] / jm['model_statistics_s']:.1f}×", jm["n_iter"]]
    return [*head, *jaxmixed, peer_time(sm), ratio(sm, jm), peer_time(r4), ratio(r4, jm)]


def _time_table(cases: dict) -> list[str]:
    columns = (
        "case | rows | (i) first call | (ii) fit_reml | (iii) core.fit | (iv) model_statistics | (ii) / (iv) "
        "| iterations | statsmodels | statsmodels / (ii) | lme4 | lme4 / (ii)"
    )
    return [
        "## Fit time (seconds, REML)",
        "",
        "jaxmixed: (i) first call in a fresh process, compilation included; (ii) steady state of the "
        "whole `fit_reml` call (median of repeats); (iii) the compiled core fit `core.fit` alone, on "
        "precomputed statistics; (iv) the one pass over the data, `core.model_statistics`. "
        "Peers: one fit (median of up to 5 when a fit takes under a second); ratio = peer / jaxmixed (ii).",
        "",
        *md_table(columns, (_time_row(key, c) for key, c in cases.items())),
    ]


def _breakdown_row(key: str, jm: dict) -> list[str]:
    rest = jm["fit_reml_s"] - jm["build_design_s"] - jm["model_statistics_s"] - jm["fit_statistics_s"]
    seconds = [jm["fit_reml_s"], jm["build_design_s"], jm["model_statistics_s"], jm["fit_statistics_s"]]
    return [f"({key})", *map(fmt_s, [*seconds, max(rest, 0.0), jm["fit_reml_s"] - jm["model_statistics_s"]])]


def _breakdown_table(cases: dict) -> list[str]:
    columns = (
        "case | (ii) fit_reml | build_design | (iv) model_statistics | (iii) core.fit "
        "| rest (results, SEs, BLUPs) | (ii) − (iv)"
    )
    rows = (_breakdown_row(k, c["jaxmixed"]) for k, c in cases.items() if c["jaxmixed"].get("status") == "ok")
    return ["### Where the steady-state time of jaxmixed goes (median seconds)", "", *md_table(columns, rows)]


def _converged(c: dict) -> str:
    flags = [
        f"{t}: {'yes' if c[t].get('converged', not c[t].get('messages')) else 'no'}"
        for t in TOOLS
        if c[t].get("status") == "ok"
    ]
    return ", ".join(flags) or "–"


def _agreement_row(key: str, c: dict) -> list[str]:
    sm, r4, jm = c["vs_statsmodels"], c["vs_lme4"], c["jaxmixed"]
    cells = [sm.get("fixef"), sm.get("objective"), sm.get("varcomp")]
    cells += [r4.get("fixef"), r4.get("objective"), r4.get("varcomp"), r4.get("theta_abs")]
    obj = f"{jm['objective']:.6f}" if jm.get("status") == "ok" else "–"
    return [f"({key})", *map(fmt_rel, cells), obj, _converged(c)]


def _agreement_table(cases: dict) -> list[str]:
    columns = (
        "case | sm fixef | sm objective | sm var. comp. | lme4 fixef | lme4 objective | lme4 var. comp. "
        "| lme4 θ (abs.) | jaxmixed objective | converged"
    )
    return [
        "## Agreement of the estimates (largest relative difference, peer as reference)",
        "",
        "fixef: fixed effects; objective: REML criterion (statsmodels: −2·llf); variance "
        "components: covariance entries incl. the residual variance, each difference divided by "
        "sqrt(var_i·var_j) of the peer; lme4 θ: largest absolute difference of lme4's θ (relative to σ already).",
        "",
        *md_table(columns, (_agreement_row(key, c) for key, c in cases.items()), "l" + "r" * 8 + "l"),
    ]


def _memory_table(cases: dict) -> list[str]:
    def row(key: str, c: dict) -> list[str]:
        return [
            f"({key})",
            *(fmt_mib(c[t].get("maxrss_bytes")) if c[t].get("status") != "skipped" else "–" for t in TOOLS),
        ]

    rows = (row(key, c) for key, c in cases.items())
    title = "## Peak memory (maximum resident set size of the fitting subprocess, MiB)"
    return [title, "", *md_table("case | jaxmixed | statsmodels | lme4 (Rscript)", rows)]


def _notes(cases: dict) -> list[str]:
    notes = []
    for key, c in cases.items():
        for tool in TOOLS:
            r = c[tool]
            if r.get("status") not in ("ok", "skipped"):
                notes.append(f"- ({key}) {tool}: {r.get('status')}: {str(r.get('error', '')).strip()[-400:]}")
            elif r.get("status") == "skipped" and r.get("error") not in (None, "skipped"):
                notes.append(f"- ({key}) {tool} skipped: {r['error']}")
            for w in r.get("warnings", []) + r.get("messages", []):
                notes.append(f"- ({key}) {tool} warned: {w}")
    return ["## Notes", "", *dict.fromkeys(notes)] if notes else []


def _scaling_row(r: dict) -> list[str]:
    sm = fmt_s(r["statsmodels_s"]) if "statsmodels_s" in r else short_note(r.get("statsmodels_note"))
    r4 = fmt_s(r["lme4_s"]) if "lme4_s" in r else short_note(r.get("lme4_note"))
    jm = [r.get(f"jaxmixed_{k}_s") for k in ("first", "steady", "core", "onepass")]
    return [f"{r['n']:,}", *map(fmt_s, jm), sm, r4, fmt_mib(r.get("jaxmixed_maxrss_bytes"))]


def _scaling_table(results: dict) -> list[str]:
    if not results.get("scaling"):
        return []
    columns = (
        "n | jaxmixed first call | jaxmixed steady | core.fit | model_statistics | statsmodels | lme4 "
        "| jaxmixed peak RSS (MiB)"
    )
    lines = [
        "## Scaling: `y ~ x1 + x2 + x3 + (x1 | g)`, n rows in n/100 groups (seconds)",
        "",
        *md_table(columns, map(_scaling_row, results["scaling"]), "r" * 8),
    ]
    if results.get("scaling_plot"):
        lines += ["", f"![scaling]({results['scaling_plot']})"]
    return lines


def markdown(results: dict) -> str:
    """latest.md: fit times, their breakdown, agreement, peak memory, notes, scaling."""
    cases = results["cases"]
    sections = [
        _header(results),
        _time_table(cases),
        _breakdown_table(cases),
        _agreement_table(cases),
        _memory_table(cases),
        _notes(cases),
        _scaling_table(results),
    ]
    lines: list[str] = []
    for section in sections:
        if section:
            lines += ["", *section] if lines else section
    return "\n".join(lines) + "\n"
