"""The rounding tolerance: eps of the dtype times the reduction size, never a number that passed on one CPU."""

from __future__ import annotations

import math

import torch

from hyperclone.core.verify import kl_tolerance, rounding_tolerance


def test_the_worst_case_grows_linearly_and_the_typical_case_as_a_random_walk():
    eps = torch.finfo(torch.float32).eps
    assert rounding_tolerance(torch.float32, 512, worst_case=True) == 512 * eps
    assert rounding_tolerance(torch.float32, 4096) == 6 * 64 * eps
    assert rounding_tolerance(torch.float32, 4) == 4 * eps  # never above the worst case
    assert rounding_tolerance(torch.bfloat16, 100, magnitude=3.0) == 60 * torch.finfo(torch.bfloat16).eps * 3.0


def test_two_orders_of_one_long_sum_differ_by_less_than_the_tolerance():
    gen = torch.Generator().manual_seed(0)
    for n in (10, 1000, 100_000):
        x = torch.randn(n, generator=gen)
        forward, backward = float(x.cumsum(0)[-1]), float(x.flip(0).cumsum(0)[-1])
        assert abs(forward - backward) <= rounding_tolerance(torch.float32, n, magnitude=float(x.abs().sum()))


def test_kl_tolerance_is_the_hoeffding_bound_plus_float32_rounding():
    eps = torch.finfo(torch.float32).eps
    assert kl_tolerance(2048, 0.0) == rounding_tolerance(torch.float32, 2048) + eps * math.log(2048)
    assert kl_tolerance(2048, 1e-2) - kl_tolerance(2048, 0.0) == 1e-2**2 / 2
