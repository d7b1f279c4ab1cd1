"""Pure tensor rules of HyperCloning: how one weight grows when its axes grow.

Every rule follows from one fact: in the wide model each hidden vector x of the
small model appears as k stacked copies [x, ..., x]. A matrix whose output axis
grows by ``a`` and input axis by ``b`` becomes an (a x b) grid of blocks; each
row of blocks sees b identical inputs, so the blocks of a row must sum to W.
The variants only differ in how that sum is split (and whether noise that
cancels within the row is added). Nothing here knows about models or names.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import torch

from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import VARIANT_HELP, VARIANTS, check_factor, check_variant  # noqa: F401 - the rules' vocabulary


def tensor_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from (seed, tensor name).

    Seeding per tensor name makes the noise independent of the order in which
    tensors are processed, so in-memory and streaming clones agree bit for bit.
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic is done in fp32 (fp64 stays fp64), then cast back to the source dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def repeat_vector(v: torch.Tensor, factor: int) -> torch.Tensor:
    """Biases and norm weights: the copies of x need the same bias/scale, so repeat."""
    return v.repeat(factor) if factor > 1 else v.clone()


def block_grid(w: torch.Tensor, out_factor: int, in_factor: int, variant: str) -> torch.Tensor:
    """The noise-free (a, b, out, in) grid of blocks whose rows each sum to ``w``."""
    a, b = out_factor, in_factor
    if variant.endswith("symmetric") or a == 1 or b == 1:  # one row or one column: nothing to put on a diagonal
        return (w / b).expand(a, b, *w.shape)
    grid = torch.zeros(a, b, *w.shape, dtype=w.dtype, device=w.device)
    for i in range(a):
        grid[i, i % b] = w  # a non-square grid wraps around the diagonal
    return grid


def row_cancelling_noise(
    shape: tuple[int, int, int, int], power: float, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """Gaussian noise of mean square ``power`` that sums to zero over each row of blocks.

    Subtracting the row mean makes the b blocks of a row cancel exactly (up to
    rounding), so with identical inputs the output is unchanged.
    """
    b = shape[1]
    z = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    z = z - z.mean(dim=1, keepdim=True)
    return z * (power * b / (b - 1)) ** 0.5


def grow_matrix(
    w: torch.Tensor,
    out_factor: int,
    in_factor: int,
    variant: str = "symmetric",
    snr_db: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Grow a [out, in] matrix into [out*a, in*b], preserving the function on repeated inputs.

    - b == 1 (only the output grows): stack W a times.
    - a == 1 (only the input grows, e.g. the LM head): [W/b, ..., W/b].
      This holds for every variant: a single row of blocks has no diagonal,
      and [W, 0, ...] would feed the output from one input copy only.
    - both: an (a x b) grid per ``variant``; noisy variants add noise of power
      ``mean(clean**2) / 10**(snr_db/10)`` that cancels within each row of blocks.
    """
    check_variant(variant)
    if w.dim() != 2:
        raise HyperCloneError(f"grow_matrix expects a 2-D tensor, got shape {tuple(w.shape)}")
    a, b = out_factor, in_factor
    if a == 1 and b == 1:
        return w.clone()
    work = _work_dtype(w.dtype)
    # A transposed view in (embeddings, GPT-2 Conv1D) gives a transposed view out, whose .T is contiguous:
    # the caller's transpose back then costs no second pass over the output.
    transposed = not w.is_contiguous() and w.T.is_contiguous()
    if b == 1:  # only the output grows: stack W
        return w.T.repeat(1, a).T if transposed else w.repeat(a, 1)
    if variant == "symmetric" or (a == 1 and variant == "diagonal"):
        # The hot path, in one pass that writes each output element once: W/b broadcast into the (a x b)
        # grid. torch computes a half-precision division in fp32 and rounds once, so this equals
        # (w.to(fp32) / b).to(w.dtype) tiled, bit for bit, without the temporaries.
        rows, cols = w.shape
        if transposed:
            out = torch.empty(b * cols, a * rows, dtype=w.dtype, device=w.device).T
            grid = out.T.view(b, cols, a, rows).permute(2, 0, 3, 1)
        else:
            out = torch.empty(a * rows, b * cols, dtype=w.dtype, device=w.device)
            grid = out.view(a, rows, b, cols).permute(0, 2, 1, 3)
        torch.div(w.expand(a, b, rows, cols), b, out=grid)
        return out
    grid = block_grid(w.to(work), a, b, variant)
    if variant.startswith("noisy"):
        if generator is None:
            raise HyperCloneError("noisy variants need a generator (pass seed to clone)")
        power = float(grid.pow(2).mean()) / 10 ** (snr_db / 10)
        noise = row_cancelling_noise(tuple(grid.shape), power, generator, work).to(grid.device)
        grid = grid + noise
    rows, cols = w.shape
    return grid.permute(0, 2, 1, 3).reshape(a * rows, b * cols).to(w.dtype)


def split_blocks(w: torch.Tensor, out_factor: int, in_factor: int) -> torch.Tensor:
    """Inverse view of :func:`grow_matrix`'s layout: [out*a, in*b] -> (a, b, out, in)."""
    a, b = out_factor, in_factor
    rows, cols = w.shape[0] // a, w.shape[1] // b
    return w.reshape(a, rows, b, cols).permute(0, 2, 1, 3)


def grow_experts(w: torch.Tensor, grow_one: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A stack of per-expert matrices [experts, out, in] (MoE): the expert axis never grows.

    ``grow_one(e, w[e])`` grows expert ``e`` as a matrix; each result is written into one wide tensor as it
    comes, so the peak is the wide stack plus one wide expert.
    """
    if w.dim() != 3 or w.shape[0] == 0:
        raise HyperCloneError(f"grow_experts expects a non-empty [experts, out, in] stack, got shape {tuple(w.shape)}")
    out = None
    for e in range(w.shape[0]):
        grown = grow_one(e, w[e])
        if out is None:
            out = grown.new_empty((w.shape[0], *grown.shape))
        out[e] = grown
    return out
