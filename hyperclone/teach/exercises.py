"""Checks for the notebooks' exercises: each one computes the right answer from the library and says
whether the student's answer matches it.

A notebook exercise is three cells: the student's answer (``None`` until written), a collapsed
solution, and a check cell calling :func:`grade`. ``grade`` checks the student's answer when there
is one and the solution otherwise (so the notebooks run top to bottom with the solutions in place);
a wrong answer is one printed line saying what differs (a wrong solution raises :class:`WrongAnswer`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from hyperclone.core.clone import ClonePlan, clone
from hyperclone.core.grow import grow_matrix, split_blocks
from hyperclone.training.speedups import tokens_to_reach
from hyperclone.core.symmetry import symmetry_by_tensor
from hyperclone.training.loop import loss_on
from hyperclone.core.verify import rounding_tolerance, verify


class WrongAnswer(AssertionError):
    """The student's answer differs from the library's; the message says where."""


@dataclass(frozen=True)
class Verdict:
    """What a check found: ``ok``, and one line saying why."""

    ok: bool
    message: str


def grade(check: Callable[..., Verdict], answer: Any, solution: Any, *args: Any, **kwargs: Any) -> Verdict:
    """``check(answer, *args, **kwargs)`` on the student's ``answer`` (or on ``solution`` while ``answer`` is
    None), and say which was checked.

    A wrong answer of the student's is said in one line ("Not yet: ...", no traceback: it is a hint, not a crash)
    and its verdict returned; a wrong *solution* raises WrongAnswer, so a broken notebook fails its run.
    """
    whose = "your answer"
    if answer is None:
        print("No answer yet (it is still None): checking the hidden solution instead.")
        answer, whose = solution, "the solution"
    verdict = check(answer, *args, **kwargs)
    if not verdict.ok and whose == "the solution":
        raise WrongAnswer(f"Not yet: {whose} is wrong: {verdict.message}")
    print(f"{'Right' if verdict.ok else 'Not yet'}: {whose} {'passes' if verdict.ok else 'is wrong'}: "
          f"{verdict.message}")
    return verdict


# --------------------------------------------------------------------------- #
# Blocks as multiples of W
# --------------------------------------------------------------------------- #
def block_coefficients(w: torch.Tensor, wide: torch.Tensor, a: int, b: int) -> tuple[torch.Tensor, float]:
    """Least-squares c[i, j] with block (i, j) of ``wide`` ~ c[i, j] * w, and the largest residual entry."""
    blocks = split_blocks(wide.detach().double(), a, b)
    w = w.detach().double()
    c = (blocks * w).sum(dim=(-2, -1)) / (w * w).sum()
    residual = (blocks - c[..., None, None] * w).abs().max()
    return c, float(residual)


def stored_tolerance(wide: torch.Tensor, roundings: int) -> float:
    """How far a float32 block entry may lie from its exact value after a few roundings (worst case)."""
    return rounding_tolerance(torch.float32, roundings, float(wide.detach().abs().max()), worst_case=True)


def input_copy_gradients(wide: torch.Tensor, w: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """Gradient reaching each of the n input copies [x, ..., x] when every output copy gets the same gradient g,
    and how far two copies' gradients may differ by the rounding of the stored float32 weights alone.

    That is what a layer sees inside an exact clone whose later layers are symmetric: if the
    copies' gradients differ by more than rounding, training pulls the copies apart.
    """
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(w.shape[0], generator=gen, dtype=torch.float64).repeat(n)
    copies = torch.randn(w.shape[1], generator=gen, dtype=torch.float64).repeat(n).requires_grad_(True)
    wide = wide.detach().double()
    (wide @ copies @ g).backward()
    magnitude = float((wide.abs().T @ g.abs()).max())
    return copies.grad.reshape(n, -1), rounding_tolerance(torch.float32, wide.shape[0], magnitude, worst_case=True)


def check_exact_asymmetric_grid(make: Callable[[torch.Tensor, int], torch.Tensor], factors: Sequence[int] = (2, 3),
                                seed: int = 0) -> Verdict:
    """``make(W, n)`` must return an [n·out, n·in] grid that is exact (every row of blocks sums to W), has no
    noise (every block is a multiple of W) and gives the input copies different gradients."""
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
    for n in factors:
        wide = make(w, n)
        if not isinstance(wide, torch.Tensor) or tuple(wide.shape) != (3 * n, 4 * n):
            return Verdict(False, f"for n={n} the grid must be a tensor of shape {(3 * n, 4 * n)}")
        c, residual = block_coefficients(w, wide, n, n)
        if residual > stored_tolerance(wide, 4):
            return Verdict(False, f"n={n}: a block is not a multiple of W (that is noise, or a typo)")
        row_sums = split_blocks(wide.detach().double(), n, n).sum(dim=1)
        if (row_sums - w.double()).abs().max() > n * stored_tolerance(wide, 4):
            return Verdict(False, f"n={n}: the rows of blocks sum to {[round(float(s), 3) for s in c.sum(dim=1)]} "
                                  "x W, not W each: the clone would not be exact")
        grads, tol = input_copy_gradients(wide, w, n, seed)
        gap = float((grads - grads[0]).abs().max())
        if gap <= tol:
            return Verdict(False, f"n={n}: every input copy gets the same gradient (up to rounding), so the copies "
                                  "stay equal; look at the columns of blocks")
    return Verdict(True, f"for n in {tuple(factors)}: exact, noise-free, and the input copies' gradients differ.")


def check_diagonal_prediction(predict: Callable[[torch.Tensor, int, int], torch.Tensor],
                              shapes: Sequence[tuple[int, int]] = ((3, 3), (3, 2), (2, 3), (1, 3)),
                              seed: int = 0) -> Verdict:
    """``predict(W, out_factor, in_factor)`` must equal ``grow_matrix(W, a, b, "diagonal")`` for each (a, b)."""
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(seed))
    for a, b in shapes:
        mine, lib = predict(w, a, b), grow_matrix(w, a, b, "diagonal")
        if not isinstance(mine, torch.Tensor) or mine.shape != lib.shape:
            return Verdict(False, f"a={a}, b={b}: expected a tensor of shape {tuple(lib.shape)}")
        diff = (split_blocks(mine.double(), a, b) - split_blocks(lib.double(), a, b)).abs().amax(dim=(-2, -1))
        if float(diff.max()) > stored_tolerance(lib, 2):
            i, j = divmod(int(diff.argmax()), b)
            c_mine, c_lib = block_coefficients(w, mine, a, b)[0], block_coefficients(w, lib, a, b)[0]
            return Verdict(False, f"a={a}, b={b}: block ({i}, {j}) is about {float(c_mine[i, j]):.3g} W, the "
                                  f"library's is {float(c_lib[i, j]):.3g} W")
    return Verdict(True, f"the grids match grow_matrix(..., 'diagonal') for (out, in) factors {list(shapes)}.")


# --------------------------------------------------------------------------- #
# Whole models (notebooks 2 and 4)
# --------------------------------------------------------------------------- #
def parameter_count(model) -> int:
    """Distinct parameters of a model (a tied head counted once)."""
    return sum(p.numel() for p in model.parameters())


def check_parameter_prediction(predict: Callable[[Any, int], int], source, factors: Sequence[int] = (2, 3)) -> Verdict:
    """``predict(source, n)`` must give the parameter count of ``clone(source, factor=n)``."""
    for n in factors:
        mine, real = predict(source, n), parameter_count(clone(source, factor=n))
        if mine != real:
            return Verdict(False, f"x{n}: you predict {mine:,} parameters, the clone has {real:,} "
                                  f"({real / parameter_count(source):.3f}x the source)")
    return Verdict(True, f"the parameter counts of the x{', x'.join(map(str, factors))} clones match.")


def clone_block_coefficients(source, wide, name: str, factor: int) -> torch.Tensor:
    """c[i, j]: block (i, j) of the clone's ``name`` (as [out, in]) is c[i, j] x the source's W."""
    plan = ClonePlan.over_wide(wide.config, factor)
    rule = plan.spec.rule_for(name)
    factors = plan.factors_of(rule)
    if len(factors) != 1:
        raise WrongAnswer(f"{name} is a fused tensor: pick a weight with a single block grid")
    (a, b), = factors
    w = rule.as_out_in(source.state_dict()[name])
    return block_coefficients(w, rule.as_out_in(wide.state_dict()[name]), a, b)[0]


def check_block_patterns(predicted: dict[str, Sequence[Sequence[float]]], source, factor: int,
                         variant: str = "diagonal") -> Verdict:
    """``predicted[name][i][j]`` must be the multiple of W in block (i, j) of ``name`` in the ``variant`` clone."""
    wide = clone(source, factor=factor, variant=variant)
    for name, grid in predicted.items():
        real = clone_block_coefficients(source, wide, name, factor)
        mine = torch.tensor(grid, dtype=torch.float64)
        if mine.shape != real.shape:
            return Verdict(False, f"{name}: the clone has a {real.shape[0]}×{real.shape[1]} grid of blocks, your "
                                  f"prediction is {'×'.join(map(str, mine.shape))}")
        # a fitted multiple of a float32 block is off by its rounding: eps x |c|
        tol = rounding_tolerance(torch.float32, 2, float(real.abs().max()), worst_case=True)
        if (mine - real).abs().max() > tol:
            i, j = divmod(int((mine - real).abs().argmax()), real.shape[1])
            return Verdict(False, f"{name}: block ({i}, {j}) is {float(real[i, j]):.4g} W, you predicted "
                                  f"{float(mine[i, j]):.4g} W")
    return Verdict(True, f"all {len(predicted)} block patterns of the x{factor} {variant} clone are as predicted.")


def changed_entries(a, b, skip: tuple[str, tuple[int, ...]] | None = None) -> int:
    """How many weight entries differ between two models of the same shape (leaving out entry ``skip``)."""
    sa, sb = a.state_dict(), b.state_dict()
    count = sum(int((sa[k] != sb[k]).sum()) for k in sa)
    if skip is not None and bool(sa[skip[0]][skip[1]] != sb[skip[0]][skip[1]]):
        count -= 1
    return count


def check_repair(repair: Callable[[Any], Any], source, wide, name: str, index: tuple[int, int], delta: float,
                 input_ids: torch.Tensor) -> Verdict:
    """``repair(broken)`` gets a copy of ``wide`` with ``delta`` added to ``name[index]`` and must make it exact
    again by changing one more entry (not by undoing the change)."""
    broken = copy.deepcopy(wide)
    with torch.no_grad():
        broken.get_parameter(name)[index] += delta
    before = copy.deepcopy(broken)
    fixed = repair(broken)
    fixed = broken if fixed is None else fixed
    if changed_entries(before, fixed) != 1:
        return Verdict(False, f"change exactly one entry of the broken clone (you changed "
                              f"{changed_entries(before, fixed)})")
    if changed_entries(wide, fixed, skip=(name, index)) == 0:
        return Verdict(False, "that undoes the change; leave it and compensate elsewhere in its row of blocks")
    report = verify(source, fixed, input_ids)
    if not report.passed:
        return Verdict(False, f"the clone is still not exact: {report.summary().splitlines()[0]}")
    return Verdict(True, f"exact again (max relative logit difference {report.max_rel_diff:.1e}), with two "
                         "entries that differ from the original clone.")


def relabelled(blocks: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """The grid with copy i called copy n-1-i on every grown axis (flip the block rows and/or columns)."""
    dims = [d for d, f in ((0, a), (1, b)) if f > 1]
    return blocks.flip(dims) if dims else blocks


def copy_gradient_gap(model, factor: int, x: torch.Tensor, y: torch.Tensor) -> tuple[float, str]:
    """The largest |G - relabelled(G)| over the grown weights' gradients on one batch, relative to the largest
    gradient entry of the model, and where.

    In a clone whose copies are interchangeable this is rounding; a clone whose copies get
    different gradients gives a value far above rounding. (Relative to the whole model's gradient,
    not each tensor's: some gradients, such as the key bias's, are zero up to rounding.) Dropout is
    off, so only the weights can make the copies differ.
    """
    was_training = model.training
    model.eval().zero_grad()
    loss_on(model, x, y).backward()
    model.train(was_training)
    plan = ClonePlan.over_wide(model.config, factor)
    worst, scale = (0.0, ""), 0.0
    for name, p in model.named_parameters():
        rule = plan.spec.rule_for(name)
        scale = max(scale, float(p.grad.abs().max()))
        for part, piece, a, b in plan.parts_of(name, rule, p.grad.float()):
            g = rule.as_out_in(piece)
            blocks = split_blocks(g, a, b) if g.dim() == 2 else g.reshape(a, 1, -1)
            gap = float((blocks - relabelled(blocks, a, b)).abs().max())
            worst = (gap, part) if gap > worst[0] else worst
    model.zero_grad()
    return worst[0] / (scale or 1.0), worst[1]


def first_noisy_weight(source, wide, factor: int) -> str | None:
    """The first grown matrix (or fused part) with a block that is not a multiple of the source's W, if any."""
    plan = ClonePlan.over_wide(wide.config, factor)
    src = source.state_dict()
    for name, t in wide.state_dict().items():
        rule = plan.spec.rule_for(name)
        if t.dim() != 2:
            continue
        source_parts = ClonePlan(plan.spec, source.config, plan.growth).parts_of(name, rule, src[name])
        for (part, piece, a, b), (_, w, _, _) in zip(plan.parts_of(name, rule, t), source_parts):
            wide_oi = rule.as_out_in(piece)
            if block_coefficients(rule.as_out_in(w), wide_oi, a, b)[1] > stored_tolerance(wide_oi, 4):
                return part
    return None


def check_exact_asymmetric_clone(make: Callable[[Any], Any], source, factor: int, x: torch.Tensor,
                                 y: torch.Tensor) -> Verdict:
    """``make(source)`` must return a x``factor`` clone that is exact, noise-free (every block a multiple of
    the source's W) and whose copies get different gradients on the batch (x, y)."""
    wide = make(source)
    report = verify(source, wide, x[:1])
    if not report.passed:
        return Verdict(False, f"not exact: {report.summary().splitlines()[0]}")
    noisy = first_noisy_weight(source, wide, factor)
    if noisy is not None:
        return Verdict(False, f"{noisy} has a block that is not a multiple of W: that is noise")
    gap, where = copy_gradient_gap(wide, factor, x, y)
    # the gradient sums one outer product per token; the copies' rounding differences share one origin on every
    # token, so the worst case (linear in the token count) bounds what rounding alone can do
    tolerance = rounding_tolerance(torch.float32, x.numel(), worst_case=True)
    if gap <= tolerance:
        return Verdict(False, f"every copy gets the same gradient (largest relative gap {gap:.1e}, rounding "
                              f"allows {tolerance:.1e}): the copies would stay equal")
    return Verdict(True, f"exact, noise-free, and the copies' gradients differ (relative gap {gap:.1e} in {where}, "
                         f"rounding allows {tolerance:.1e}).")


def check_cosine_prediction(predict: Callable[[str, int, float], float], source, name: str,
                            cases: Sequence[tuple[str, int, float]] = (
                                ("noisy_symmetric", 2, 0.0), ("noisy_diagonal", 3, 0.0), ("noisy_symmetric", 3, 5.0),
                                ("symmetric", 3, 0.0), ("diagonal", 2, 0.0))) -> Verdict:
    """``predict(variant, factor, snr_db)`` must give the cosine between the copies of weight ``name`` right after
    cloning (``symmetry_by_tensor``), within the noise's statistical spread."""
    for variant, n, snr_db in cases:
        real = symmetry_by_tensor(clone(source, factor=n, variant=variant, snr_db=snr_db), n)[name]
        mine = predict(variant, n, snr_db)
        # a cosine of sums over the m entries of one copy fluctuates by about (1 + noise/signal) / sqrt(m) around
        # its expectation: allow 6 of those (noise/signal = 10^(-snr/10) for the noisy variants, 0 otherwise)
        m = source.get_parameter(name).numel() * n
        ratio = 10 ** (-snr_db / 10) if variant.startswith("noisy") else 0.0
        tolerance = 6 * (1 + ratio) / math.sqrt(m)
        if mine is None or abs(mine - real) > tolerance:
            return Verdict(False, f"{variant}, x{n}, {snr_db:g} dB: you predict "
                                  f"{'nothing' if mine is None else format(mine, '.4f')}, the clone's copies have "
                                  f"cosine {real:.4f} (allowed spread ±{tolerance:.3f})")
    return Verdict(True, f"all {len(cases)} predictions are within the noise's spread of the measured cosines.")


# --------------------------------------------------------------------------- #
# Race curves (notebook 3)
# --------------------------------------------------------------------------- #
def check_tokens_to_loss(fn: Callable[[list, float], float | None], result) -> Verdict:
    """``fn(curve, target)`` must agree with ``speedups.tokens_to_reach`` on the race's curves, at every
    evaluated loss, between evaluations, above the start and below the end."""
    for name in result.contestants:
        curve = result.curve(name)
        losses = [loss for _, loss in curve]
        steps = [abs(b - a) for a, b in zip(losses, losses[1:]) if b != a]
        targets = losses + [(a + b) / 2 for a, b in zip(losses, losses[1:])] + [max(losses) + 1, min(losses) - 1]
        # interpolating divides by a loss difference: rounding grows as |loss| / (smallest difference)
        magnitude = max(t for t, _ in curve) * max(map(abs, losses)) / min(steps, default=1.0)
        tolerance = rounding_tolerance(torch.float64, 8, magnitude, worst_case=True)
        for target in targets:
            mine, real = fn(curve, target), tokens_to_reach(curve, target)
            if (mine is None) != (real is None) or (real is not None and abs(mine - real) > tolerance):
                return Verdict(False, f"{name}, target loss {target:.4f}: you give {mine}, the library gives {real}")
    return Verdict(True, f"it agrees with tokens_to_reach on every curve of the race "
                         f"({len(result.contestants)} curves).")


def _peak_after_start(history: Sequence[dict]) -> tuple[int, float]:
    """(step of the highest validation loss after step 0, that loss minus the loss at step 0)."""
    start, later = history[0], history[1:]
    peak = max(later, key=lambda r: r["val_loss"])
    return peak["step"], peak["val_loss"] - start["val_loss"]


def check_loss_rise(fn: Callable[[Sequence[dict]], tuple[int, float]], result) -> Verdict:
    """``fn(history)`` must give (peak step after step 0, peak loss - start loss) for every contestant."""
    for name in result.contestants:
        history = result.history(name)
        (step, rise), (mine_step, mine_rise) = _peak_after_start(history), fn(history)
        tolerance = rounding_tolerance(torch.float64, 2, max(abs(r["val_loss"]) for r in history), worst_case=True)
        if mine_step != step or abs(mine_rise - rise) > tolerance:
            return Verdict(False, f"{name}: you give step {mine_step}, rise {mine_rise:+.4f}; the records say step "
                                  f"{step}, rise {rise:+.4f}")
    return Verdict(True, "the peaks and rises match the race's records for every contestant.")
