"""Fits lme4's sleepstudy model by REML and prints the summary."""

import jaxmixed as jm

df = jm.load_dataset("sleepstudy")
fit = jm.fit_reml("Reaction ~ Days + (Days | Subject)", data=df)
print(fit.summary())
print()
print("Conditional modes (first 5 subjects):")
print(fit.random_effects["Subject"].head())
