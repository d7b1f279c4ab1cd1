"""How a training recipe behaves on a clone, read from (tokens, validation loss) curves.

A clone starts at its source's loss. What a student sees first is whether its
curve rises above that start (fresh optimizer steps shaking it out of the
source's minimum) and how long it takes to get back; what a researcher asks is
whether the grown model then learns faster per token than random init does
*from the same loss*. These are the figures of ``benchmarks/recipe_sweep.py``
and of the honest-defaults check; nothing is extrapolated (None: not within
the run).
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperclone.training.speedups import Curve, loss_at, measured, tokens_to_reach


@dataclass(frozen=True)
class Rise:
    """The largest rise of a curve above its first point, and when it got back down."""

    start: float  # loss at the first evaluation (step 0 for a race)
    peak: float  # the highest loss after the first evaluation (start itself when there is none)
    peak_tokens: float
    back_below: float | None  # tokens when the curve is back at or below ``start`` after its peak (0: never rose)
    final: float

    @property
    def rise(self) -> float:
        """Peak minus start (negative: never above its start)."""
        return self.peak - self.start

    @property
    def final_change(self) -> float:
        """Final minus start (negative: ended below its start)."""
        return self.final - self.start


def rise_of(curve: Curve) -> Rise:
    """The ``Rise`` of a curve of at least one point."""
    points = measured(curve)
    if not points:
        raise ValueError("a curve needs at least one finite evaluation")
    start = points[0][1]
    later = points[1:] or points
    peak_tokens, peak = max(later, key=lambda p: p[1])
    if peak <= start:
        back: float | None = 0.0
    else:
        after = [p for p in points if p[0] >= peak_tokens]
        back = tokens_to_reach(after, start)
    return Rise(start, peak, peak_tokens, back, points[-1][1])


@dataclass(frozen=True)
class EqualLossSpeed:
    """Per-token learning speed from equal loss: the clone from its start, random init from the moment it
    reaches the clone's start, both down to ``target``.

    ``ratio`` = ``random_tokens`` / ``clone_tokens`` (> 1: the clone learns faster per token from the same
    loss). None with ``why`` when the run does not show it.
    """

    start: float
    target: float | None
    clone_tokens: float | None
    random_tokens: float | None
    ratio: float | None
    why: str = ""  # in words, with the numbers
    reason: str = ""  # in one word: "worse" (the clone never got below its start), "random" (random init did not
    # get to the clone's start or the target within its run), "clone" (the clone did not reach the target)


def equal_loss_speed(clone: Curve, random: Curve, target: float | None = None) -> EqualLossSpeed:
    """Compare the clone's and random init's tokens from the clone's start loss to ``target``
    (default: the clone's final loss)."""
    mine, theirs = measured(clone), measured(random)
    start = mine[0][1]
    target = mine[-1][1] if target is None else target
    if target >= start:
        return EqualLossSpeed(start, target, None, None, None,
                              f"the clone never got below its start {start:.4f} (final {mine[-1][1]:.4f})", "worse")
    clone_tokens = tokens_to_reach(mine, target)
    random_at_start, random_at_target = tokens_to_reach(theirs, start), tokens_to_reach(theirs, target)
    if clone_tokens is None:
        return EqualLossSpeed(start, target, None, None, None, f"the clone did not reach {target:.4f}", "clone")
    if random_at_start is None or random_at_target is None:
        what = "the clone's start" if random_at_start is None else "the target"
        return EqualLossSpeed(start, target, clone_tokens, None, None,
                              f"random init did not reach {what} ({start if random_at_start is None else target:.4f}) "
                              f"within its {theirs[-1][0]:,.0f} tokens", "random")
    random_tokens = random_at_target - random_at_start
    return EqualLossSpeed(start, target, clone_tokens, random_tokens,
                          random_tokens / clone_tokens if clone_tokens > 0 else None)


def keeps_head_start(clone: Curve, random: Curve, max_rise: float = 0.05, end_slack: float = 0.01) -> list[str]:
    """What stops a short race from telling the truth quickly; [] when the clone's curve never rises more than
    ``max_rise`` above its start, ends within ``end_slack`` of it or below, and ends below random init at
    equal tokens (the honest-defaults target of issue 11)."""
    r, mine, theirs = rise_of(clone), measured(clone), measured(random)
    problems = []
    if r.rise > max_rise:
        problems.append(f"rises {r.rise:.4f} nats above its start {r.start:.4f} (at most {max_rise})")
    if r.final_change > end_slack:
        problems.append(f"ends {r.final_change:.4f} nats above its start (at most {end_slack})")
    common = min(mine[-1][0], theirs[-1][0]) if theirs else 0.0
    if theirs and loss_at(mine, common) >= loss_at(theirs, common):
        problems.append(f"is not below random init after {common:,.0f} tokens each")
    return problems

