"""Speed-up arithmetic on loss curves: tokens to reach a loss, speed-ups (a) and (b), the read-out at
equal tokens, speed-up against horizon, and which random init is the baseline.

Pure functions of (tokens, loss) curves, so each can be checked on made-up curves; ``results.py``
applies them to a race's records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from hyperclone.core.errors import HyperCloneError

BASELINE = "random"

Curve = Sequence[tuple[float, float]]  # (tokens, validation loss), in training order


def format_tokens(n: float) -> str:
    """A token count in k, M or G with three significant digits."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def tokens_to_reach(curve: Curve, target: float) -> float | None:
    """Tokens at which ``curve`` first gets down to ``target`` (linear between points), or None.

    The first evaluation at or below the target is interpolated with the one
    before it; a curve that starts at or below the target needs its first
    point's tokens (0 for an evaluation before training).
    """
    prev: tuple[float, float] | None = None
    for tokens, loss in curve:
        if loss is not None and math.isfinite(loss) and loss <= target:
            if prev is None or prev[1] == loss:
                return float(tokens)
            t0, l0 = prev
            return t0 + (l0 - target) / (l0 - loss) * (tokens - t0)
        if loss is not None and math.isfinite(loss):
            prev = (tokens, loss)
    return None


@dataclass
class Speedup:
    """How many times fewer tokens a contestant needs than the baseline, one way round.

    ``definition`` "a": tokens the baseline needs to reach the contestant's final validation loss ÷ tokens
    the contestant used. ``definition`` "b": tokens the baseline used ÷ tokens the contestant needs to reach
    the baseline's final loss. ``value`` is None when it cannot be measured within the run; ``bound`` then
    says what the run does show (e.g. ``(">", 1.0)``) and ``message`` says why, in words.
    ``value_with_source`` counts FLOPs instead of tokens, with the source model's own training added to the
    contestant's side (None when that cost is unknown).
    """

    contestant: str
    baseline: str
    definition: str  # "a" or "b": which of the two speed-ups above
    target_loss: float
    value: float | None
    tokens_contestant: float | None
    tokens_baseline: float | None
    bound: tuple[str, float] | None = None
    value_with_source: float | None = None
    message: str = ""
    bound_with_source: tuple[str, float] | None = None

    def describe(self) -> str:
        """One line for tables and logs."""
        return f"({self.definition}) {_head(self.value, self.bound, self.tokens_contestant == 0.0)}: {self.message}"

    def describe_with_source(self) -> str:
        """The FLOPs figure counting the source's training, as a number, a bound, or n/a."""
        return _head(self.value_with_source, self.bound_with_source, False)


def _ratio(value: float) -> str:
    return f"{value:.2f}x" if value >= 0.01 else f"{value:.2g}x"  # never print a real ratio as 0.00x


def _head(value: float | None, bound: tuple[str, float] | None, unbounded: bool) -> str:
    if value is not None:
        return _ratio(value)
    if bound is not None:
        return f"{bound[0]}{_ratio(bound[1])}"
    return "unbounded" if unbounded else "n/a"


def speedup(
    contestant: Curve,
    baseline: Curve,
    definition: str = "a",
    *,
    names: tuple[str, str] = ("clone", BASELINE),
    flop_params: tuple[int, int] | None = None,
    source_flops: float | None = None,
    grown: tuple[float, int] | None = None,
) -> Speedup:
    """Speed-up of ``contestant`` over ``baseline`` from two (tokens, val loss) curves.

    ``flop_params`` (contestant, baseline) and ``source_flops`` give the FLOPs-based figure counting the
    source's pretraining (6·N·tokens each; ``grown``: a staged contestant, see ``training_flops``).
    Nothing is extrapolated: a target not reached within the run gives ``value=None``, a bound and a message.
    """
    if definition not in ("a", "b"):
        raise HyperCloneError(f"speed-up definition must be 'a' or 'b', got {definition!r}")
    pair = _CurvePair(names, measured(contestant), measured(baseline), flop_params, source_flops, grown)
    if not pair.mine or not pair.theirs:
        missing = names[0] if not pair.mine else names[1]
        return Speedup(*names, definition, float("nan"), None, None, None, message=f"{missing} has no evaluations")
    return _speedup_a(pair) if definition == "a" else _speedup_b(pair)


def training_flops(tokens: float, flop_params: int, grown: tuple[float, int] | None = None) -> float:
    """6·N·tokens; ``grown`` (tokens at growth, N before it): a staged run, its first tokens at the small N."""
    before = 0.0 if grown is None else min(tokens, grown[0])
    return 6.0 * ((grown[1] if grown else 0) * before + flop_params * (tokens - before))


def measured(curve: Curve) -> list[tuple[float, float]]:
    return [(tokens, loss) for tokens, loss in curve if loss is not None and math.isfinite(loss)]


@dataclass
class _CurvePair:
    """The contestant's and the baseline's measured points, and what FLOPs each side costs."""

    names: tuple[str, str]
    mine: list[tuple[float, float]]  # the contestant's (tokens, val loss)
    theirs: list[tuple[float, float]]  # the baseline's
    flop_params: tuple[int, int] | None
    source_flops: float | None
    grown: tuple[float, int] | None = None  # a staged contestant: (tokens at growth, its N before)

    @property
    def my_tokens(self) -> float:
        return float(self.mine[-1][0])

    @property
    def their_tokens(self) -> float:
        return float(self.theirs[-1][0])

    def with_source(self, my_tokens: float, their_tokens: float) -> float | None:
        """Baseline FLOPs ÷ (contestant FLOPs + the source's training FLOPs), or None if unknown."""
        if self.flop_params is None or self.source_flops is None:
            return None
        my_flops = training_flops(my_tokens, self.flop_params[0], self.grown) + self.source_flops
        return 6.0 * self.flop_params[1] * their_tokens / my_flops if my_flops > 0 else None


def _speedup_a(p: _CurvePair) -> Speedup:
    """Tokens the baseline needs to reach the contestant's final loss ÷ tokens the contestant used."""
    cname, bname = p.names
    target, c_total, b_total = p.mine[-1][1], p.my_tokens, p.their_tokens
    if c_total <= 0:
        return Speedup(cname, bname, "a", target, None, c_total, None, message=f"{cname} has not trained yet")
    needed = tokens_to_reach(p.theirs, target)
    if needed is None and b_total < c_total:
        return Speedup(cname, bname, "a", target, None, c_total, None,
                       message=(f"not comparable yet: {bname} has trained {format_tokens(b_total)} tokens, fewer "
                                f"than {cname}'s {format_tokens(c_total)}; see the read-out at equal tokens"))
    if needed is None:
        best = min(loss for _, loss in p.theirs)
        return Speedup(
            cname, bname, "a", target, None, c_total, None, bound=(">", b_total / c_total),
            bound_with_source=_bound(">", p.with_source(c_total, b_total)),
            message=(f"not reached within the run: {bname} did not get down to {cname}'s final val loss "
                     f"{target:.4f} in {format_tokens(b_total)} tokens (its best: {best:.4f}), so it needs "
                     f"more than {b_total / c_total:.2f}x {cname}'s {format_tokens(c_total)} tokens"),
        )
    return Speedup(
        cname, bname, "a", target, needed / c_total, c_total, needed,
        value_with_source=p.with_source(c_total, needed),
        message=(f"{bname} needs {format_tokens(needed)} tokens to reach {cname}'s final val loss "
                 f"{target:.4f}; {cname} used {format_tokens(c_total)}"),
    )


def _speedup_b(p: _CurvePair) -> Speedup:
    """Tokens the baseline used ÷ tokens the contestant needs to reach the baseline's final loss."""
    cname, bname = p.names
    target, c_total, b_total = p.theirs[-1][1], p.my_tokens, p.their_tokens
    needed = tokens_to_reach(p.mine, target)
    if needed is None:
        best = min(loss for _, loss in p.mine)
        return Speedup(
            cname, bname, "b", target, None, None, b_total, bound=("<", b_total / c_total) if c_total else None,
            bound_with_source=_bound("<", p.with_source(c_total, b_total)),
            message=(f"not reached within the run: {cname} did not get down to {bname}'s final val loss "
                     f"{target:.4f} in its {format_tokens(c_total)} tokens (its best: {best:.4f})"),
        )
    if needed <= 0:
        return Speedup(
            cname, bname, "b", target, None, 0.0, b_total, bound=None,
            value_with_source=p.with_source(0.0, b_total),
            message=(f"{cname} was already at or below {bname}'s final val loss {target:.4f} before training "
                     f"(0 tokens); {bname} used {format_tokens(b_total)} tokens"),
        )
    return Speedup(
        cname, bname, "b", target, b_total / needed, needed, b_total,
        value_with_source=p.with_source(needed, b_total),
        message=(f"{cname} needs {format_tokens(needed)} tokens to reach {bname}'s final val loss {target:.4f}; "
                 f"{bname} used {format_tokens(b_total)}"),
    )


def _bound(sign: str, value: float | None) -> tuple[str, float] | None:
    return None if value is None else (sign, value)


def loss_at(curve: list[tuple[float, float]], tokens: float) -> float:
    """The loss of a measured curve at ``tokens`` within it (linear between evaluations)."""
    for (t0, l0), (t1, l1) in zip(curve, curve[1:]):
        if t0 <= tokens <= t1:
            return l0 if t1 == t0 else l0 + (l1 - l0) * (tokens - t0) / (t1 - t0)
    return curve[-1][1]


@dataclass(frozen=True)
class Readout:
    """A contestant against the baseline over the tokens both have trained, never past the shorter run.

    ``a``: tokens the baseline needs to reach the contestant's loss at ``tokens`` ÷ ``tokens`` (its whole
    curve is searched; not reached gives ``a_bound`` ``(">", its tokens ÷ tokens)``, never below 1).
    ``b``: ``tokens`` ÷ tokens the contestant needed to reach the baseline's loss at ``tokens``.
    ``words``: the comparison in a sentence.
    """

    contestant: str
    baseline: str
    tokens: float
    loss: float | None
    baseline_loss: float | None
    a: float | None = None
    a_bound: tuple[str, float] | None = None
    b: float | None = None
    words: str = ""


def readout(contestant: Curve, baseline: Curve, names: tuple[str, str] = ("clone", BASELINE)) -> Readout:
    """Compare two (tokens, val loss) curves at the tokens both have covered (see ``Readout``)."""
    cname, bname = names
    mine, theirs = measured(contestant), measured(baseline)
    common = min(mine[-1][0], theirs[-1][0]) if mine and theirs else 0.0
    if common <= 0:
        return Readout(cname, bname, 0.0, None, None, words=f"{cname} and {bname} have not both trained yet")
    mine_now = [p for p in mine if p[0] <= common]
    loss, their_loss = loss_at(mine, common), loss_at(theirs, common)
    needed, reached = tokens_to_reach(theirs, loss), tokens_to_reach(mine_now, their_loss)
    a = needed / common if needed is not None else None
    bound = (">", theirs[-1][0] / common) if needed is None else None
    b = common / reached if reached else None
    gap, at = their_loss - loss, f"after {format_tokens(common)} tokens each"
    if abs(gap) < 0.005:
        words = f"{cname} and {bname} are level ({loss:.3f}) {at}"
    elif gap > 0:
        catch = (f"it needed {a:.2f}x the tokens ({format_tokens(needed)}) to reach {cname}'s {loss:.3f}"
                 if a is not None else f"it would need more than {bound[1]:.2f}x the tokens to reach {cname}'s "
                 f"{loss:.3f}" if bound[1] >= 1.005 else f"it has not reached {cname}'s {loss:.3f} yet")
        sooner = (f"; {cname} reached {bname}'s {their_loss:.3f} {b:.2f}x sooner" if b is not None else
                  f"; {cname} was already below {bname}'s {their_loss:.3f} before training" if reached == 0 else "")
        words = f"{bname} is still {gap:.2f} nats behind {cname} {at}; {catch}{sooner}"
    else:
        words = f"{cname} is {-gap:.2f} nats behind {bname} {at}" + (
            f"; {bname} was at {cname}'s {loss:.3f} after {format_tokens(needed)} tokens ({a:.2f}x)"
            if needed is not None else "")
    return Readout(cname, bname, common, loss, their_loss, a, bound, b, words)


@dataclass(frozen=True)
class HorizonPoint:
    """One point of speed-up against horizon (``speedup_vs_horizon``)."""

    tokens: float  # the horizon: tokens of the evaluation read
    tokens_per_param: float  # tokens ÷ parameters of the wide model
    loss: float
    other_tokens: float | None  # tokens the other side needed for the same loss (None: not reached)
    value: float | None
    bound: tuple[str, float] | None
    # (a) only: the contestant was not below its own step-0 loss here, so random init's tokens to this loss
    # measure the source's head start, not faster learning (the clone had this loss before training)
    above_start: bool = False


def speedup_vs_horizon(contestant: Curve, baseline: Curve, params: int, definition: str = "a") -> list[HorizonPoint]:
    """The speed-up at every horizon of a run, with tokens per parameter of the wide model (``params``).

    (a): for each evaluation of the contestant after step 0, tokens the baseline
    needed to reach the same loss ÷ the contestant's tokens. (b): for each
    evaluation of the baseline, its tokens ÷ tokens the contestant needed to
    reach its loss. Nothing is extrapolated: not reached gives value None, and a
    bound only when the other run went at least as far (None when it started
    there: unbounded). An (a) point where the contestant is not below its own
    step-0 loss is marked ``above_start``: not evidence of faster learning.
    """
    if definition not in ("a", "b"):
        raise HyperCloneError(f"speed-up definition must be 'a' or 'b', got {definition!r}")
    probe, other = (measured(contestant), measured(baseline))[:: 1 if definition == "a" else -1]
    reach = other[-1][0] if other else 0.0
    start = next((loss for tokens, loss in probe if tokens <= 0), None) if definition == "a" else None
    points = []
    for tokens, loss in probe:
        if tokens <= 0:
            continue
        needed = tokens_to_reach(other, loss)
        if definition == "a":
            value = needed / tokens if needed is not None else None
            bound = (">", reach / tokens) if needed is None and reach >= tokens else None
        else:
            value = tokens / needed if needed else None
            bound = ("<", tokens / reach) if needed is None and reach >= tokens else None
        points.append(HorizonPoint(tokens, tokens / params, loss, needed, value, bound,
                                   above_start=start is not None and loss >= start))
    return points


def pick_baseline(names: list[str], curves: dict[str, list[tuple[float, float]]]) -> str | None:
    """The random-init contestant to measure against: the only one, or the one with the lowest final loss."""
    randoms = [n for n in names if n.partition("@")[0] == BASELINE]
    finals = {n: measured(curves.get(n, []))[-1][1] for n in randoms if measured(curves.get(n, []))}
    if len(randoms) <= 1 or not finals:
        return randoms[0] if randoms else None
    return min(finals, key=lambda n: (finals[n], randoms.index(n)))
