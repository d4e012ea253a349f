"""One check for the numeric settings that the objectives, the model config, `fit` and the CLI take."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def check_number(name: str, value: object, accept: Callable[[float], bool], what: str) -> float:
    """`value` as a float when it is a finite real number (not a bool) that `accept`s; else a ValueError
    saying `name` must be `what`. NaN and infinities never pass: as a weight or a rate they only make NaNs."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not accept(value):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return float(value)


def positive_int(name: str, value: object) -> int:
    """`value` when it is an int >= 1 (not a bool); else a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def non_negative(name: str, value: object) -> float:
    return check_number(name, value, lambda v: v >= 0, "a finite number >= 0")


def positive(name: str, value: object) -> float:
    return check_number(name, value, lambda v: v > 0, "a finite number > 0")


def number_arg(accept: Callable[[float], bool], what: str) -> Callable[[str], float]:
    """An argparse type: a finite float that `accept`s, else a usage error saying it must be `what`."""

    def parse(text: str) -> float:
        try:
            return check_number("the value", float(text), accept, what)
        except ValueError:  # not a number, not finite, or not accepted
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None

    return parse


positive_arg = number_arg(lambda v: v > 0, "a finite number > 0")
non_negative_arg = number_arg(lambda v: v >= 0, "a finite number >= 0")


def int_arg(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int >= `minimum` (and <= `maximum`), else a usage error."""
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    if maximum is not None:
        what = f"an int from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


positive_int_arg = int_arg(1)
seed_arg = int_arg(0, 2**63 - 1)  # what torch.manual_seed takes
# A peak learning rate above 10 is a typo for every optimizer here (AdamW moves each weight by about lr per step).
lr_arg = number_arg(lambda v: 0 < v <= 10, "a learning rate in (0, 10]")
