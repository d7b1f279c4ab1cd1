"""Logit equivalence and per-layer checks between a source model and its clone.

The per-layer check is the method's own claim made testable: every hidden
state of the clone is the source's hidden state repeated ``factor`` times
along the hidden axis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from hyperclone.core.errors import HyperCloneError


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
    culprit: str | None = None  # where the first difference is, e.g. "layer 2: mlp differs"
    function_preserving: bool = True  # False: a stacked model, not expected to match (never "passed")

    @property
    def as_expected(self) -> bool:
        """Passed, or a model not meant to match (stacked layers): a difference there is no failure."""
        return self.passed or not self.function_preserving

    @property
    def layers_passed(self) -> bool:
        return all(layer.passed for layer in self.layers)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        verdict = ("PASSED" if self.passed else "FAILED" if self.function_preserving
                   else "NOT EXPECTED (not function-preserving by design: stacked layers)")
        lines = [
            f"equivalence {verdict} ({self.dtype}, factor {self.factor}, {self.n_tokens} tokens, "
            f"tolerance {self.tolerance:g}{', approximate' if self.approximate else ''})",
            f"  max |logit diff|        {self.max_abs_diff:.3e}",
            f"  max relative diff       {self.max_rel_diff:.3e}",
            f"  mean KL(source||clone)  {self.mean_kl:.3e}",
            f"  top-1 agreement         {self.top1_agreement:.2%}",
        ]
        if self.function_preserving:
            worst = max((c.max_rel_diff for c in self.layers), default=0.0)
            lines.append(f"  hidden states           {sum(c.passed for c in self.layers)}/{len(self.layers)} layers "
                         f"repeat the source's (worst relative diff {worst:.3e})")
        if self.culprit:
            lines.append(f"  first difference        {self.culprit}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def default_input_ids(config, batch: int = 2, length: int = 48, seed: int = 0) -> torch.Tensor:
    """A fixed sample of token ids valid for the model's vocabulary and context."""
    max_len = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or length
    length = max(1, min(length, int(max_len)))
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, int(config.vocab_size), (batch, length), generator=gen)


def _context_length(config) -> int | None:
    length = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(length) if length else None


def check_input_ids(input_ids, config) -> torch.Tensor:
    """``input_ids`` as a [batch, tokens] integer tensor the model can read, or a one-line error saying why not."""
    if not isinstance(input_ids, torch.Tensor):
        raise HyperCloneError(f"input_ids must be a tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise HyperCloneError(f"input_ids must hold integer token ids, got {str(input_ids.dtype).replace('torch.', '')}")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2:
        raise HyperCloneError(f"input_ids must have shape [tokens] or [batch, tokens], got {tuple(input_ids.shape)}")
    if input_ids.numel() == 0:
        raise HyperCloneError("input_ids hold no tokens; give at least one token id")
    vocab = int(config.vocab_size)
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab:
        raise HyperCloneError(f"input_ids hold id {low if low < 0 else high}, outside the vocabulary of {vocab} tokens "
                              f"(ids 0 to {vocab - 1})")
    context = _context_length(config)
    if context is not None and input_ids.shape[1] > context:
        raise HyperCloneError(f"the input holds {input_ids.shape[1]} tokens, more than the model's context of "
                              f"{context}; give a shorter text or fewer ids")
    return input_ids


def _layers(n: int) -> str:
    return f"{n} layer{'' if n == 1 else 's'}"


def check_comparable(source, cloned, layer_map: list[int] | None = None, same_depth: bool = True) -> int:
    """The growth factor from ``source`` to ``cloned``, or a one-line error saying why one cannot be its clone.

    ``layer_map`` (a depth-grown clone): the clone's layer whose output is source layer i's; ``same_depth``
    False skips the depth check (a stacked model).
    """
    s_cfg, c_cfg = source.config, cloned.config
    if s_cfg.model_type != c_cfg.model_type:
        raise HyperCloneError(f"the source is a {s_cfg.model_type!r} model and the destination a "
                              f"{c_cfg.model_type!r} model; a clone has its source's family")
    (s_vocab, s_width), (c_vocab, c_width) = (tuple(m.get_input_embeddings().weight.shape) for m in (source, cloned))
    if s_vocab != c_vocab:
        raise HyperCloneError(f"the source and the destination have different vocabularies ({s_vocab} and {c_vocab} "
                              "tokens); a clone keeps its source's vocabulary")
    s_depth, c_depth = int(s_cfg.num_hidden_layers), int(c_cfg.num_hidden_layers)
    if layer_map is not None:
        if len(layer_map) != s_depth or not layer_map or layer_map[-1] != c_depth - 1:
            raise HyperCloneError(f"the layer map {layer_map} does not fit a source of {_layers(s_depth)} and a "
                                  f"destination of {_layers(c_depth)}; is DST the depth-grown clone of SRC?")
    elif same_depth and s_depth != c_depth:
        raise HyperCloneError(f"the source has {_layers(s_depth)} and the destination {_layers(c_depth)}; "
                              "a clone has its source's depth")
    if c_width < s_width or c_width % s_width:
        raise HyperCloneError(f"the destination's hidden size {c_width} is not a whole multiple of the source's "
                              f"hidden size {s_width}; DST must be a clone of SRC (are SRC and DST swapped?)")
    return c_width // s_width


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
    *,
    layer_numbers: list[int] | None = None,
    layer_map: list[int] | None = None,
    function_preserving: bool | None = None,
) -> EquivalenceReport:
    """Run both models on the same tokens and measure how equal their outputs are.

    Input: ``input_ids``, or ``text`` encoded with ``tokenizer``, or by default
    a fixed sample of valid token ids. ``approximate`` (default: read from the
    clone's plan) marks a tie="keep" clone, checked with a looser tolerance.
    ``layer_numbers``: the source's numbers of the models' layers, for models
    truncated to some layers, so that a difference names the right one.
    ``layer_map`` (default: from the clone's plan; equal depth without one): for a
    depth-grown clone, the wide layer whose hidden state must repeat source layer
    i's. ``function_preserving`` False (default: from the plan) marks a stacked
    model: measured, but reported as not expected to match, without layer checks.
    """
    approximate, layer_map, function_preserving = _clone_settings(cloned, approximate, layer_map, function_preserving)
    check_comparable(source, cloned, layer_map, same_depth=function_preserving)
    input_ids = _input_ids(source.config, input_ids, text, tokenizer)
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

    dtype = next(cloned.parameters()).dtype
    tol = APPROXIMATE_TOLERANCE if approximate else TOLERANCE.get(dtype, 1e-5)
    layers, factor = _layer_checks(src.hidden_states, dst.hidden_states, tol, approximate, layer_map)
    notes = []
    if approximate:
        notes.append("tie='keep' scales the residual stream by 1/n: equal only up to the norms' epsilon")
    if layer_map is not None:
        notes.append(f"depth-grown: the hidden state after source layer i is checked against the one after "
                     f"wide layer {layer_map}[i] (new blocks start as the identity)")
    if not function_preserving:
        layers = []
        notes.append("stacked layers: not function-preserving by design, so the logits are not expected to match")
    passed = function_preserving and max_rel <= tol and all(c.passed for c in layers)
    culprit = None if passed or not function_preserving else _culprit(
        source, cloned, input_ids, layers, tol, approximate, layer_numbers, layer_map)
    return EquivalenceReport(
        max_abs, max_rel, mean_kl, top1, layers, passed, tol, str(dtype).replace("torch.", ""), factor,
        int(input_ids.numel()), approximate, notes, culprit, function_preserving,
    )


def _clone_settings(cloned, approximate: bool | None, layer_map: list[int] | None,
                    function_preserving: bool | None) -> tuple[bool, list[int] | None, bool]:
    """(approximate, layer map, function-preserving): those given, the rest read from the clone's plan."""
    plan = getattr(cloned, "hyperclone_plan", None)
    if approximate is None:
        approximate = bool(plan is not None and plan.keep_tied)
    if function_preserving is None:
        function_preserving = plan is None or plan.function_preserving
    if layer_map is None and plan is not None and plan.depth > 1 and function_preserving:
        layer_map = plan.layer_map()
    return approximate, layer_map, function_preserving


def _input_ids(config, input_ids, text: str | None, tokenizer) -> torch.Tensor:
    """The tokens to check on: ``input_ids``, ``text`` encoded, or a fixed sample; checked against ``config``."""
    if input_ids is None and text is not None:
        if tokenizer is None:
            raise HyperCloneError("verify(text=...) needs a tokenizer= to encode the text")
        input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
        if input_ids.numel() == 0:
            raise HyperCloneError("the verification text encodes to no tokens; give a non-empty text")
    if input_ids is None:
        input_ids = default_input_ids(config)
    return check_input_ids(input_ids, config)


def _repeat_diff(s: torch.Tensor, c: torch.Tensor, normalise: bool) -> tuple[float, float] | None:
    """(max abs, max relative) difference of ``c`` from ``s`` repeated along the last axis; None if no repeat fits."""
    s, c = s.float(), c.float().to(s.device)
    if s.shape[:-1] != c.shape[:-1] or s.shape[-1] == 0 or c.shape[-1] % s.shape[-1]:
        return None
    expected = s.repeat(*([1] * (s.dim() - 1)), c.shape[-1] // s.shape[-1])
    if normalise:  # tie="keep": compare directions, the stream is scaled by 1/n
        expected = expected / expected.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        c = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    abs_diff = float((expected - c).abs().max()) if c.numel() else 0.0
    return abs_diff, abs_diff / max(float(expected.abs().max()) if c.numel() else 0.0, 1e-30)


def _layer_checks(src_states, dst_states, tol: float, normalise: bool,
                  layer_map: list[int] | None = None) -> tuple[list[LayerCheck], int]:
    """Each clone hidden state against the source's repeated along the hidden axis.

    State 0 is the embeddings' output and state i + 1 layer i's; with a ``layer_map`` source state
    i + 1 is compared with the clone's state ``layer_map[i] + 1``.
    """
    if not src_states or not dst_states:
        return [], 1
    factor = dst_states[0].shape[-1] // src_states[0].shape[-1]
    if layer_map is not None:
        dst_states = [dst_states[0]] + [dst_states[j + 1] for j in layer_map]
    checks = []
    for i, (s, c) in enumerate(zip(src_states, dst_states)):
        diff = _repeat_diff(s, c, normalise) if c.shape[-1] == s.shape[-1] * factor else None
        if diff is None:
            checks.append(LayerCheck(i, float("inf"), float("inf"), False))
            continue
        checks.append(LayerCheck(i, diff[0], diff[1], diff[1] <= tol))
    return checks, factor


def _decoder_layers(model) -> torch.nn.ModuleList | None:
    """The model's list of decoder layers (the first module list as long as the config's depth)."""
    n = int(model.config.num_hidden_layers)
    return next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n), None)


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _layer_outputs(model, index: int, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of layer ``index`` (key "") and of each of its sub-modules, in the order they ran."""
    layer = _decoder_layers(model)[index]
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, output) -> None:
            t = _first_tensor(output)
            if t is not None and name not in outputs:
                outputs[name] = t.detach()
        return hook

    hooks = [module.register_forward_hook(keep(name)) for name, module in [("", layer), *layer.named_children()]]
    try:
        _forward(model, input_ids)
    finally:
        for h in hooks:
            h.remove()
    return outputs


def _culprit(source, cloned, input_ids, layers: list[LayerCheck], tol: float, normalise: bool,
             layer_numbers: list[int] | None, layer_map: list[int] | None = None) -> str:
    """Where the clone first departs from its source: the embeddings, a layer (and its sub-module), or the head.

    Hidden state 0 is the embeddings' output, state i the output of layer i - 1, and the last state has the
    final norm applied; a second forward pass with hooks then looks inside the first layer that differs.
    """
    failed = next((c.layer for c in layers if not c.passed), None)
    if failed is None:
        return "the LM head differs (every hidden state matches)"
    if failed == 0:
        return "the embeddings differ"
    index = failed - 1
    number = layer_numbers[index] if layer_numbers is not None and index < len(layer_numbers) else index
    if _decoder_layers(source) is None or _decoder_layers(cloned) is None:
        return f"layer {number} differs"
    wide_index = index if layer_map is None else (layer_map[index - 1] + 1 if index else 0)  # its own copy
    ours, theirs = _layer_outputs(source, index, input_ids), _layer_outputs(cloned, wide_index, input_ids)
    for name, s in ours.items():
        diff = _repeat_diff(s, theirs[name], normalise) if name and name in theirs else None
        if diff is not None and not diff[1] <= tol:
            return f"layer {number}: {name} differs"
    whole = _repeat_diff(ours[""], theirs[""], normalise) if "" in ours and "" in theirs else None
    if failed == len(layers) - 1 and whole is not None and whole[1] <= tol:
        return "the final norm differs"
    return f"layer {number} differs"
