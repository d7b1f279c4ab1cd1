"""OUT belongs to whoever wrote it: HyperClone replaces only what it wrote, never what appeared meanwhile.

Two clones into one new OUT: the second refuses instead of replacing the first. ``--overwrite`` never
deletes a file the user added to an earlier output. A directory that merely looks like a temporary
one is never removed. Nothing outside a source is copied into a clone, and a clone needs no custom code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from clirun import error_line, run_cli, snapshot

from hyperclone.io import atomic
from hyperclone.cli.main import main
from hyperclone.core.errors import OutputExistsError
from hyperclone.io.export import PROVENANCE_FILE, atomic_output

MODES = pytest.mark.parametrize("mode", [[], ["--in-memory"]], ids=["streaming", "in-memory"])

# The CLI, with one hook: just before it seals its output, RUN_FIRST (a JSON list of commands) runs to the end.
# That is the worst moment for another clone to finish or for the user to add a file, made deterministic.
CLI_WITH_HOOK = """
import json, os, subprocess, sys
from hyperclone.io import export
from hyperclone.io import stream
from hyperclone.cli.main import main

seal = export.write_metadata

def others_run_first(*args, **kwargs):
    for command in json.loads(os.environ["RUN_FIRST"]):
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return seal(*args, **kwargs)

export.write_metadata = stream.write_metadata = others_run_first
sys.exit(main(sys.argv[1:]))
"""


def run_hooked(*args: str, hook_runs: list[list[str]]) -> tuple[int, str, str]:
    """``hyperclone ARGS`` in a fresh process; the commands ``hook_runs`` run just before it seals OUT."""
    return run_cli(*args, head=[sys.executable, "-c", CLI_WITH_HOOK], env={"RUN_FIRST": json.dumps(hook_runs)})


def hyperclone_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hyperclone", *args]


def record_of(out: Path) -> dict:
    return json.loads((out / PROVENANCE_FILE).read_text())


# --------------------------------------------------------------------------- #
# 10. Two clones into one new OUT: the one that finishes second refuses
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_a_clone_that_finishes_second_into_the_same_new_out_refuses_and_keeps_the_first(src, tmp_path):
    out = tmp_path / "out"
    other = hyperclone_cmd("clone", str(src), str(out), "--factor", "3", "--no-verify")
    code, stdout, err = run_hooked("clone", str(src), str(out), "--no-verify", hook_runs=[other])
    assert code == 2, (stdout, err)
    assert "earlier HyperClone output" in error_line(err) and "saved" not in stdout
    assert record_of(out)["factor"] == 3  # the first clone, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # the loser's temporary directory is gone


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "portable"])
def test_publishing_never_replaces_what_appeared_and_overwrite_swaps(tmp_path, monkeypatch, renameat2):
    """The same guarantees where the system has no renameat2 (a mkdir claim, then two renames)."""
    if not renameat2:
        monkeypatch.setattr(atomic, "_rename_with", lambda *args: False)
    out = tmp_path / "out"
    with pytest.raises(OutputExistsError):
        with atomic_output(out) as tmp:
            (tmp / "config.json").write_text("second")
            out.mkdir()  # another run finishes first
            (out / PROVENANCE_FILE).write_text(json.dumps({"files": [PROVENANCE_FILE, "config.json"]}))
            (out / "config.json").write_text("first")
    assert (out / "config.json").read_text() == "first"
    with atomic_output(out, overwrite=True) as tmp:
        (tmp / "config.json").write_text("second")
        (tmp / PROVENANCE_FILE).write_text("{}")
    assert (out / "config.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --------------------------------------------------------------------------- #
# 11. --overwrite replaces only what HyperClone wrote
# --------------------------------------------------------------------------- #
def test_the_record_lists_every_file_hyperclone_wrote(earlier_output):
    assert record_of(earlier_output)["files"] == sorted(p.name for p in earlier_output.iterdir())


def test_overwrite_refuses_an_earlier_output_holding_a_file_the_user_added(src, earlier_output):
    (earlier_output / "notes.txt").write_text("my notes")
    before = snapshot(earlier_output)
    code, _, err = run_cli("clone", str(src), str(earlier_output), "--factor", "3", "--overwrite")
    line = error_line(err)
    assert code == 2 and "'notes.txt'" in line and "did not write" in line and "move them out" in line
    assert snapshot(earlier_output) == before


@pytest.mark.slow
def test_a_file_added_while_the_clone_runs_is_never_deleted_by_overwrite(src, earlier_output, tmp_path):
    notes = earlier_output / "notes.txt"
    add_notes = [sys.executable, "-c", f"open({str(notes)!r}, 'w').write('written meanwhile')"]
    code, _, err = run_hooked("clone", str(src), str(earlier_output), "--factor", "3", "--overwrite",
                              hook_runs=[add_notes])
    assert code == 2 and "'notes.txt'" in error_line(err)
    assert notes.read_text() == "written meanwhile" and record_of(earlier_output)["factor"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "src"]


def test_overwrite_still_replaces_an_output_holding_only_hyperclone_files(src, earlier_output, tmp_path):
    assert main(["clone", str(src), str(earlier_output), "--factor", "3", "--overwrite", "--no-verify"]) == 0
    assert record_of(earlier_output)["factor"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "src"]


# --------------------------------------------------------------------------- #
# 12. A name alone never makes a directory "stale"
# --------------------------------------------------------------------------- #
def test_a_directory_named_like_a_temporary_one_is_never_removed(src, tmp_path, capsys):
    lookalike, other_host = tmp_path / ".thesis.tmp-999999-deadbeef", tmp_path / ".thesis.tmp-999998-deadbeef"
    lookalike.mkdir()
    (lookalike / "chapter1.tex").write_text("months of work")
    other_host.mkdir()  # a marker naming another host proves nothing here (its process may be alive there)
    (other_host / ".hyperclone-temp").write_text(json.dumps(
        {"pid": 999998, "host": "another-host", "dir": other_host.name, "token": "0" * 32}))
    assert main(["clone", str(src), str(tmp_path / "thesis"), "--no-verify"]) == 0
    assert (lookalike / "chapter1.tex").read_text() == "months of work" and other_host.is_dir()
    assert "removed" not in capsys.readouterr().err


# --------------------------------------------------------------------------- #
# 13. Nothing outside the source reaches the clone
# --------------------------------------------------------------------------- #
@pytest.mark.slow
@MODES
def test_a_tokenizer_file_linked_outside_the_source_is_refused_and_nothing_is_written(src, tmp_path, mode):
    secret = tmp_path / "secret.txt"
    secret.write_text("the teacher's private key")
    (src / "tokenizer.json").symlink_to(secret)
    out = tmp_path / "out"
    code, _, err = run_cli("clone", str(src), str(out), *mode)
    line = error_line(err)
    assert code == 2 and "tokenizer.json" in line and "outside the source" in line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["secret.txt", "src"]


def test_the_api_refuses_it_too(src, tmp_path):
    from hyperclone import load_source, stream_clone
    from hyperclone.core.errors import SourceError

    (src / "generation_config.json").unlink()
    (src / "generation_config.json").symlink_to("/etc/hostname")
    for load in (lambda: load_source(src, device="cpu"), lambda: stream_clone(src, tmp_path / "out")):
        with pytest.raises(SourceError, match="generation_config.json is a link to .*outside the source"):
            load()
    assert not (tmp_path / "out").exists()


def test_a_hugging_face_cache_snapshot_whose_files_link_into_its_blobs_is_cloned(src, tmp_path):
    repo = tmp_path / "hub" / "models--someone--tiny"
    snapshot_dir, blobs = repo / "snapshots" / ("0" * 40), repo / "blobs"
    snapshot_dir.mkdir(parents=True)
    blobs.mkdir()
    (src / "tokenizer.json").write_text('{"not": "a real tokenizer, only copied"}')
    for i, f in enumerate(sorted(src.iterdir())):
        f.rename(blobs / f"blob{i}")
        (snapshot_dir / f.name).symlink_to(Path("..", "..", "blobs", f"blob{i}"))
    out = tmp_path / "out"
    assert main(["clone", str(snapshot_dir), str(out)]) == 0
    assert not any(p.is_symlink() for p in out.iterdir())
    assert (out / "tokenizer.json").read_text() == '{"not": "a real tokenizer, only copied"}'


# --------------------------------------------------------------------------- #
# 16. auto_map on a family transformers knows: none of its code runs, and the clone carries none of it
# --------------------------------------------------------------------------- #
@MODES
def test_an_auto_map_on_a_known_family_is_cloned_without_running_it_and_left_out_of_the_clone(src, tmp_path, mode,
                                                                                              monkeypatch):
    ran = tmp_path / "code-ran.txt"
    (src / "trojan.py").write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "trojan.TrojanConfig", "AutoModelForCausalLM": "trojan.TrojanModel"}
    (src / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # a prompt would read EOF here, not hang
    assert main(["clone", str(src), str(out), *mode]) == 0
    assert not ran.exists()
    assert "auto_map" not in json.loads((out / "config.json").read_text())
    assert record_of(out)["auto_map_dropped"] == config["auto_map"]
    assert not (out / "trojan.py").exists()
