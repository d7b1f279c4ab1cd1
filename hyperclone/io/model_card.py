"""The model card (README.md) of a clone, in the Hub's format: ``huggingface_hub.ModelCard`` with metadata.

The metadata says what the Hub shows and filters on: ``base_model`` (the
source: its hub id, or its name or path as recorded), ``license`` (the source's,
when known: a built-in model's is HyperClone's own, a local or hub source's is
read from its own README.md card), ``tags``, ``library_name`` and
``pipeline_tag``. The body says how the clone was grown, what the equivalence
check found and the commands that grow and check it again.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from hyperclone.core.errors import HyperCloneError

PAPER = "https://arxiv.org/abs/2409.12903"
PROJECT_LICENSE = "apache-2.0"  # HyperClone's (LICENSE, pyproject.toml), which the built-in models ship under
LICENSE_KEYS = ("license", "license_name", "license_link")  # what a card may say about its licence ("other" + name)


def card_license(readme: str | Path | None) -> dict[str, str]:
    """The licence keys of the model card at ``readme`` (none when there is no card, or it names no licence)."""
    if readme is None or not Path(readme).is_file():
        return {}
    try:
        data = ModelCard.load(readme, ignore_metadata_errors=True).data.to_dict()
    except Exception:  # a card whose metadata does not parse tells us nothing we can use
        return {}
    return {key: str(data[key]) for key in LICENSE_KEYS if isinstance(data.get(key), (str, int, float))}


def source_metadata(source: str) -> dict[str, str]:
    """``base_model`` and the licence keys (when known) of the source recorded as ``source``."""
    from hyperclone.io.hub import hub_file
    from hyperclone.io.sources import resolve_source

    try:
        origin, where = resolve_source(source)
    except HyperCloneError:  # moved or deleted since: its name alone
        return {"base_model": source}
    if origin == "builtin":
        return {"base_model": source, "license": PROJECT_LICENSE}
    readme = hub_file(where, "README.md") if origin == "hub" else Path(where) / "README.md"
    return {"base_model": source, **card_license(readme)}


def output_name(directory: str | Path) -> str:
    """The name ``directory`` will have once published: a temporary ``.NAME.tmp-PID-XXXXXXXX`` is NAME."""
    name = Path(directory).name
    return name[1:].rsplit(".tmp-", 1)[0] if name.startswith(".") and ".tmp-" in name else name


def clone_command(record: dict[str, Any], out: str) -> str:
    """The ``hyperclone clone`` command that grows the clone ``record`` describes again, into ``out``."""
    words = ["hyperclone", "clone", record["source"], out, "--factor", record["factor"],
             "--ffn-factor", record["ffn_factor"], "--variant", record["variant"], "--seed", record["seed"]]
    if record.get("snr_db") is not None:
        words += ["--snr-db", record["snr_db"]]
    if record.get("tie") == "keep":
        words += ["--tie", "keep"]
    if (record.get("depth") or 1) > 1:
        words += ["--depth", record["depth"]]
        words += ["--stack"] if record.get("stack") else ["--depth-every", record.get("depth_every") or 1]
    words += dtype_words(record)
    if record.get("mode") != "streaming":
        words.append("--in-memory")
    return shlex.join(str(word) for word in words)


def verify_command(record: dict[str, Any], out: str) -> str:
    """The ``hyperclone verify`` command that checks the clone in ``out`` against its source again."""
    return shlex.join(["hyperclone", "verify", str(record["source"]), out, *dtype_words(record)])


def dtype_words(record: dict[str, Any]) -> list[str]:
    """``--dtype D`` when the clone was made in a dtype other than the commands' default, float32 (else none)."""
    dtype = record.get("dtype") or (record.get("equivalence") or {}).get("dtype", "")
    dtype = str(dtype).removeprefix("torch.")
    return ["--dtype", dtype] if dtype in ("bfloat16", "float16", "float64") else []


def equivalence_words(record: dict[str, Any]) -> str:
    """What the equivalence check found, in one line ("not run" without one)."""
    eq = record.get("equivalence")
    if not eq:
        return "not run"
    preserving = record.get("function_preserving", True)
    verdict = "passed" if eq["passed"] else "FAILED" if preserving else "not expected to match"
    return (f"{verdict}: max relative logit difference {eq['max_rel_diff']:.2e} (tolerance {eq['tolerance']:g}), "
            f"top-1 agreement {eq['top1_agreement']:.2%}, mean KL {eq['mean_kl']:.2e} over {eq['n_tokens']} "
            f"tokens ({eq['dtype']})")


def _growth_lines(record: dict[str, Any], wide_config) -> list[str]:
    """The body's list of growth settings."""
    snr = f", SNR {record['snr_db']} dB" if record.get("snr_db") is not None else ""
    hidden = getattr(wide_config, "hidden_size", getattr(wide_config, "n_embd", "?"))
    lines = [f"- width: hidden size and attention heads x{record['factor']}, FFN x{record['ffn_factor']} "
             f"(hidden size {hidden})",
             f"- variant: `{record['variant']}`{snr}, seed {record['seed']}"]
    if (record.get("depth") or 1) > 1:
        lines.append(f"- depth x{record['depth']}: {record['layers']}")
    return lines + [f"- tied embeddings: {record['tie']}", f"- equivalence check: {equivalence_words(record)}"]


def card_body(record: dict[str, Any], wide_config, n_params: int | None, out: str, record_file: str) -> str:
    """The card's Markdown below its metadata (``record_file``: the provenance file's name)."""
    size = f" ({n_params / 1e6:.2f}M parameters)" if n_params else ""
    preserving = record.get("function_preserving", True)
    behaviour = ("At initialisation it computes the same logits as its source." if preserving else
                 "Its layers are the source's stacked: NOT function-preserving by design (its logits differ "
                 "from the source's).")
    return "\n".join([
        f"# HyperCloned {record['family']}{size}", "",
        f"Grown from `{record['source']}` with HyperClone, the function-preserving expansion of "
        f"[Scaling Smart]({PAPER}) (HyperCloning). {behaviour}", "",
        *_growth_lines(record, wide_config), "",
        "Load it with stock transformers, no custom code:", "",
        "```python", "from transformers import AutoModelForCausalLM",
        'model = AutoModelForCausalLM.from_pretrained("path/to/this/directory")', "```", "",
        "## Reproduce", "",
        f"Grow it again (same bits: the noise is seeded per tensor), then check its logits against the source "
        f"(HyperClone {record.get('hyperclone_version', '')}):", "",
        "```bash", clone_command(record, out), verify_command(record, out), "```", "",
        f"`{record_file}` records the source, factors, variant, seed, package version and the full "
        "equivalence report.", "", *_verification_lines(record)])


def _verification_lines(record: dict[str, Any]) -> list[str]:
    """How a streamed clone was checked (its record's ``verification``), as the card's last line; none else."""
    check = record.get("verification") or {}
    if not check.get("method"):
        return []
    return [f"Verification: {check['method']}{' - ' + check['note'] if check.get('note') else ''}.", ""]


def model_card(record: dict[str, Any], wide_config, n_params: int | None, out: str, record_file: str) -> ModelCard:
    """The Hub model card of the clone that ``record`` (its provenance, saved as ``record_file``) describes,
    written to the directory named ``out``."""
    tags = ["hyperclone", "hypercloning", str(record["family"])]
    if not record.get("function_preserving", True):
        tags.append("stacked")
    data = ModelCardData(**source_metadata(str(record["source"])), tags=tags, library_name="transformers",
                         pipeline_tag="text-generation")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{card_body(record, wide_config, n_params, out, record_file)}")
