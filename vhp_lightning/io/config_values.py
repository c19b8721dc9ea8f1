"""Checks of one integer setting, for the objects and functions that take it.

The run config's keys a user sets most often are checked all at once before anything is built
(``vhp_lightning.io.schema``); every other count (a model's K, a callback's ``n_images``, an
evaluation's ``n_samples``, ...) is checked where it is taken, with these functions and the
same rule as the schema's ``Count``/``NonNegative``: a whole number (``True`` is not 1, ``2.0``
is not 2) at least a minimum. The ``ValueError`` names the key, what it must be, the value given
and the fix::

    n_samples must be an integer >= 1, got 0. Give a whole number, e.g. n_samples=1.
"""

from __future__ import annotations

import numbers
from typing import Any


def int_at_least(
    minimum: int, name: str, value: Any, *, means: str = "", fix: str | None = None
) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``, else a
    ``ValueError``.

    Args:
        minimum: the smallest value allowed.
        name: the key, as the user writes it (``n_samples``, ``model.n_importance``), optionally
            followed by what it is in brackets: ``"model.n_importance (K)"``.
        value: the value given (a numpy integer counts as an integer).
        means: what a special value means, shown after the rule: ``"0 = off"``.
        fix: the sentence after the rule; default: a whole number with an example
            (``Give a whole number, e.g. n_samples=1.``); ``""``: none (the caller adds its own).
    """
    if not _is_int_at_least(value, minimum):
        raise ValueError(_message(name, value, minimum, means, fix, null=None))
    return int(value)


def positive_int(name: str, value: Any, *, fix: str | None = None) -> int:
    """``int_at_least(1, ...)``: a count such as a batch size, K or ``n_images``."""
    return int_at_least(1, name, value, fix=fix)


def non_negative_int(name: str, value: Any, *, means: str = "", fix: str | None = None) -> int:
    """``int_at_least(0, ...)``: a count that may be zero (``nll_samples``: ``0 = off``)."""
    return int_at_least(0, name, value, means=means, fix=fix)


def positive_int_or_none(name: str, value: Any, null: str, *, fix: str | None = None) -> int | None:
    """``None``, or ``positive_int``; ``null`` says what ``None`` means (``"all images"``)."""
    if value is None:
        return None
    if not _is_int_at_least(value, 1):
        raise ValueError(_message(name, value, 1, "", fix, null=null))
    return int(value)


def _is_int_at_least(value: Any, minimum: int) -> bool:
    """An integer (``int`` or numpy's, never a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return False
    return int(value) >= minimum


def _message(
    name: str, value: Any, minimum: int, means: str, fix: str | None, null: str | None
) -> str:
    """``<name> must be an integer >= <minimum> [(<means>)] [or null (<null>)], got <value>.
    <fix>``"""
    rule = f"an integer >= {minimum}" + (f" ({means})" if means else "")
    rule += f" or null ({null})" if null is not None else ""
    if fix is None:
        key = name.split(" (")[0]
        fix = f"Give a whole number, e.g. {key}={minimum}" + (
            f", or {key}=null." if null is not None else "."
        )
    return f"{name} must be {rule}, got {value!r}" + (f". {fix}" if fix else "")
