"""Example datasets bundled with jaxmixed.

The CSV files are lme4's (and MASS's, for nlschools) example datasets,
exported unchanged from R 4.2.2; see ``data/README.md`` in the package.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

__all__ = ["list_datasets", "load_dataset"]

# Columns that R treats as factors: read them as categoricals.
_FACTORS = {
    "sleepstudy": ["Subject"],
    "Dyestuff": ["Batch"],
    "Dyestuff2": ["Batch"],
    "Penicillin": ["plate", "sample"],
    "Pastes": ["batch", "cask", "sample"],
    "cbpp": ["herd", "period"],
    "InstEval": ["s", "d", "studage", "lectage", "service", "dept"],
    "nlschools": ["class", "COMB"],
}


def list_datasets() -> list[str]:
    """Names of the bundled datasets."""
    return sorted(_FACTORS)


def load_dataset(name: str) -> pd.DataFrame:
    """Loads a bundled dataset (``"sleepstudy"``, ``"InstEval"``, …) as a DataFrame.

    Columns R treats as factors are pandas categoricals.
    """
    if name not in _FACTORS:
        raise ValueError(f"unknown dataset {name!r}; available: {list_datasets()}")
    path = resources.files("jaxmixed") / "data" / f"{name}.csv"
    with path.open("r") as fh:
        df = pd.read_csv(fh, dtype={c: str for c in _FACTORS[name]})
    for col in _FACTORS[name]:
        values = df[col]
        # Integer-coded factors sort numerically, as R's factor() sorts them.
        if values.str.fullmatch(r"-?\d+").all():
            cats = sorted(values.unique(), key=int)
        else:
            cats = sorted(values.unique())
        df[col] = pd.Categorical(values, categories=cats)
    return df
