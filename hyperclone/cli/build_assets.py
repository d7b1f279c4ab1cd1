"""Rebuild the shipped tokenizer and source models from scratch, on CPU.

    python -m hyperclone.cli.build_assets                 # tokenizer + both models
    python -m hyperclone.cli.build_assets --only llama    # one model (tokenizer must exist)

Steps, top to bottom:
1. Train a byte-level BPE tokenizer on the train split of the built-in corpus.
2. For each model in ``MODELS``: build a stock transformers model from its
   config, train it with AdamW and a cosine schedule on random windows of the
   train split of ``builtin-large`` (about 14x the built-in corpus: the default
   3000 steps are half an epoch), measure whether it reached its plateau
   (``cards.plateau_of``: validation loss fell by less than 0.01 nats over the
   last 20% of steps; the card records the verdict, met or not),
   evaluate it on fixed validation windows of ``builtin`` (the race's default
   data), and save it with its tokenizer, a ``card.json`` of measured figures
   and a README written from it (``cards.readme_from_card``).

The race's own pieces do the work: the optimizer (``make_optimizer``), the
learning-rate schedule (``lr_at``), the loss (``loss_on``), the evaluation
(``evaluate``) and greedy decoding (``compare.greedy``).

Seeds are fixed, dropout is zero and the data order depends only on the step
number, so a rebuild on the same machine retraces the same run (float
reductions may differ across CPUs/thread counts, so figures can move slightly).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from hyperclone.views.compare import greedy
from hyperclone.training.contestants import make_optimizer
from hyperclone.training.data import EOT_TOKEN, load_corpus, split_of
from hyperclone.training.documents import builtin_documents
from hyperclone.core.errors import HyperCloneError
from hyperclone.training.config import lr_at
from hyperclone.io.sources import check_device
from hyperclone.training.loop import evaluate, loss_on
from hyperclone.assets import ASSETS_DIR, MODEL_KEYS, TOKENIZER_DIR, add_arguments
from hyperclone.cli.asset_cards import CORPUS_NAMES, REBUILD, plateau_of, readme_from_card

VOCAB_SIZE = 2048
SEQ_LEN = 256
MICRO_SEQ_LEN = 128  # the micro sources' context
EVAL_WINDOWS = 64  # the fixed validation windows of the built-in corpus behind each card's figures
CURVE_WINDOWS = 128  # validation windows of the training corpus behind the loss curve
SEED = 0
DEFAULT_STEPS = 3000  # each model's budget on builtin-large (``--steps`` gives another)


# --------------------------------------------------------------------------- #
# 1. Tokenizer
# --------------------------------------------------------------------------- #
def train_tokenizer(out_dir: Path = TOKENIZER_DIR, vocab_size: int = VOCAB_SIZE) -> Any:
    """Train byte-level BPE on the built-in train split; save it for AutoTokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [d.text for d in builtin_documents() if split_of(d.key) == "train"]
    tok = Tokenizer(models.BPE())
    # GPT-2's byte-level scheme: every byte is a symbol, so any text round-trips.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT_TOKEN],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT_TOKEN,
        eos_token=EOT_TOKEN,
        unk_token=EOT_TOKEN,
        pad_token=EOT_TOKEN,
        model_max_length=SEQ_LEN,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def load_tokenizer(path: Path = TOKENIZER_DIR) -> Any:
    """The shipped tokenizer, as ``AutoTokenizer`` loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=False)  # our own files: never custom code


# --------------------------------------------------------------------------- #
# 2. Models
# --------------------------------------------------------------------------- #
@dataclass
class Recipe:
    """How one built-in model is made: its config and its training budget."""

    name: str
    summary: str
    config: dict  # passed to the config class named by ``family``
    family: str  # transformers model_type
    steps: int
    corpus: str = "builtin-large"  # the data spec it trains on (``load_corpus``)
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"  # after warm-up (``lr_at``)
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    # Attention kernel used for training only (the saved config keeps the
    # default): GPT-2's sdpa path is ~2x slower than eager on CPU here.
    train_attn: str | None = None
    seq_len: int = SEQ_LEN  # the context it trains on (and ships as its max positions)
    purpose: str = ""  # one line on what it is for, shown beside it in the dashboard
    prompts: list[str] = field(
        default_factory=lambda: ["def read_lines(path):\n", 'The "with" statement']
    )


NO_DROPOUT_GPT2 = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)

MODELS: dict[str, Recipe] = {
    "gpt2": Recipe(
        name="tiny-gpt2-stdlib",
        summary="GPT-2: LayerNorm, GELU, learned positions, tied embeddings",
        family="gpt2",
        config=dict(n_embd=64, n_layer=4, n_head=4, n_positions=SEQ_LEN, **NO_DROPOUT_GPT2),
        steps=DEFAULT_STEPS,
        train_attn="eager",
    ),
    "llama": Recipe(
        name="tiny-llama-stdlib",
        summary="Llama: RMSNorm, SwiGLU, RoPE, grouped-query attention (6 query / 2 KV heads)",
        family="llama",
        config=dict(
            hidden_size=96,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=SEQ_LEN,
            tie_word_embeddings=False,
            attention_dropout=0.0,
        ),
        steps=DEFAULT_STEPS,
    ),
    # The micro sources: small enough that the paper's whole comparison (20-50 tokens per wide parameter,
    # lr sweeps, seeds, variants) fits a 2-core machine (``hyperclone reproduce``). Each trains ~100 tokens
    # per parameter, like the paper's sources (OPT-350M ~86 ... OLMo-1B ~2400).
    "micro-gpt2": Recipe(
        name="micro-gpt2-stdlib",
        summary="GPT-2 at micro scale: hidden 32, 4 layers, 2 heads of 16, context 128, tied embeddings",
        family="gpt2",
        # gelu_pytorch_tanh is GPT-2's gelu_new (the same tanh formula) in one fused kernel: 1.15x the race's
        # tokens/s on this clone (benchmarks/results/micro_gelu_kernel.txt). The shipped weights were trained with
        # gelu_new; tests/test_assets.py checks both give the same logits to fp32 rounding.
        config=dict(n_embd=32, n_layer=4, n_head=2, n_positions=MICRO_SEQ_LEN, activation_function="gelu_pytorch_tanh",
                    **NO_DROPOUT_GPT2),
        steps=3000,
        seq_len=MICRO_SEQ_LEN,
        purpose="the paper's experiment on a 2-core CPU: hyperclone reproduce and the 'reproduce the paper (micro)' race",
    ),
    "micro-llama": Recipe(
        name="micro-llama-stdlib",
        summary="Llama at micro scale: hidden 32, 4 layers, 2 query / 1 KV heads of 16, SwiGLU 88, context 128",
        family="llama",
        config=dict(
            hidden_size=32,
            intermediate_size=88,
            num_hidden_layers=4,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=MICRO_SEQ_LEN,
            tie_word_embeddings=False,
            attention_dropout=0.0,
        ),
        steps=4400,
        seq_len=MICRO_SEQ_LEN,
        purpose="the paper's experiment on a 2-core CPU with the Llama family (RMSNorm, SwiGLU, RoPE, GQA)",
    ),
}
assert tuple(MODELS) == MODEL_KEYS, "keep MODEL_KEYS in hyperclone/assets/__init__.py in step with MODELS"


def untrained_model(recipe: Recipe, vocab_size: int, eot_id: int) -> torch.nn.Module:
    """A freshly initialised stock transformers model for ``recipe`` (seeded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        recipe.family,
        vocab_size=vocab_size,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        **recipe.config,
    )
    torch.manual_seed(SEED)
    return AutoModelForCausalLM.from_config(config)


def train(model: torch.nn.Module, corpus: Any, recipe: Recipe, eval_windows: torch.Tensor,
          eval_every: int = 100) -> list[dict]:
    """AdamW on random train windows (fixed by step number), on the model's device; returns the loss curve."""
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, recipe)
    curve, t0, recent = [], time.perf_counter(), []
    model.train()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, recipe.steps, recipe)
        x, y = corpus.get_batch("train", recipe.batch_size, recipe.seq_len, step=step, seed=SEED)
        loss = loss_on(model, x.to(device), y.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        recent.append(loss.item())
        if (step + 1) % eval_every == 0 or step + 1 == recipe.steps:
            curve.append(curve_point(model, eval_windows, step + 1, recent, time.perf_counter() - t0))
            recent = []
            print(f"  [{recipe.name}] step {step + 1:5d}  train {curve[-1]['train_loss']:.3f}  "
                  f"val {curve[-1]['val_loss']:.3f}  acc {curve[-1]['val_accuracy']:.3f}  {curve[-1]['seconds']:.0f}s",
                  flush=True)
    model.eval()
    return curve


def curve_point(model: torch.nn.Module, eval_windows: torch.Tensor, step: int, recent: list[float],
                seconds: float) -> dict:
    """One row of a card's loss curve: mean training loss since the last row, then validation figures."""
    val_loss, val_accuracy = evaluate(model, eval_windows)
    return {"step": step, "train_loss": round(sum(recent) / len(recent), 4), "val_loss": round(val_loss, 4),
            "val_accuracy": round(val_accuracy, 4), "seconds": round(seconds, 1)}


def card_sample(model: torch.nn.Module, tokenizer: Any, prompt: str, new_tokens: int = 48) -> str:
    """The greedy continuation of ``prompt`` that a card shows as a sample."""
    return greedy(model, tokenizer, tokenizer(prompt, return_tensors="pt")["input_ids"], max_new_tokens=new_tokens)


def build_builtin(recipe: Recipe, tokenizer: Any, corpora: dict[str, Any], out_root: Path = ASSETS_DIR,
                  device: torch.device = torch.device("cpu")) -> dict:
    """Train one built-in model and save it with its tokenizer and cards; return the card.

    ``corpora``: loaded corpora by spec; the model trains on ``recipe.corpus``
    (its loss curve and plateau check use that corpus's validation split) and
    its card's figures are measured on ``builtin``, the race's default data.
    It trains on ``device``; the figures and samples are measured on the CPU.
    """
    train_corpus, race_corpus = corpora[recipe.corpus], corpora["builtin"]
    model = untrained_model(recipe, len(tokenizer), tokenizer.eos_token_id).to(device)
    if recipe.train_attn:
        model.set_attn_implementation(recipe.train_attn)
    params = sum(p.numel() for p in model.parameters())
    print(f"building {recipe.name}: {params:,} parameters, {recipe.steps} steps on {recipe.corpus}, {device}",
          flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    curve = train(model, train_corpus, recipe, train_corpus.validation_windows(CURVE_WINDOWS, recipe.seq_len))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0

    model.to("cpu").set_attn_implementation("sdpa")  # what a plain from_pretrained gives users
    measured = measured_figures(model, tokenizer, recipe, race_corpus,
                                race_corpus.validation_windows(EVAL_WINDOWS, recipe.seq_len))

    out = out_root / recipe.name
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the tokenizer, byte for byte
        shutil.copyfile(Path(tokenizer.name_or_path) / name, out / name)
    if recipe.seq_len != SEQ_LEN:  # the same tokenizer, saying the model's own context
        settings = json.loads((out / "tokenizer_config.json").read_text())
        (out / "tokenizer_config.json").write_text(json.dumps({**settings, "model_max_length": recipe.seq_len},
                                                              indent=2) + "\n")
    card = {
        "name": recipe.name,
        "family": recipe.family,
        "architecture": type(model).__name__,
        "summary": recipe.summary,
        "params": params,
        "size_mb": round((out / "model.safetensors").stat().st_size / 2**20, 2),
        "config": {"vocab_size": model.config.vocab_size, "context": recipe.seq_len, **recipe.config},
        **({"purpose": recipe.purpose} if recipe.purpose else {}),
        "data": data_facts(train_corpus, race_corpus, recipe),
        "training": training_facts(recipe, train_corpus, wall, cpu, device),
        **measured,
        "plateau": plateau_of(curve, recipe.steps),
        "curve": curve,
        "rebuild": f"{REBUILD} --only {next(k for k, r in MODELS.items() if r.name == recipe.name)}"
                   + ("" if recipe.steps == DEFAULT_STEPS else f" --steps {recipe.steps}"),
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "README.md").write_text(readme_from_card(card))
    print(f"saved {out}: val loss {card['val_loss']:.4f}, accuracy {card['val_accuracy']:.4f}, "
          f"{wall:.0f}s", flush=True)
    return card


def measured_figures(model: torch.nn.Module, tokenizer: Any, recipe: Recipe, corpus: Any,
                     eval_windows: torch.Tensor) -> dict:
    """The card's validation figures (fixed windows and all windows) and greedy samples."""
    val_loss, val_accuracy = evaluate(model, eval_windows)
    all_loss, all_accuracy = evaluate(model, corpus.validation_windows(None, recipe.seq_len))
    return {
        "val_loss": round(val_loss, 4),
        "val_accuracy": round(val_accuracy, 4),
        "val_loss_all_windows": round(all_loss, 4),
        "val_accuracy_all_windows": round(all_accuracy, 4),
        "samples": [{"prompt": p, "completion": card_sample(model, tokenizer, p)} for p in recipe.prompts],
    }


def data_facts(train_corpus: Any, race_corpus: Any, recipe: Recipe) -> dict:
    """The card's ``data`` section: which corpus it trained on, how big, which windows the figures use."""
    return {
        "corpus": CORPUS_NAMES.get(recipe.corpus, recipe.corpus),
        "corpus_spec": recipe.corpus,
        "python": sys.version.split()[0],
        "train_tokens": train_corpus.num_tokens("train"),
        "validation_tokens": train_corpus.num_tokens("validation"),
        "curve_windows": CURVE_WINDOWS,
        "eval_corpus": "builtin",
        "eval_validation_tokens": race_corpus.num_tokens("validation"),
        "eval_windows": EVAL_WINDOWS,
        "eval_window_tokens": recipe.seq_len,
    }


def training_facts(recipe: Recipe, corpus: Any, wall: float, cpu: float, device: torch.device) -> dict:
    """The card's ``training`` section: budget, optimizer, schedule, time and machine."""
    import transformers

    tokens_seen = recipe.steps * recipe.batch_size * recipe.seq_len
    return {
        "steps": recipe.steps,
        "batch_size": recipe.batch_size,
        "seq_len": recipe.seq_len,
        "tokens_seen": tokens_seen,
        "epochs": round(tokens_seen / corpus.num_tokens("train"), 2),
        "final_lr": float(f"{recipe.lr * recipe.min_lr_ratio:.12g}"),
        "optimizer": f"AdamW(lr={recipe.lr}, betas={tuple(recipe.betas)}, weight_decay={recipe.weight_decay})",
        "schedule": f"linear warmup {recipe.warmup} steps, {recipe.schedule} to {recipe.min_lr_ratio} x peak",
        "seed": SEED,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),  # summed over threads; wall time depends on machine load
        "cpu_count": os.cpu_count(),
        "load_average_15min": round(os.getloadavg()[2], 1),  # > cpu_count: wall time inflated
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def build_assets(only: str | None = None, out: Path = ASSETS_DIR, threads: int | None = None,
                 steps: int | None = None, device: str | None = None) -> dict[str, dict]:
    """Rebuild the tokenizer (unless ``only`` names a model) and the models; return their cards.

    ``only``: ``"tokenizer"`` or a key of ``MODELS`` (``"gpt2"``, ``"llama"``);
    a model alone reuses the tokenizer already in ``out``. ``steps``: another
    training budget than the recipe's (e.g. to train to the plateau on a GPU);
    ``device``: where to train (default: the best available).
    """
    if only not in (None, "tokenizer", *MODELS):
        raise HyperCloneError(f"unknown asset '{only}'; choose tokenizer, {', '.join(MODELS)}")
    if steps is not None and steps < 1:
        raise HyperCloneError(f"steps must be a positive number of training steps, got {steps}")
    where = check_device(device)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    start = time.perf_counter()
    tok_dir = out / "tokenizer"
    if only in (None, "tokenizer"):
        t0 = time.perf_counter()
        train_tokenizer(tok_dir)
        print(f"tokenizer: {tok_dir} ({time.perf_counter() - t0:.1f}s)", flush=True)
    if only == "tokenizer":
        return {}
    tokenizer = load_tokenizer(tok_dir)
    chosen = [replace(r, steps=steps or r.steps) for key, r in MODELS.items() if only in (None, key)]
    corpora = {spec: load_and_report(spec, tokenizer) for spec in {"builtin", *(r.corpus for r in chosen)}}
    cards = {}
    for recipe in chosen:
        cards[recipe.name] = build_builtin(recipe, tokenizer, corpora, out, where)
    print(f"done in {time.perf_counter() - start:.0f}s", flush=True)
    return cards


def load_and_report(spec: str, tokenizer: Any) -> Any:
    """Load one corpus (from the token cache when it is there) and say how big it is."""
    t0 = time.perf_counter()
    corpus = load_corpus(spec, tokenizer, SEQ_LEN)
    print(f"corpus {spec}: {corpus.num_tokens('train'):,} train / {corpus.num_tokens('validation'):,} "
          f"validation tokens ({'cache' if corpus.from_cache else 'tokenised'} in "
          f"{time.perf_counter() - t0:.1f}s)", flush=True)
    return corpus


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m hyperclone.cli.build_assets [--only tokenizer|gpt2|llama]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    build_assets(args.only, args.out, args.threads, args.steps, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
