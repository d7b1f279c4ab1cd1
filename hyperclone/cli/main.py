"""The ``hyperclone`` command line: thin wrappers around the public API.

Every expected failure is a ``HyperCloneError`` and is printed as one line
(``error: ...``) with exit status 2; a failed equivalence check exits 1.
Arguments are parsed and checked before torch and transformers are imported
(inside the commands), so ``--help`` and a bad argument answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

from hyperclone.core.errors import HyperCloneError, first_line, shown
from hyperclone.core.growth import Growth, flag_options
from hyperclone.cli.options import DTYPES, add_verbosity, configure_logging



def _add_clone_args(p: argparse.ArgumentParser) -> None:
    """``Growth``'s flags, one per field, with the help and default its field declares (``core/growth.py``)."""
    for flag, options in flag_options(Growth):
        p.add_argument(flag, **options)


def _growth(args) -> Growth:
    """The one ``Growth`` of a ``clone`` command, checked before torch is imported."""
    return Growth(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Growth)})


def _depth_words(growth: Growth) -> str:
    """", layers: ..." for a depth-grown clone, saying so loudly when it is not function-preserving."""
    return f", layers: {growth.describe_depth()}" if growth.depth > 1 else ""


def _add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", choices=DTYPES, default=None, help="load dtype (default float32)")
    p.add_argument("--device", default=None, help="cuda, mps, cpu or auto: where the model loads and the check runs "
                   "(default: auto, the best available); a streamed clone grows there only when it is given")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickle (.bin) weights; they can run code")
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the checkpoint")


def _load(name: str, args):
    from hyperclone.io.sources import load_source

    return load_source(name, device=args.device, dtype=args.dtype, allow_pickle=args.allow_pickle,
                       trust_remote_code=args.trust_remote_code)


def _cmd_clone_stream(args, growth: Growth, where: Path) -> int:
    """Stream a safetensors checkpoint tensor by tensor: memory bounded by about one tensor, not one shard."""
    from hyperclone.core.resources import human_bytes
    from hyperclone.io.stream import stream_clone

    print(f"streaming {args.src} -> {args.out}: x{growth.factor} (FFN x{growth.ffn_factor}), "
          f"variant {growth.variant}{_depth_words(growth)}, shards up to {args.max_shard_size}")
    result = stream_clone(
        where, args.out, growth,
        dtype=args.dtype, max_shard_size=args.max_shard_size, overwrite=args.overwrite,
        verify="auto" if args.verify else False, device=args.device, source_name=args.src, force=args.force,
        text=args.text, progress=print, trust_remote_code=args.trust_remote_code,
    )
    print(f"grown on {result.grown_on}")
    if result.report is not None:
        print(result.report.summary())
    print(f"verification: {result.verification['method']}"
          f"{' - ' + result.verification['note'] if result.verification.get('note') else ''}")
    print(f"saved {args.out}: {result.n_params / 1e6:.2f}M params, {human_bytes(result.n_bytes)} {result.dtype} "
          f"in {len(result.shards)} shard(s), {result.seconds:.1f}s "
          f"({result.n_bytes / max(result.seconds, 1e-9) / 1e9:.2f} GB/s)")
    return 0 if result.passed else 1  # a stacked model that differs passes: not function-preserving by design


def cmd_clone(args) -> int:
    growth = _growth(args)  # fail before importing torch or loading anything
    token = None
    if args.private and not args.push_to_hub:
        raise HyperCloneError("--private needs --push-to-hub REPO_ID (it makes the hub repository private)")
    if args.push_to_hub:
        from hyperclone.io.hub import check_push

        token = check_push(args.push_to_hub)  # no token, offline, no answer: one line before any work
    code = _clone(args, growth)
    return code if token is None else _push(args, token, code)


def _push(args, token: str, code: int) -> int:
    """Upload the finished clone at ``args.out`` to ``args.push_to_hub`` unless its equivalence check failed."""
    from hyperclone.io.export import hyperclone_files
    from hyperclone.io.hub import push_folder

    if code != 0:
        print(f"not pushed to {args.push_to_hub}: the equivalence check failed (the clone is kept at {args.out})",
              file=sys.stderr)
        return code
    print(f"pushing {args.out} to {args.push_to_hub}{' (private)' if args.private else ''} ...")
    files = sorted(hyperclone_files(Path(args.out)))  # what HyperClone wrote there, nothing added since
    print(f"pushed: {push_folder(args.out, args.push_to_hub, token, args.private, files)}")
    return code


def _clone(args, growth: Growth) -> int:
    """Grow ``args.src`` into ``args.out`` (streamed, or in memory); the exit status (1: equivalence failed)."""
    from hyperclone.core.clone import apply_plan, make_plan
    from hyperclone.core.resources import wide_model_bytes
    from hyperclone.io.export import check_output_dir, provenance, save_clone
    from hyperclone.core.resources import check_fits_in_memory, human_bytes
    from hyperclone.io.sources import check_device, resolve_source
    from hyperclone.core.verify import verify

    check_device(args.device)  # fail before any work
    origin, src_dir = resolve_source(args.src)
    src_dir = None if origin == "hub" else src_dir
    check_output_dir(args.out, args.overwrite, src_dir)
    if not args.in_memory:
        from hyperclone.io.checkpoint import parse_size
        from hyperclone.io.sources import streamable_source

        parse_size(args.max_shard_size)
        where = streamable_source(args.src, args.allow_pickle, args.trust_remote_code)
        if where is not None:  # None: pickle-only and allowed, so load it in memory below
            return _cmd_clone_stream(args, growth, where)
    t0 = time.perf_counter()
    source, tokenizer = _load(args.src, args)
    device = next(source.parameters()).device
    plan = make_plan(source.config, growth)
    n_params, n_bytes = wide_model_bytes(plan, next(source.parameters()).dtype)
    check_fits_in_memory(n_bytes, device, f"the x{growth.factor} clone ({n_params / 1e6:.1f}M parameters)",
                         args.force)
    print(f"cloning {args.src} ({source.num_parameters() / 1e6:.2f}M params) -> {n_params / 1e6:.2f}M params, "
          f"{human_bytes(n_bytes)}, variant {growth.variant}{_depth_words(growth)}, on {device}")
    wide = apply_plan(source, plan)
    report = verify(source, wide, text=args.text, tokenizer=tokenizer if args.text else None)
    print(report.summary())
    save_clone(wide, args.out, provenance(plan, args.src, report), tokenizer, args.overwrite, args.max_shard_size,
               src_dir)
    print(f"saved {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0 if report.as_expected else 1


def cmd_verify(args) -> int:
    from hyperclone.io.export import PROVENANCE_FILE
    from hyperclone.io.sources import check_device
    from hyperclone.core.verify import verify

    check_device(args.device)
    record_file = Path(args.dst) / PROVENANCE_FILE
    record, depth = _read_record(record_file)  # refused before any model is loaded
    source, tokenizer = _load(args.src, args)
    cloned, _ = _load(args.dst, args)
    try:
        layer_map = depth.layer_map(int(source.config.num_hidden_layers)) if depth else None
    except HyperCloneError as e:
        raise HyperCloneError(f"{record_file}: {e}") from None
    report = verify(source, cloned, text=args.text, tokenizer=tokenizer if args.text else None,
                    approximate=record.get("tie") == "keep", layer_map=layer_map,
                    function_preserving=depth is None or depth.function_preserving)
    print(report.summary())
    return 0 if report.as_expected else 1


def _read_record(path: Path) -> tuple[dict, Growth | None]:
    """A clone's provenance record ({} when it has none) and its depth growth (None: none), or a one-line
    error naming the file when it is not the JSON object HyperClone writes or its depth settings are bad."""
    if not path.exists():
        return {}, None
    fix = "restore it, or remove it to verify without its depth and tie settings"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
        raise HyperCloneError(f"{path} cannot be read as JSON ({first_line(e)}); {fix}") from None
    if not isinstance(record, dict):
        raise HyperCloneError(f"{path} holds a JSON {type(record).__name__}, not the object HyperClone writes; {fix}")
    try:
        return record, _recorded_depth(record)
    except HyperCloneError as e:
        raise HyperCloneError(f"{path}: {e}; {fix}") from None


def _recorded_depth(record: dict) -> Growth | None:
    """The depth growth a clone's provenance record states (None: none), checked as ``Growth`` checks it."""
    depth = record.get("depth") or 1
    if depth == 1:
        return None
    return Growth(depth=depth, depth_every=record.get("depth_every") or 1, stack=bool(record.get("stack")))


def cmd_families(args) -> int:
    from hyperclone.specs import REGISTRY

    width = max(len(k) for k in REGISTRY)
    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        print(f"{name:<{width}}  e.g. {spec.example:<36} {spec.notes}")
    return 0


def cmd_sources(args) -> int:
    from hyperclone.io.sources import format_sources

    print(format_sources())
    return 0


def _check_assets_out(out: Path) -> None:
    """Refuse, in one line, an ``--out`` that is a file, lies under one, or cannot be written."""
    for where in (out, *out.parents):
        if where.exists():
            if not where.is_dir():
                raise HyperCloneError(f"--out {shown(out)}: {shown(where)} is a file, not a directory; choose a "
                                      "directory (it is created when missing)")
            if not os.access(where, os.W_OK | os.X_OK):
                raise HyperCloneError(f"--out {shown(out)}: cannot write in {shown(where)}; choose another directory")
            return


def cmd_build_assets(args) -> int:
    _check_assets_out(args.out)  # before any training
    from hyperclone.cli.build_assets import build_assets

    build_assets(args.only, args.out, args.threads, args.steps, args.device)
    return 0


class Parser(argparse.ArgumentParser):
    """argparse, with the user's text in its error messages cut short (sub-commands' parsers are Parsers too)."""

    def error(self, message: str):
        super().error(shown(message, ERROR_CHARS))


ERROR_CHARS = 300  # argparse's message quotes the bad value whole


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hyperclone", description="Function-preserving growth of causal LMs.")
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("clone", help="grow SRC into a wider model saved at OUT")
    p.add_argument("src", help="built-in name, local checkpoint directory, or hub id")
    p.add_argument("out", help="output directory (written atomically)")
    _add_clone_args(p)
    _add_load_args(p)
    p.add_argument("--text", default=None, help="text for the equivalence check (default: fixed token sample)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it holds an earlier HyperClone output")
    p.add_argument("--force", action="store_true", help="skip the will-it-fit memory check")
    p.add_argument("--max-shard-size", default="2GB",
                   help="largest output safetensors shard, e.g. 500MB, 2GB, 1GiB or bytes (default 2GB)")
    p.add_argument("--in-memory", action="store_true",
                   help="load the source and build the clone in memory (always checks logits) instead of "
                        "streaming safetensors shard by shard (the default; keeps the stored dtype)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the equivalence check after streaming (by default it compares logits: the full "
                        "models if both fit in free memory, else a model of the first, middle and last layers)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                   help="upload the finished OUT to this Hugging Face model repository (needs a token and the "
                        "network, checked before any work)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
    p.set_defaults(func=cmd_clone)

    p = sub.add_parser("verify", help="check that DST computes the same logits as SRC")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--text", default=None)
    _add_load_args(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("families", help="list supported architecture families")
    p.set_defaults(func=cmd_families)

    p = sub.add_parser("sources", help="list the built-in models (offline) and curated hub presets")
    p.set_defaults(func=cmd_sources)

    from hyperclone.assets import add_arguments as add_build_arguments

    p = sub.add_parser("build-assets", help="rebuild the built-in tokenizer and models from scratch on CPU")
    add_build_arguments(p)
    p.set_defaults(func=cmd_build_assets)

    from hyperclone.cli.eval import add_eval_parser
    from hyperclone.cli.race import add_race_parser
    from hyperclone.cli.reproduce import add_reproduce_parser
    from hyperclone.cli.serve import add_serve_parser
    from hyperclone.cli.notebooks import add_notebooks_parser

    add_race_parser(sub)
    add_reproduce_parser(sub)
    add_serve_parser(sub)
    add_notebooks_parser(sub)
    add_eval_parser(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that it unwinds (and cleans up) exactly like Ctrl-C."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: let the clean-up finish
    raise Terminated


def _catch_sigterm():
    """Handle SIGTERM like Ctrl-C; the handler it replaces (None off the main thread, where it cannot)."""
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    previous = _catch_sigterm()
    try:
        return args.func(args)
    except HyperCloneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated: an unfinished clone leaves nothing at OUT; a race keeps the records written so far",
              file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted: an unfinished clone leaves nothing at OUT; a race keeps the records written so far", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError, OSError) as e:
        from hyperclone.core.resources import is_out_of_memory

        if not is_out_of_memory(e):
            raise
        print("error: out of memory; use a smaller factor or dtype, or stream from disk", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
