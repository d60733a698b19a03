"""Parsing of lme4-style formulas."""

from __future__ import annotations

import pytest

from jaxmixed.design._formula import FormulaError, RandomTerm, parse_formula


def test_slopes_formula():
    f = parse_formula("Reaction ~ Days + (Days | Subject)")
    assert f.response == "Reaction"
    assert f.fixed == "Days"
    assert f.random == (RandomTerm("Days", ("Subject",), "Subject", True),)


def test_uncorrelated_and_no_intercept_terms():
    f = parse_formula("y ~ 0 + x + (x || g) + (0 + z | h)")
    assert f.fixed == "0 + x"
    assert f.random[0] == RandomTerm("x", ("g",), "g", False)
    assert f.random[1] == RandomTerm("0 + z", ("h",), "h", True)


def test_random_term_first_and_intercept_only():
    assert parse_formula("y ~ (1 | g) + x").fixed == "x"
    assert parse_formula("y ~ (1 | g)").fixed == "1"
    assert parse_formula("y ~ -1 + (1 | g)").fixed == "0"


def test_nested_expands_like_lme4():
    f = parse_formula("strength ~ 1 + (1 | batch/cask)")
    assert [t.name for t in f.random] == ["batch", "cask:batch"]
    assert f.random[1].group == ("cask", "batch")


def test_interaction_grouping_factor():
    f = parse_formula("y ~ service + (1 | s) + (1 | d) + (1 | dept:service)")
    assert [t.name for t in f.random] == ["s", "d", "dept:service"]
    assert f.random[2].group == ("dept", "service")


def test_functions_and_nested_parentheses_stay_in_fixed_part():
    f = parse_formula("np.log(y) ~ I(x ** 2) + C(a) * b + np.log(x + 1) + (1 + x | g)")
    assert f.response == "np.log(y)"
    assert f.fixed == "I(x ** 2) + C(a) * b + np.log(x + 1)"
    assert f.random[0].expr == "1 + x"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("y ~ x + (1 | g", "unbalanced"),
        ("~ x + (1 | g)", "response ~ terms"),
        ("y ~ x * (1 | g)", "must be added with"),
        ("y ~ ( | g)", "empty side"),
        ("y ~ (1 | np.log(g))", "not a column name"),
    ],
)
def test_bad_formulas_raise_clear_errors(bad, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(bad)


def test_three_level_nesting_is_named_as_lme4_names_it():
    f = parse_formula("y ~ 1 + (1 | a/b/c)")
    assert [t.name for t in f.random] == ["a", "b:a", "c:(b:a)"]
    assert f.random[2].group == ("c", "b", "a")


@pytest.mark.parametrize("group", ["`my group`", 'Q("my group")', "Q('my group')", " `my group` "])
def test_quoted_grouping_factor_is_named_by_its_column(group):
    f = parse_formula(f"y ~ x + (1 | {group})")
    assert f.random == (RandomTerm("1", ("my group",), "my group", True),)


def test_quoted_names_keep_separators_and_nest_like_plain_names():
    f = parse_formula("y ~ `a|b` + (1 | `site:1`/Q('plot/2'))")
    assert f.fixed == "`a|b`"
    assert [t.group for t in f.random] == [("site:1",), ("plot/2", "site:1")]
    assert [t.name for t in f.random] == ["site:1", "plot/2:site:1"]


def test_dotted_names_are_read_whole():
    f = parse_formula("y.1 ~ x.1 + x.sq + (x.1 | g.1)")
    assert (f.response, f.fixed) == ("y.1", "x.1 + x.sq")
    assert f.random == (RandomTerm("x.1", ("g.1",), "g.1", True),)


def test_unclosed_backtick_is_an_error():
    with pytest.raises(FormulaError, match="unclosed `"):
        parse_formula("y ~ x + (1 | `g)")


@pytest.mark.parametrize("formula", ["y ~ x | g + (1 | g)", "y ~ x + x | g"])
def test_a_bar_outside_parentheses_is_named(formula):
    with pytest.raises(FormulaError, match="outside parentheses"):
        parse_formula(formula)
