"""The one check of an integer setting (``vhp_lightning.io.config_values``): its message names the
key, the rule, the value given and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from vhp_lightning.io.config_values import (
    int_at_least,
    non_negative_int,
    positive_int,
    positive_int_or_none,
)


@pytest.mark.parametrize(
    ("value", "given"), [(True, "True"), (2.5, "2.5"), (2.0, "2.0"), (0, "0"), ("3", "'3'")]
)
def test_positive_int_refuses_with_the_key_the_rule_the_value_and_the_fix(value, given) -> None:
    with pytest.raises(ValueError) as err:
        positive_int("n_samples", value)
    assert str(err.value) == (
        f"n_samples must be an integer >= 1, got {given}. Give a whole number, e.g. n_samples=1."
    )


def test_the_messages_of_the_variants() -> None:
    with pytest.raises(ValueError) as err:
        non_negative_int("nll_samples", -1, means="0 = off")
    assert str(err.value) == (
        "nll_samples must be an integer >= 0 (0 = off), got -1. Give a whole number, e.g. "
        "nll_samples=0."
    )
    with pytest.raises(ValueError) as err:
        positive_int_or_none("limit", False, "all images")
    assert str(err.value) == (
        "limit must be an integer >= 1 or null (all images), got False. Give a whole number, "
        "e.g. limit=1, or limit=null."
    )
    with pytest.raises(ValueError) as err:  # a bracketed note is not part of the key
        int_at_least(2, "model.n_importance (K)", 1)
    assert str(err.value).endswith("got 1. Give a whole number, e.g. model.n_importance=2.")
    with pytest.raises(ValueError) as err:  # the caller's own fix, or none
        positive_int("chunk", 0, fix="")
    assert str(err.value) == "chunk must be an integer >= 1, got 0"


def test_a_valid_value_comes_back_as_a_plain_int() -> None:
    assert positive_int("n", 3) == 3 and non_negative_int("n", 0) == 0
    value = positive_int("n", np.int64(7))
    assert value == 7 and type(value) is int
    assert positive_int_or_none("n", None, "all") is None
    assert positive_int_or_none("n", 4, "all") == 4
