"""Property tests of the tensor rules: on repeated inputs, a grown matrix computes repeated outputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperclone.core.errors import HyperCloneError
from hyperclone.core.grow import VARIANTS, grow_matrix, repeat_vector, split_blocks, tensor_generator
from hyperclone.core.verify import rounding_tolerance

shapes = st.tuples(st.integers(1, 9), st.integers(1, 9))
factors = st.integers(1, 4)


def _matrix(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=150, deadline=None)
@given(shape=shapes, a=factors, b=factors, variant=st.sampled_from(VARIANTS), seed=st.integers(0, 10**6),
       snr=st.floats(0.0, 30.0))
def test_repeated_input_gives_repeated_output(shape, a, b, variant, seed, snr):
    w = _matrix(shape, seed)
    x = _matrix((shape[1],), seed + 1)
    wide = grow_matrix(w, a, b, variant, snr, tensor_generator(seed, "w"))
    assert wide.shape == (shape[0] * a, shape[1] * b)
    # Worst case over the wide dot product's in*b terms, plus up to 8 roundings that built each noisy weight
    # (row mean over b <= 4, centring, scaling, adding); magnitude: the sum of the terms' absolute values.
    magnitude = float((wide.abs() @ x.repeat(b).abs()).max())
    tol = rounding_tolerance(torch.float64, shape[1] * b + 8, magnitude, worst_case=True)
    torch.testing.assert_close(wide @ x.repeat(b), (w @ x).repeat(a), rtol=0, atol=tol)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, a=factors, b=st.integers(2, 4), seed=st.integers(0, 10**6))
def test_symmetric_blocks_are_w_over_b(shape, a, b, seed):
    w = _matrix(shape, seed)
    blocks = split_blocks(grow_matrix(w, a, b, "symmetric"), a, b)
    for i in range(a):
        for j in range(b):
            assert torch.equal(blocks[i, j], w / b)  # the same single division


@settings(max_examples=60, deadline=None)
@given(shape=shapes, a=factors, b=st.integers(2, 4), seed=st.integers(0, 10**6))
def test_diagonal_puts_w_on_the_wrapped_diagonal(shape, a, b, seed):
    w = _matrix(shape, seed)
    blocks = split_blocks(grow_matrix(w, a, b, "diagonal"), a, b)
    for i in range(a):
        for j in range(b):
            expected = w / b if a == 1 else w if j == i % b else torch.zeros_like(w)  # a single row: W/b
            assert torch.equal(blocks[i, j], expected)  # copies and the same single division


@pytest.mark.parametrize("variant", ["noisy_symmetric", "noisy_diagonal"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_noise_power_matches_the_requested_snr(variant, snr_db):
    w = _matrix((64, 48), 0)
    clean = grow_matrix(w, 2, 2, variant.removeprefix("noisy_"))
    noisy = grow_matrix(w, 2, 2, variant, snr_db, tensor_generator(0, "w"))
    measured = 10 * torch.log10(clean.pow(2).mean() / (noisy - clean).pow(2).mean())
    assert abs(float(measured) - snr_db) < 0.3


def test_noise_is_reproducible_from_the_seed_and_differs_across_seeds():
    w = _matrix((8, 8), 0)
    one = grow_matrix(w, 2, 2, "noisy_symmetric", 10, tensor_generator(3, "a"))
    again = grow_matrix(w, 2, 2, "noisy_symmetric", 10, tensor_generator(3, "a"))
    other = grow_matrix(w, 2, 2, "noisy_symmetric", 10, tensor_generator(4, "a"))
    assert torch.equal(one, again) and not torch.equal(one, other)


def test_bf16_is_computed_in_fp32_and_cast_back():
    w = _matrix((16, 16), 0).to(torch.bfloat16)
    wide = grow_matrix(w, 2, 3, "symmetric")
    assert wide.dtype == torch.bfloat16
    assert torch.equal(wide[:16, :16], (w.float() / 3).to(torch.bfloat16))


def test_vectors_repeat():
    v = torch.arange(3.0)
    assert repeat_vector(v, 3).tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_bad_factors_are_refused_with_a_reason(bad):
    from hyperclone.core.grow import check_factor

    with pytest.raises(HyperCloneError, match="factor must be an integer >= 1"):
        check_factor(bad)


def test_unknown_variant_is_refused():
    with pytest.raises(HyperCloneError, match="unknown variant 'wild'.*symmetric"):
        grow_matrix(torch.ones(2, 2), 2, 2, "wild")
