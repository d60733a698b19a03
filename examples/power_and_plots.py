"""Power by simulation and the diagnostic plots of the sleepstudy model.

Prints the power of the test of ``Days`` at a small effect, a power curve
over the number of subjects, and saves the figures of the documentation
under ``examples/results/`` or the folder given
(``python examples/power_and_plots.py [folder]``; needs matplotlib).
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jaxmixed as jm  # noqa: E402  (after choosing the backend)

# the figures' folder: the first argument, else examples/results
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"

fit = jm.fit_reml("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))

# The power to detect a slope of 3 ms/day with these 18 subjects: 1,000 simulations,
# each refitted by ML with and without Days (likelihood-ratio test).
print(fit.power("Days", 3.0, n_sim=1000, key=1))
print(fit.power("Days", 3.0, n_sim=1000, test="satterthwaite", key=1))

# How many subjects for 80%? New subjects copy the existing ones' days.
curve = fit.power("Days", 3.0, n_sim=500, key=2, along="Subject", sizes=[6, 12, 18, 30, 45])
print(curve)

OUT.mkdir(parents=True, exist_ok=True)
figures = {
    "ranef.png": fit.plot_ranef(),
    "residuals.png": fit.plot_residuals(),
    "qq.png": fit.plot_qq(),
    "power_curve.png": curve.plot(),
    "profile.png": fit.profile().plot(),  # lme4's xyplot(profile(m))
}
for name, figure in figures.items():
    figure.savefig(OUT / name, dpi=80)
    print("saved", OUT / name)
