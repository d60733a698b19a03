"""Bundled datasets."""

from __future__ import annotations

import pandas as pd
import pytest

import jaxmixed as jm


@pytest.mark.parametrize(
    "name, rows",
    [
        ("sleepstudy", 180),
        ("Dyestuff", 30),
        ("Dyestuff2", 30),
        ("Penicillin", 144),
        ("Pastes", 60),
        ("InstEval", 73421),
        ("nlschools", 2287),
        ("cbpp", 56),
    ],
)
def test_datasets_load_with_factor_columns(name, rows):
    df = jm.load_dataset(name)
    assert len(df) == rows
    assert any(isinstance(t, pd.CategoricalDtype) for t in df.dtypes)


def test_integer_coded_factors_sort_numerically():
    cats = list(jm.load_dataset("sleepstudy").Subject.cat.categories)
    assert cats == sorted(cats, key=int)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        jm.load_dataset("nope")
