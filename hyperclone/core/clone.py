"""Model-level HyperCloning: rewrite the config, walk the spec over the weights.

One code path (``ClonePlan.grow``) turns a (name, tensor) pair of the source
into the same-named tensor of the wide model. ``clone`` feeds it a model's
state dict in memory; the streaming path (``stream.py``) feeds it tensors
read lazily from safetensors shards. Both therefore give identical results.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator

import torch
from transformers import PretrainedConfig, PreTrainedModel

from hyperclone.core.errors import HyperCloneError, SourceError
from hyperclone.core.grow import grow_experts, grow_matrix, repeat_vector, tensor_generator
from hyperclone.core.growth import Growth, require_growth
from hyperclone.core.pretrained import MODEL_BUILDING
from hyperclone.specs import SPACE_FACTORS, FamilySpec, Rule, spec_for
from hyperclone.specs.moe import check_expert_counts


@dataclass(frozen=True)
class ClonePlan:
    """A resolved recipe: a source's spec and config with the ``Growth`` to apply, tensor by tensor."""

    spec: FamilySpec
    source_config: PretrainedConfig
    growth: Growth

    # The growth settings, read through: ``plan.factor`` is ``plan.growth.factor``.
    factor = property(lambda self: self.growth.factor)
    ffn_factor = property(lambda self: self.growth.ffn_factor)
    variant = property(lambda self: self.growth.variant)
    snr_db = property(lambda self: self.growth.snr_db)
    seed = property(lambda self: self.growth.seed)
    tie = property(lambda self: self.growth.tie)
    depth = property(lambda self: self.growth.depth)
    function_preserving = property(lambda self: self.growth.function_preserving)

    @property
    def n_layers(self) -> int:
        """The source's number of layers (``num_hidden_layers``, or the family's key through its attribute map)."""
        return int(self.source_config.num_hidden_layers)

    @cached_property
    def layer_sources(self) -> list[tuple[int, bool]]:
        """(source layer, starts as the identity) of each wide layer (see ``Growth.layer_sources``)."""
        return self.growth.layer_sources(self.n_layers)

    def layer_map(self) -> list[int] | None:
        """The wide layer whose output equals source layer i's, for each i; None when not function-preserving."""
        return self.growth.layer_map(self.n_layers)

    @property
    def source_tied(self) -> bool:
        return bool(getattr(self.source_config, "tie_word_embeddings", False))

    @property
    def keep_tied(self) -> bool:
        """True when the wide model keeps tied embeddings (approximate equivalence)."""
        return self.tie == "keep" and self.source_tied

    def space_factor(self, space: str) -> int:
        f = SPACE_FACTORS[space]
        return self.factor if f == "n" else self.ffn_factor if f == "m" else int(f)

    def wide_config(self) -> PretrainedConfig:
        """The source config with its size keys multiplied and everything else kept."""
        cfg = copy.deepcopy(self.source_config)
        for key, space in self.spec.config.items():
            value = getattr(cfg, key, None)
            if value is None and key in self.spec.config_defaults:
                value = self.spec.config_defaults[key](self.source_config)
            if value is not None:
                setattr(cfg, key, int(value) * self.space_factor(space))
        if self.source_tied and not self.keep_tied:
            cfg.tie_word_embeddings = False
        if self.depth > 1:
            cfg = config_for_layers(cfg, [i for i, _ in self.layer_sources])
        return cfg

    def sources_of(self, source_names: Iterable[str]) -> list[tuple[str, str]]:
        """(wide weight name, the source tensor it grows from), in source order.

        A tied source's head grows from its embedding (added after the rest when the source stores the
        head only as its embedding); with ``tie="keep"`` the wide model shares its embedding and has no head.
        """
        pairs = self.spec.sources_of(source_names, self.source_tied, self.keep_tied)
        return pairs if self.depth == 1 else self._deepened(pairs)

    def _deepened(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``pairs`` with each source layer's weights given to every wide layer grown from it, in wide order."""
        by_layer: dict[int, list[tuple[str, str]]] = {}
        for wide, source in pairs:
            layer = self.spec.layer_of(wide)
            if layer is not None:
                by_layer.setdefault(layer, []).append((wide, source))
        out, done = [], False
        for wide, source in pairs:
            if self.spec.layer_of(wide) is None:
                out.append((wide, source))
            elif not done:  # every wide layer at the place of the first layer weight
                done = True
                for j, (i, _) in enumerate(self.layer_sources):
                    out += [(self.spec.with_layer(w, j), s) for w, s in by_layer.get(i, [])]
        return out

    def names(self, source_names: Iterable[str]) -> list[str]:
        """The wide model's weight names, in source order (a tied head is added or dropped)."""
        return [wide for wide, _ in self.sources_of(source_names)]

    def factors_of(self, rule: Rule) -> list[tuple[int, int]]:
        """(out factor, in factor) of each part of the rule's output axis (one pair for an unfused tensor)."""
        in_factor = self.space_factor(rule.inp) if rule.inp else 1
        return [(self.space_factor(space), in_factor) for space in rule.parts]

    def parts_of(self, name: str, rule: Rule, t: torch.Tensor) -> list[tuple[str, torch.Tensor, int, int]]:
        """(part name, part, out factor, in factor) for each part of ``t``'s output axis, as stored.

        An unfused tensor is its one part, named ``name``; a fused one is split into ``name#0``, ``name#1``...
        """
        factors = self.factors_of(rule)
        if len(factors) == 1:
            return [(name, t, *factors[0])]
        axis = rule.out_axis(t.dim())
        pieces = torch.split(t, self.part_sizes(name, rule, t.shape[axis]), dim=axis)
        return [(f"{name}#{i}", piece, a, b) for i, (piece, (a, b)) in enumerate(zip(pieces, factors))]

    def grow(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The wide model's ``name`` from the source tensor of the same name.

        For an untied head that the source stored only as its embedding, pass
        the embedding tensor under the head's name.
        """
        rule = self.spec.rule_for(name)
        check_finite(name, tensor)
        layer, new_block = self.spec.layer_of(name), False
        if self.depth > 1 and layer is not None:  # grown as its source layer's weight (same noise seed)
            source_layer, new_block = self.layer_sources[layer]
            name = self.spec.with_layer(name, source_layer)
        out = self._grow_by_rule(name, rule, tensor)
        if new_block and rule.writes_residual:
            return torch.zeros_like(out)  # the new block adds nothing to the residual stream: the identity
        scale = 1.0
        if self.spec.embed_scale and name == self.spec.embed:
            scale /= self.factor**0.5
        if self.keep_tied and rule.writes_residual:
            scale /= self.factor
        if scale != 1.0:
            out = (out.to(torch.float64 if out.dtype == torch.float64 else torch.float32) * scale).to(out.dtype)
        return out

    def _grow_by_rule(self, name: str, rule: Rule, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 3:  # MoE experts [experts, out, in]: each grows as a matrix, its noise seeded by its index
            return grow_experts(t, lambda e, w: self._grow_by_rule(f"{name}[{e}]", rule, w))
        grown = [self._grow_one(part, piece, a, b, rule) for part, piece, a, b in self.parts_of(name, rule, t)]
        return grown[0] if len(grown) == 1 else torch.cat(grown, dim=rule.out_axis(t.dim()))

    def part_sizes(self, name: str, rule: Rule, total: int) -> list[int]:
        """Sizes of the parts of a (possibly fused) output axis of length ``total``.

        Sizes come from the spec's ``space_sizes`` evaluated on this plan's
        config (so a plan over a wide config splits wide tensors); parts with
        no declared size split the axis equally.
        """
        parts = rule.parts
        sizes = [self.space_size(p, total // len(parts)) for p in parts]
        if sum(sizes) != total:
            raise HyperCloneError(f"{name}: fused parts {parts} have sizes {sizes}, which do not add up to {total}")
        return sizes

    def _grow_one(self, name: str, t: torch.Tensor, a: int, b: int, rule: Rule) -> torch.Tensor:
        if t.dim() == 1:
            return repeat_vector(t, a)
        if t.dim() != 2:
            raise HyperCloneError(f"{name}: expected a vector or a matrix, got shape {tuple(t.shape)}")
        variant = self.variant.removeprefix("noisy_") if rule.noiseless else self.variant
        gen = tensor_generator(self.seed, name) if variant.startswith("noisy") else None
        grown = grow_matrix(rule.as_out_in(t), a, b, variant, self.snr_db, gen)
        return grown.T.contiguous() if rule.transposed else grown

    @classmethod
    def over_wide(cls, wide_config: PretrainedConfig, factor: int, ffn_factor: int | None = None) -> "ClonePlan":
        """A plan whose config is the *wide* one: it splits a clone's tensors into their blocks and parts.

        Used to look inside a clone (symmetry, heatmaps), never to grow anything.
        """
        return cls(spec_for(wide_config), wide_config, Growth(factor, ffn_factor))

    def space_size(self, space: str, equal_split: int) -> int:
        size = self.spec.space_sizes.get(space)
        return int(size(self.source_config)) if size else equal_split


def config_for_layers(config: PretrainedConfig, layers: list[int]) -> PretrainedConfig:
    """A copy of ``config`` for a model whose layers are copies of the given layers of ``config``'s, in order.

    Used for depth growth (layers repeated) and sampled verification (some layers). The layer count and the
    per-layer settings follow: ``layer_types`` (sliding or full attention) and Qwen-MoE's dense layers.
    """
    cfg = copy.deepcopy(config)
    n = int(config.num_hidden_layers)
    if list(layers) == list(range(n)):
        return cfg
    cfg.num_hidden_layers = len(layers)
    layer_types = getattr(cfg, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == n:
        cfg.layer_types = [layer_types[i] for i in layers]
    step = getattr(cfg, "decoder_sparse_step", None)
    if isinstance(step, int) and step > 0:  # Qwen-MoE: the layers that have a dense MLP, renumbered
        dense = set(getattr(cfg, "mlp_only_layers", None) or [])
        cfg.mlp_only_layers = [j for j, i in enumerate(layers) if i in dense or (i + 1) % step]
        cfg.decoder_sparse_step = 1
    return cfg


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run the block on one torch thread (measured: the in-memory clone ~25% faster on the 2-core VM)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Refuse a source weight holding NaN or inf: its clone would be saved, and only fail verification.

    A NaN or inf element makes the sum NaN or inf, so a finite sum clears the tensor in one cheap
    reduction; a sum that overflowed is settled element by element.
    """
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return
    with _one_torch_thread():  # one memory-bound pass: waking torch's other threads costs more than it saves
        total = float(tensor.sum())
    if math.isfinite(total):
        return
    if not bool(torch.isfinite(tensor).all()):
        raise SourceError(f"the source weight {name!r} holds NaN or infinite values; the checkpoint is damaged "
                          "(re-download or re-save it), so nothing was cloned")


def make_plan(config: PretrainedConfig, growth: Growth | None = None) -> ClonePlan:
    """Fit ``growth`` (None: ``Growth()``, a x2 symmetric clone) to a source config and resolve its spec.

    ``growth`` checked its own settings when it was made; what is checked here
    depends on the source (its family, whether it can keep a tied embedding).
    """
    growth = Growth() if growth is None else require_growth(growth)
    spec = spec_for(config)
    check_expert_counts(config, f"the {spec.model_type} config")
    plan = ClonePlan(spec, config, growth)
    if plan.keep_tied and not spec.supports_tie_keep:
        raise HyperCloneError(
            f"tie='keep' is not supported for {spec.model_type} (its norms or embedding scale make it inexact); "
            "use tie='untie'"
        )
    if plan.keep_tied and getattr(config, "do_layer_norm_before", True) is False:
        raise HyperCloneError("tie='keep' needs a pre-LayerNorm model; use tie='untie'")
    if growth.depth > 1:
        _check_depth(plan)
    return plan


def _check_depth(plan: ClonePlan) -> None:
    """Refuse depth settings this source cannot take, in one line."""
    if not plan.spec.layer_prefix:
        raise HyperCloneError(f"the {plan.spec.model_type} spec names no layers, so it cannot grow in depth")
    layer_writers = [p for p, rule in plan.spec.tensors.items() if rule.writes_residual and "*" in p]
    if not plan.growth.stack and not layer_writers:
        raise HyperCloneError(f"the {plan.spec.model_type} spec marks no layer weight writes_residual, so a new "
                              "block cannot start as the identity; use stack=True or no depth growth")
    if not plan.growth.stack and getattr(plan.source_config, "do_layer_norm_before", True) is False:
        raise HyperCloneError("depth growth needs a pre-LayerNorm model (a post-LN block normalises even when it "
                              "adds nothing, so it is not the identity); use stack=True or no depth growth")
    if plan.growth.depth_every > plan.n_layers:
        raise HyperCloneError(f"depth_every={plan.growth.depth_every} is more than the source's {plan.n_layers} "
                              "layers, so no block would be inserted; choose a smaller depth_every")


def grow_state(plan: ClonePlan, tensors: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Grow every (name, tensor) of a source state dict, in order.

    An untied head of a tied source grows from its embedding (see ``ClonePlan.sources_of``).
    """
    state = dict(tensors)
    for name, source in plan.sources_of(state):
        if source not in state:
            raise HyperCloneError(f"tied head {name!r} needs {source!r}, which is missing")
        yield name, plan.grow(name, state[source])


def model_from_state(config: PretrainedConfig, state: dict[str, torch.Tensor], model_class: type | None = None):
    """A stock transformers model from a config and a full state dict, without random init.

    Parameters are created on the meta device and then *assigned* the given
    tensors; buffers (rotary frequencies, embedding scales) are computed
    normally from the config.
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with MODEL_BUILDING, init_empty_weights(include_buffers=False):
        if model_class is None:
            model = AutoModelForCausalLM.from_config(config)
        else:
            model = model_class(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied_heads = {k for k in missing if getattr(config, "tie_word_embeddings", False) and k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied_heads:
        raise RuntimeError(f"cloned weights do not fit {type(model).__name__}: missing {missing}, unexpected {unexpected}")
    if tied_heads:
        model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise RuntimeError(f"parameters left uninitialised after cloning: {still_meta}")
    return model


def clone(
    model: PreTrainedModel,
    factor: int = 2,
    ffn_factor: int | None = None,
    variant: str = "symmetric",
    snr_db: float = 10.0,
    seed: int = 0,
    tie: str = "untie",
    depth: int = 1,
    depth_every: int = 1,
    stack: bool = False,
    *,
    growth: Growth | None = None,
) -> PreTrainedModel:
    """HyperClone ``model`` into a wider model of the same class with the same logits.

    ``factor`` multiplies hidden size and (KV) heads, ``ffn_factor`` (default:
    ``factor``) the FFN size; the settings are those of ``Growth``. Pass them
    one by one or as ``growth=Growth(...)``, not both (with ``growth`` the
    others keep their defaults). The result lives on the source's device and
    dtype and is a stock transformers model (save it with ``save_pretrained``).
    ``depth=2`` also doubles the layers with new blocks that start as the identity
    (``clone(model, factor=2, depth=2)``); ``stack=True`` repeats the layer stack
    instead (not function-preserving); see ``Growth``.
    """
    if not isinstance(model, PreTrainedModel):
        raise HyperCloneError(f"clone expects a transformers PreTrainedModel, got {type(model).__name__}")
    settings = Growth(factor, ffn_factor, variant, snr_db, seed, tie, depth, depth_every, stack)
    if growth is None:
        growth = settings
    elif settings != Growth():
        raise HyperCloneError("clone takes growth=Growth(...) or the settings one by one (factor=, variant=, "
                              "...), not both; put every setting in the Growth")
    return apply_plan(model, make_plan(model.config, growth))


def apply_plan(model: PreTrainedModel, plan: ClonePlan) -> PreTrainedModel:
    """The clone of ``model`` that ``plan`` (made by ``make_plan`` from this model's config) describes."""
    if plan.source_config is not model.config and plan.source_config.to_dict() != model.config.to_dict():
        raise HyperCloneError("this plan was made for another model's config; make it with "
                              "make_plan(model.config, growth)")
    plan.growth.check_noise_fits({p.dtype for p in model.parameters()})  # before any tensor is grown
    with torch.no_grad():
        state = dict(grow_state(plan, model.state_dict().items()))
    wide = model_from_state(plan.wide_config(), state, type(model))
    wide.to(next(model.parameters()).device)
    wide.train(model.training)
    wide.hyperclone_plan = plan  # provenance for verify/symmetry; not saved with the model
    return wide
