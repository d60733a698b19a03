#!/usr/bin/env python
"""Benchmarks of many fits: fit_reml_many, the parametric bootstrap, big rows over devices.

Four cases, each writing its own section of ``benchmarks/results/many.md``
(sections of cases not run keep their earlier text):

- ``w4``: 1,000 responses over one design (40 subjects x 8 observations),
  ``y ~ x1 + x2 + (1 | subject)``, each response with its own variance ratio
  (about 10% with no subject variance). ``fit_reml_many``: first call in a
  fresh process (compilation included) and steady calls with new responses.
  Every response is also fitted by a fresh ``lmer`` (lme4, through
  ``many_benchmark.R``) and a fresh statsmodels ``MixedLM``: the REML
  criterion of each fit is compared with jaxmixed's.
- ``genomics``: 20,000 responses x 500 samples, ``y ~ x + (1 | individual) +
  (1 | batch)`` (100 individuals x 5 samples, 10 batches crossing them): time
  and peak memory of ``fit_reml_many``; lme4 on the first 200 responses,
  extrapolated, and their objectives compared.
- ``bootstrap``: sleepstudy, ``Reaction ~ Days + (Days | Subject)``,
  ``m.bootstrap(10_000)`` first call and steady call; percentile against Wald
  interval widths; lme4's ``bootMer`` (1,000 replicates) in the same run.
- ``bigrows``: 10,000,000 rows in 100,000 groups, ``y ~ x1 + (x1 | g)``,
  ``fit_reml`` from arrays with ``devices=4`` (4 host devices, XLA_FLAGS
  ``--xla_force_host_platform_device_count=4``) and with ``devices=None``.

Each jaxmixed, statsmodels and lme4 measurement runs in its own fresh
subprocess: compilation is real and peak memory belongs to that measurement.
jaxmixed's times exclude importing the library and JAX's backend start-up
(both printed separately). Simulated data come from fixed seeds; response k of
a case depends only on (seed, k), so every tool (and --quick) sees the same
responses.

The code is the package ``benchmarks/many/`` (``common``, one module per case,
``cli``); this script is its entry point, and also what each worker process runs
(``--worker KIND SPEC OUT``).

Usage (from the repository root; only on an otherwise idle machine):

    .venv/bin/python benchmarks/many_benchmark.py                  # all cases (roughly 10-20 min)
    .venv/bin/python benchmarks/many_benchmark.py --quick          # smoke run, small sizes (< 2 min)
    .venv/bin/python benchmarks/many_benchmark.py --cases w4,bootstrap
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # As a script, Python puts benchmarks/ first on sys.path; the package lives one level up.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.many.cli import main

    main(__doc__.splitlines()[0])
