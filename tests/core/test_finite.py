"""galip_core.finite: the range check every entry point uses for numeric arguments."""

import math

import numpy as np
import pytest

from galip_core.finite import check_number_in_range


@pytest.mark.parametrize("value", [0.0, 0.5, 0.999, np.float64(0.9)])
def test_accepts_values_in_range(value):
    check_number_in_range("--ema_decay", value, 0.0, 1.0, high_open=True)


@pytest.mark.parametrize("value", [1.0, 2, -0.1, math.nan, math.inf, True, "0.5", None])
def test_refuses_values_out_of_range_naming_argument_and_range(value):
    with pytest.raises(ValueError, match=r"--ema_decay must be a finite number >= 0 and < 1, got"):
        check_number_in_range("--ema_decay", value, 0.0, 1.0, high_open=True)


def test_integer_kind_and_open_low_end():
    check_number_in_range("--steps", np.int64(3), 1, integer=True)
    check_number_in_range("--steps", 10**400, 1, integer=True)  # finite, even if no float holds it
    with pytest.raises(ValueError, match=r"--steps must be an integer >= 1 and <= 10, got 1000"):
        check_number_in_range("--steps", 1000, 1, 10, integer=True)
    for bad in (0, 1.5, np.float64(2.0), False):
        with pytest.raises(ValueError, match=r"--steps must be an integer >= 1, got"):
            check_number_in_range("--steps", bad, 1, integer=True)
    with pytest.raises(ValueError, match=r"`lr` must be a finite number > 0, got 0"):
        check_number_in_range("`lr`", 0, 0, low_open=True)
    check_number_in_range("`lr`", 1e-9, 0, low_open=True)
