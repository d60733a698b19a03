"""Crossed random effects on lme4's InstEval (73,421 lecture ratings).

Students (2,972) crossed with lecturers (1,128) and department-by-service
(28 levels). lme4: ``lmer(y ~ 1 + service + (1|s) + (1|d) + (1|dept:service))``.
"""

import time

import jaxmixed as jm

df = jm.load_dataset("InstEval")
start = time.perf_counter()
fit = jm.fit_reml("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", data=df)
print(f"fitted in {time.perf_counter() - start:.1f} s (compilation included)\n")
print(fit.summary())
print("\nLecturers with the largest conditional modes:")
print(fit.random_effects["d"].sort_values("(Intercept)").tail())
