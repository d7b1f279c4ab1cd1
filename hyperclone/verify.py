"""Logit equivalence and per-layer checks between a source model and its clone.

The per-layer check is the method's own claim made testable: every hidden
state of the clone is the source's hidden state repeated ``factor`` times
along the hidden axis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from .errors import HyperCloneError


def rounding_tolerance(dtype: torch.dtype, reduction_size: int, magnitude: float = 1.0,
                       worst_case: bool = False) -> float:
    """How far apart two roundings of the same sum of ``reduction_size`` terms may lie.

    Every floating-point operation rounds its exact result by a relative error of at most
    u = eps / 2 (eps = ``torch.finfo(dtype).eps``). A dot product or sum of n terms is then off by
    at most gamma_n * magnitude, gamma_n = n*u / (1 - n*u) ~ n*u, where ``magnitude`` is the sum of
    the terms' absolute values (|x|.|y| for a dot product; Higham, *Accuracy and Stability of
    Numerical Algorithms*, 2nd ed., eq. 3.5). Two evaluations of the same sum that round
    differently (two CPUs' kernels, the narrow and the wide model, one copy and another) lie
    within twice that: n * eps * magnitude. That is ``worst_case``: right for short sums, and
    for errors that need not have random signs.

    Long accumulations stay far below it: their rounding errors have random signs and add like
    a random walk, growing as sqrt(n) (Higham & Mary, "A new approach to probabilistic rounding
    error analysis", SIAM J. Sci. Comput. 41(5), 2019: |error| <= lam * sqrt(n) * u * magnitude
    with probability at least 1 - 2 exp(-lam^2 / 2)). The default takes lam = 6, a chance below
    3e-8 per result of being exceeded, so two evaluations lie within 6 * sqrt(n) * eps *
    magnitude, and never more than the worst case. Where only the result's size is known, pass
    it as ``magnitude`` (this assumes the terms do not cancel much).
    """
    eps = torch.finfo(dtype).eps
    n = max(1, int(reduction_size))
    roundings = n if worst_case else min(n, 6.0 * math.sqrt(n))
    return roundings * eps * magnitude


def kl_tolerance(vocab_size: int, max_abs_diff: float) -> float:
    """The largest mean KL(source||clone) that logits at most ``max_abs_diff`` apart can show in float32.

    Exactly, KL = log E_p[exp(d)] - E_p[d] for the logit difference d, at most (range of d)^2 / 8
    <= max_abs_diff^2 / 2 (Hoeffding's lemma). Computed, each log-softmax rounds its log-sum-exp
    over ``vocab_size`` terms (random-walk rule, relative to a sum >= 1) and each log-probability
    by eps |log p|, whose p-weighted mean is the entropy, at most log(vocab_size).
    """
    v = max(2, int(vocab_size))
    lse = rounding_tolerance(torch.float32, v)
    return max_abs_diff**2 / 2 + lse + torch.finfo(torch.float32).eps * math.log(v)


# Relative tolerance on max |logit difference| / max |logit| for `passed`: source and clone logits are
# two roundings of the same chain of dot products, so the budget is eps times a reduction size.
# fp32: 1e-5 = 84 eps = rounding_tolerance(float32, 196), the random-walk rule for ~200 roundings reaching
# a logit; measured on the test models (2-4 layers, dot products up to 512 wide) on AVX-512, AVX2 and
# default kernels: at most 43 eps on the logits and 62 eps on a hidden state (randomised Gemma).
# Much wider or deeper models accumulate more (compare rounding_tolerance(dtype, their widths)).
# fp16 (1e-2 = 10 eps), bf16 (5e-2 = 6.4 eps) and fp64 (1e-9) are older budgets, not derived here: in half
# precision the matmuls accumulate in fp32 and the error comes from the few roundings of stored activations.
TOLERANCE: dict[torch.dtype, float] = {
    torch.float64: 1e-9,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}
APPROXIMATE_TOLERANCE = 1e-3  # tie="keep": exact only up to the norms' epsilon


@dataclass
class LayerCheck:
    layer: int
    max_abs_diff: float
    max_rel_diff: float
    passed: bool


@dataclass
class EquivalenceReport:
    """What ``verify`` measured. ``passed`` uses a dtype-aware tolerance."""

    max_abs_diff: float
    max_rel_diff: float
    mean_kl: float
    top1_agreement: float
    layers: list[LayerCheck]
    passed: bool
    tolerance: float
    dtype: str
    factor: int
    n_tokens: int
    approximate: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def layers_passed(self) -> bool:
        return all(layer.passed for layer in self.layers)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"equivalence {verdict} ({self.dtype}, factor {self.factor}, {self.n_tokens} tokens, "
            f"tolerance {self.tolerance:g}{', approximate' if self.approximate else ''})",
            f"  max |logit diff|        {self.max_abs_diff:.3e}",
            f"  max relative diff       {self.max_rel_diff:.3e}",
            f"  mean KL(source||clone)  {self.mean_kl:.3e}",
            f"  top-1 agreement         {self.top1_agreement:.2%}",
            f"  hidden states           {sum(c.passed for c in self.layers)}/{len(self.layers)} layers repeat the source's"
            f" (worst relative diff {max((c.max_rel_diff for c in self.layers), default=0.0):.3e})",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def default_input_ids(config, batch: int = 2, length: int = 48, seed: int = 0) -> torch.Tensor:
    """A fixed sample of token ids valid for the model's vocabulary and context."""
    max_len = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or length
    length = max(1, min(length, int(max_len)))
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, int(config.vocab_size), (batch, length), generator=gen)


def _forward(model, input_ids: torch.Tensor):
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(input_ids=input_ids.to(device), output_hidden_states=True, use_cache=False)


def verify(
    source,
    cloned,
    input_ids: torch.Tensor | None = None,
    text: str | None = None,
    tokenizer=None,
    approximate: bool | None = None,
) -> EquivalenceReport:
    """Run both models on the same tokens and measure how equal their outputs are.

    Input: ``input_ids``, or ``text`` encoded with ``tokenizer``, or by default
    a fixed sample of valid token ids. ``approximate`` (default: read from the
    clone's plan) marks a tie="keep" clone, checked with a looser tolerance.
    """
    if input_ids is None and text is not None:
        if tokenizer is None:
            raise HyperCloneError("verify(text=...) needs a tokenizer= to encode the text")
        input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
        if input_ids.numel() == 0:
            raise HyperCloneError("the verification text encodes to no tokens; give a non-empty text")
    if input_ids is None:
        input_ids = default_input_ids(source.config)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    src, dst = _forward(source, input_ids), _forward(cloned, input_ids)
    s_logits, c_logits = src.logits.float(), dst.logits.float().to(src.logits.device)
    if s_logits.shape != c_logits.shape:
        raise HyperCloneError(f"source and clone logits differ in shape: {tuple(s_logits.shape)} vs {tuple(c_logits.shape)}")

    diff = (s_logits - c_logits).abs()
    max_abs = float(diff.max())
    max_rel = max_abs / max(float(s_logits.abs().max()), 1e-30)
    log_p, log_q = torch.log_softmax(s_logits, -1), torch.log_softmax(c_logits, -1)
    mean_kl = max(0.0, float((log_p.exp() * (log_p - log_q)).sum(-1).mean()))  # >= 0; rounding can dip below
    top1 = float((s_logits.argmax(-1) == c_logits.argmax(-1)).float().mean())

    if approximate is None:
        plan = getattr(cloned, "hyperclone_plan", None)
        approximate = bool(plan is not None and plan.keep_tied)
    dtype = next(cloned.parameters()).dtype
    tol = APPROXIMATE_TOLERANCE if approximate else TOLERANCE.get(dtype, 1e-5)
    layers, factor = _layer_checks(src.hidden_states, dst.hidden_states, tol, normalise=approximate)
    notes = []
    if approximate:
        notes.append("tie='keep' scales the residual stream by 1/n: equal only up to the norms' epsilon")
    passed = max_rel <= tol and all(c.passed for c in layers)
    return EquivalenceReport(
        max_abs, max_rel, mean_kl, top1, layers, passed, tol, str(dtype).replace("torch.", ""), factor,
        int(input_ids.numel()), approximate, notes,
    )


def _layer_checks(src_states, dst_states, tol: float, normalise: bool) -> tuple[list[LayerCheck], int]:
    """Each clone hidden state against the source's repeated along the hidden axis."""
    if not src_states or not dst_states:
        return [], 1
    factor = dst_states[0].shape[-1] // src_states[0].shape[-1]
    checks = []
    for i, (s, c) in enumerate(zip(src_states, dst_states)):
        s, c = s.float(), c.float().to(s.device)
        expected = s.repeat(*([1] * (s.dim() - 1)), factor)
        if normalise:  # tie="keep": compare directions, the stream is scaled by 1/n
            expected = expected / expected.norm(dim=-1, keepdim=True).clamp_min(1e-30)
            c = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        if c.shape != expected.shape:
            checks.append(LayerCheck(i, float("inf"), float("inf"), False))
            continue
        abs_diff = float((expected - c).abs().max())
        rel = abs_diff / max(float(expected.abs().max()), 1e-30)
        checks.append(LayerCheck(i, abs_diff, rel, rel <= tol))
    return checks, factor
