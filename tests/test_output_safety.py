"""Writing OUT never harms what HyperClone does not own, and every way writing can fail is one line.

The source, the current and home directories and foreign directories are never replaced; a read-only
parent, a full disk, SIGTERM and SIGKILL leave nothing behind; outputs follow the umask; and the CLI
parses its arguments before importing torch.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clirun import cli, one_line, run_cli, snapshot
from families import tiny_model

from hyperclone import Growth
from hyperclone.io import shard_writer
from hyperclone.io import stream
from hyperclone.cli.main import main
from hyperclone.core.errors import HyperCloneError
from hyperclone.io.export import PROVENANCE_FILE

REPO = Path(__file__).resolve().parent.parent
BUILTIN = "tiny-gpt2-stdlib"


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary or old directories next to an output."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- #
# 3. --overwrite replaces only an earlier HyperClone output, never the source, cwd or home
# --------------------------------------------------------------------------- #
def test_cloning_a_source_onto_itself_with_overwrite_is_refused_and_the_source_survives(earlier_output):
    before = snapshot(earlier_output)
    code, _, err = run_cli("clone", str(earlier_output), str(earlier_output), "--overwrite")
    assert code == 2 and "source" in one_line(err)
    assert snapshot(earlier_output) == before and leftovers(earlier_output.parent) == []


@pytest.mark.slow
def test_cloning_into_the_current_directory_with_overwrite_is_refused(earlier_output):
    before = snapshot(earlier_output)
    code, _, err = run_cli("clone", BUILTIN, ".", "--overwrite", cwd=earlier_output)
    assert code == 2 and "current directory" in one_line(err)
    assert snapshot(earlier_output) == before and leftovers(earlier_output.parent) == []


def test_output_inside_holding_or_linked_to_the_source_is_refused(earlier_output, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(earlier_output)
    before = snapshot(earlier_output)
    for out in (earlier_output / "sub", link, tmp_path):
        assert main(["clone", str(earlier_output), str(out), "--overwrite"]) == 2, out
        assert "error: " in capsys.readouterr().err
    assert snapshot(earlier_output) == before and not (earlier_output / "sub").exists()


def test_the_home_directory_is_never_an_output(earlier_output, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(earlier_output))  # even one that looks like an earlier output
    before = snapshot(earlier_output)
    assert main(["clone", BUILTIN, "~", "--overwrite"]) == 2
    assert "home directory" in capsys.readouterr().err
    assert snapshot(earlier_output) == before


def test_a_non_empty_foreign_directory_is_refused_even_with_overwrite_and_the_message_offers_no_flag(src, tmp_path,
                                                                                                     capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        assert main(["clone", str(src), str(mine), *extra]) == 2
        err = capsys.readouterr().err
        assert "not empty" in err and "new or empty directory" in err and "--overwrite" not in err
    assert snapshot(mine) == {"notes.txt": b"precious"}


def test_an_earlier_output_is_replaced_only_with_overwrite(src, earlier_output, capsys):
    assert main(["clone", str(src), str(earlier_output), "--factor", "3"]) == 2
    assert "earlier HyperClone output" in capsys.readouterr().err
    assert json.loads((earlier_output / PROVENANCE_FILE).read_text())["factor"] == 2
    assert main(["clone", str(src), str(earlier_output), "--factor", "3", "--overwrite"]) == 0
    assert json.loads((earlier_output / PROVENANCE_FILE).read_text())["factor"] == 3


def test_the_dashboard_names_its_own_overwrite_box(tmp_path, runs):
    from pages import open_page

    at = open_page()
    at.button(key="clone").click().run()
    at.session_state["tab"] = "Export"
    at.run()
    out = tmp_path / "export"
    at.text_input(key="export_dir").set_value(str(out)).run()
    at.button(key="export_save").click().run()
    assert (out / PROVENANCE_FILE).exists()
    at.button(key="export_save").click().run()  # the same directory again, Overwrite not ticked
    (message,) = [e.value for e in at.error]
    assert "tick Overwrite" in message and "--overwrite" not in message
    at.checkbox(key="export_overwrite").check().run()
    at.button(key="export_save").click().run()
    assert not at.error and not at.exception


# --------------------------------------------------------------------------- #
# 10. An output that cannot be created is one line
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_an_output_under_a_file_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("x")
    code, _, err = run_cli("clone", BUILTIN, str(tmp_path / "a-file" / "out"))
    assert code == 2 and "cannot write" in one_line(err) and "not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def _read_only_dir(tmp_path) -> Path:
    """A directory nobody (root included) can write: a read-only tmpfs, else chmod 0o500 when not root."""
    path = tmp_path / "read-only"
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64m", "tmpfs", str(path)],
                      capture_output=True).returncode == 0:
        return path
    path.chmod(0o500)
    try:
        (path / "probe").mkdir()
    except OSError:
        return path
    pytest.skip("cannot make a directory read-only here (root ignores permissions and mount is not allowed)")


def test_a_read_only_parent_is_one_line(tmp_path, capsys):
    parent = _read_only_dir(tmp_path)
    try:
        assert main(["clone", BUILTIN, str(parent / "out")]) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and ("Read-only" in err or "Permission denied" in err)
        assert "Traceback" not in err and list(parent.iterdir()) == []
    finally:
        subprocess.run(["umount", str(parent)], capture_output=True)
        parent.chmod(0o700)


# --------------------------------------------------------------------------- #
# 11. A full disk is one line, whichever library noticed it
# --------------------------------------------------------------------------- #
def test_safetensors_disk_full_error_while_writing_shards_is_one_line(src, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    def full_disk(fd, data, offset):
        os.pwrite(fd, b"partial", offset)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(shard_writer, "write_at", full_disk)
    out = tmp_path / "out"
    with pytest.raises(HyperCloneError, match="^no space left on the device while writing .* nothing was written"):
        stream.stream_clone(src, out, Growth(2), max_shard_size="20KB")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize("mode", [[], ["--in-memory"]], ids=["streaming", "in-memory"])
def test_a_real_full_disk_is_one_line_and_leaves_nothing(src, tmp_path, capsys, mode):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root and a sandbox that allows it")
    try:
        # --force skips the free-space check, so the disk really fills up while writing.
        assert main(["clone", str(src), str(disk / "out"), "--force", *mode]) == 2
        err = capsys.readouterr().err
        (line,) = [x for x in err.splitlines() if x.startswith("error:")]  # transformers draws progress bars
        assert "no space left on the device" in line and "nothing was written" in line and "Traceback" not in err
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# --------------------------------------------------------------------------- #
# 18. SIGTERM cleans up like Ctrl-C; what SIGKILL leaves is removed by the next run
# --------------------------------------------------------------------------- #
@pytest.fixture()
def slow_src(tmp_path) -> Path:
    """A source whose clone (many small shards, then the full logit check) takes about a second."""
    path = tmp_path / "src"
    tiny_model("llama", dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=2048, max_position_embeddings=64)).save_pretrained(path)
    return path


def _start_and_kill_mid_clone(src: Path, out: Path, sig: int) -> tuple[int, str]:
    proc = cli("clone", str(src), str(out), "--max-shard-size", "200KB")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        temp = [p for p in out.parent.glob(f".{out.name}.tmp-*") if any(p.glob("*.safetensors"))]
        if temp:  # a shard is on disk: the clone is half written
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=120)
    assert temp, f"never saw the temporary directory (exit {proc.returncode}): {err[-2000:]}"
    return proc.returncode, err


@pytest.mark.slow
def test_sigterm_mid_clone_cleans_up_like_ctrl_c(slow_src, tmp_path):
    out = tmp_path / "out"
    code, err = _start_and_kill_mid_clone(slow_src, out, signal.SIGTERM)
    assert code == 143 and one_line(err).startswith("terminated:")
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_a_sigkilled_clone_leaves_a_temp_dir_that_the_next_run_removes(slow_src, tmp_path):
    out = tmp_path / "out"
    code, _ = _start_and_kill_mid_clone(slow_src, out, signal.SIGKILL)
    assert code == -signal.SIGKILL and not out.exists()
    (stale,) = leftovers(tmp_path)
    foreign = tmp_path / ".out.tmp-notes"  # not a name HyperClone makes: never touched
    foreign.mkdir()
    code, _, err = run_cli("clone", str(slow_src), str(out), "--max-shard-size", "200KB")
    assert code == 0 and (out / PROVENANCE_FILE).exists()
    (note,) = [line for line in err.splitlines() if stale in line]
    assert note.startswith("note: removed 1 temporary directory")
    assert leftovers(tmp_path) == [foreign.name]


# --------------------------------------------------------------------------- #
# 19. Outputs follow the umask like any file the user writes
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("mode", [[], ["--in-memory"]], ids=["streaming", "in-memory"])
def test_outputs_follow_the_umask(src, tmp_path, mode):
    for f in src.iterdir():
        f.chmod(0o600)  # copied side files take the umask too, not the source's mode
    previous = os.umask(0o022)
    try:
        assert main(["clone", str(src), str(tmp_path / "out"), *mode]) == 0
    finally:
        os.umask(previous)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in out.iterdir()}
    assert set(modes.values()) == {oct(0o644)}, modes


# --------------------------------------------------------------------------- #
# 21. --help and a bad argument answer before torch is imported
# --------------------------------------------------------------------------- #
IMPORTS_TORCH = """
import sys
from hyperclone.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("torch imported" if "torch" in sys.modules else "torch not imported", code)
"""


@pytest.mark.parametrize("argv", [
    ["--help"], ["clone", "--help"], ["race", "--help"], ["clone", "x", "y", "--factor", "0"],
    ["clone", "x", "y", "--variant", "bogus"], ["race", "--schedule", "bogus"], ["build-assets", "--only", "bert"],
])
def test_the_cli_parses_and_checks_arguments_before_importing_torch(argv):
    run = subprocess.run([sys.executable, "-c", IMPORTS_TORCH, *argv], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert run.stdout.strip().splitlines()[-1] == f"torch not imported {0 if '--help' in argv else 2}"
    assert "Traceback" not in run.stderr
