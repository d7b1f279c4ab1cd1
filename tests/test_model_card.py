"""A clone's README.md is a Hub model card (read back with huggingface_hub's own ``ModelCard.load``), its
reproduce commands really reproduce it, and ``clone --push-to-hub`` refuses in one line, before any work, where
a push cannot work. Offline: nothing here reaches a network (a refused hub is a closed local port)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hyperclone.cli.main import main
from hyperclone.io.model_card import PROJECT_LICENSE, card_license, output_name
from hyperclone.io.sources import builtin_dir

REPO = Path(__file__).resolve().parent.parent


def _card(out: Path) -> ModelCard:
    return ModelCard.load(out / "README.md")


def _commands(card: ModelCard) -> list[str]:
    """The commands in the card's Reproduce section."""
    block = re.search(r"## Reproduce.*?```bash\n(.*?)```", card.text, re.S)
    assert block, card.text
    return block.group(1).strip().splitlines()


def _metadata_of_a_hyperclone(card: ModelCard) -> dict:
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["tags"][:2] == ["hyperclone", "hypercloning"]
    return data


def test_a_builtin_clone_card_names_its_base_model_licence_and_reproduces_bit_for_bit(tmp_path, capsys):
    out = tmp_path / "gpt2-x2"
    assert main(["clone", "tiny-gpt2-stdlib", str(out), "--variant", "noisy_symmetric", "--seed", "3"]) == 0
    card = _card(out)
    data = _metadata_of_a_hyperclone(card)
    assert data["base_model"] == "tiny-gpt2-stdlib" and data["license"] == PROJECT_LICENSE == "apache-2.0"
    assert "gpt2" in data["tags"] and "stacked" not in data["tags"]
    body = card.text
    assert "x2, FFN x2 (hidden size 128)" in body and "`noisy_symmetric`, SNR 10.0 dB, seed 3" in body
    assert "equivalence check: passed: max relative logit difference" in body and "FAILED" not in body
    grow, check = _commands(card)
    assert grow == ("hyperclone clone tiny-gpt2-stdlib gpt2-x2 --factor 2 --ffn-factor 2 --variant noisy_symmetric "
                    "--seed 3 --snr-db 10.0")
    again = tmp_path / "again"
    capsys.readouterr()
    assert main([*shlex.split(grow)[1:3], str(again), *shlex.split(grow)[4:]]) == 0
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert check == "hyperclone verify tiny-gpt2-stdlib gpt2-x2"
    assert main([*shlex.split(check)[1:3], str(out)]) == 0
    assert "equivalence PASSED" in capsys.readouterr().out


def _local_source(tmp_path: Path, card: str | None) -> Path:
    """The built-in llama copied to a local directory, with ``card`` as its README.md (none: no README)."""
    src = tmp_path / "my-llama"
    shutil.copytree(builtin_dir("tiny-llama-stdlib"), src)
    (src / "README.md").unlink()
    if card is not None:
        (src / "README.md").write_text(card)
    return src


def test_a_local_source_card_gives_its_path_as_base_model_and_its_own_licence(tmp_path):
    src = _local_source(tmp_path, "---\nlicense: mit\nlanguage: en\n---\n# my llama\n")
    out = tmp_path / "wide"
    assert main(["clone", str(src), str(out), "--depth", "2", "--in-memory", "--dtype", "bfloat16"]) == 0
    card = _card(out)
    data = _metadata_of_a_hyperclone(card)
    assert data["base_model"] == str(src) and data["license"] == "mit" and "language" not in data
    assert "- depth x2: 1 identity block(s) after every layer (function-preserving)" in card.text
    grow, check = _commands(card)
    assert grow.endswith("--depth 2 --depth-every 1 --dtype bfloat16 --in-memory") and grow.split()[2] == str(src)
    assert check == f"hyperclone verify {src} wide --dtype bfloat16"


def test_a_licence_is_only_what_the_source_card_says(tmp_path):
    assert card_license(None) == {} and card_license(tmp_path / "missing.md") == {}
    (tmp_path / "plain.md").write_text("# a model\n\nno metadata\n")
    assert card_license(tmp_path / "plain.md") == {}
    (tmp_path / "broken.md").write_text("---\nlicense: [unclosed\n---\nbody\n")
    assert card_license(tmp_path / "broken.md") == {}
    (tmp_path / "other.md").write_text("---\nlicense: other\nlicense_name: my-licence\nlicense_link: LICENSE\n---\n")
    assert card_license(tmp_path / "other.md") == {"license": "other", "license_name": "my-licence",
                                                   "license_link": "LICENSE"}


def test_a_source_without_a_card_gives_no_licence_and_a_stacked_clone_is_tagged(tmp_path):
    src = _local_source(tmp_path, None)
    out = tmp_path / "stacked"
    assert main(["clone", str(src), str(out), "--depth", "2", "--stack"]) == 0
    card = _card(out)
    data = _metadata_of_a_hyperclone(card)
    assert "license" not in data and data["base_model"] == str(src) and "stacked" in data["tags"]
    assert "NOT function-preserving by design" in card.text and "not expected to match" in card.text
    assert _commands(card)[0].endswith("--depth 2 --stack")


def test_the_published_name_of_a_temporary_directory():
    assert output_name(Path("/x/.my-clone.tmp-1234-0a1b2c3d")) == "my-clone"
    assert output_name(Path("/x/my-clone")) == "my-clone" and output_name("/x/.hidden") == ".hidden"


@pytest.fixture
def closed_port():
    """A local port that refuses connections (bound, never listening) for as long as the test runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _push(tmp_path: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """``hyperclone clone tiny-gpt2-stdlib OUT *argv`` in a fresh process with no saved token, printing
    whether torch was imported; never a real hub: ``HF_ENDPOINT`` is a closed local port unless ``env`` says."""
    code = ("import sys; from hyperclone.cli.main import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules)")
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE")}
    env = {**clean, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf-home"), **env}
    return subprocess.run([sys.executable, "-c", code, "clone", "tiny-gpt2-stdlib", str(tmp_path / "out"), *argv],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize(("argv", "env", "words"), [
    (["--push-to-hub", "me/wide"], {"HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_unused"}, "in offline mode"),
    (["--push-to-hub", "me/wide"], {"HF_HUB_OFFLINE": "0"}, "no Hugging Face token to push with"),
    (["--push-to-hub", "me/wide"], {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_unused"}, "does not answer"),
    (["--push-to-hub", "me/wide/x"], {"HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_unused"}, "not a hub repository id"),
    (["--private"], {}, "--private needs --push-to-hub"),
])
def test_a_push_that_cannot_work_is_refused_in_one_line_before_any_work(tmp_path, closed_port, argv, env, words):
    run = _push(tmp_path, *argv, HF_ENDPOINT=f"http://127.0.0.1:{closed_port}", **env)
    assert run.stdout.split() == ["2", "False"], (run.stdout, run.stderr)  # exit 2, torch never imported
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], run.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))  # nothing was cloned
