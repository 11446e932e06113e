"""Checking settings when they are made, so a bad one is an error that names it -- never a run
that learns the reverse preference, divides by zero at step 1, or silently does nothing.

Each check raises ``ValueError("<Owner>.<field> = <value>: must be <allowed range>[; why]")``. The
run configs (``helpers.train.DPOConfig``, ``helpers.rlhf.RLHFConfig``) call them in
``__post_init__``, so the notebooks, ``dataclasses.replace`` and the command line (which builds the
same config) all get the same message.
"""

from __future__ import annotations

import math


def _describe(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def check_number(owner: str, name: str, value, *, integer: bool = False, low=None, high=None,
                 low_open: bool = False, high_open: bool = False, optional: bool = False, why: str = "") -> None:
    """``value`` is a finite number (an int if ``integer``) within the bounds, or None if ``optional``.

    Args:
        owner, name: for the message, e.g. ``"DPOConfig"``, ``"beta"``.
        low, high: bounds (None: unbounded); ``low_open``/``high_open`` exclude the bound itself.
        why: appended to the message (what goes wrong outside the range).
    """
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    allowed = f"{kind} {_describe(low, high, low_open, high_open)}" + (" or None" if optional else "")
    suffix = f"; {why}" if why else ""
    bad_type = isinstance(value, bool) or not isinstance(value, int if integer else (int, float))
    if bad_type or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} = {value!r}: must be {allowed}{suffix}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"{owner}.{name} = {value!r}: must be {allowed}{suffix}")


def check_choice(owner: str, name: str, value, choices) -> None:
    """``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{name} = {value!r}: must be one of {tuple(choices)}")


def check_bool(owner: str, name: str, value) -> None:
    """``value`` is True or False (not 0/1, not a string: ``"False"`` is truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name} = {value!r}: must be True or False")
