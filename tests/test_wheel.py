"""What a wheel user gets: the tutorials copied out, and (slow) the wheel itself, built from the sources and
installed into a fresh venv without the source tree on its path: the command line, ``python -m hyperclone``,
the notebooks and the served dashboard, saving runs in the working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest
from serving import free_port, page_session, served

from hyperclone.core.errors import HyperCloneError
from hyperclone.teach.tutorials import copy_tutorials

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HANG_GUARD = 600  # seconds: far above any step's time on a busy machine


def assert_the_tutorials(copied: list[Path]) -> None:
    """``copied`` are the checkout's 4 notebooks, byte for byte."""
    assert [p.name for p in copied] == [p.name for p in NOTEBOOKS] and len(copied) == 4
    assert all(c.read_bytes() == n.read_bytes() for c, n in zip(copied, NOTEBOOKS))


def test_the_tutorials_are_copied_into_a_new_folder_and_never_over_an_existing_one(tmp_path):
    assert_the_tutorials(copy_tutorials(tmp_path / "tutorials"))
    assert sorted(os.listdir(tmp_path)) == ["tutorials"]  # no temporary folder left beside it
    (tmp_path / "taken").mkdir()
    with pytest.raises(HyperCloneError) as e:
        copy_tutorials(tmp_path / "taken")
    assert "already exists" in str(e.value) and "\n" not in str(e.value)
    assert not any((tmp_path / "taken").iterdir())


def run(argv: list, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def build_wheel(tmp: Path) -> Path:
    """The wheel, built from a copy of the sources (nothing is written into the checkout)."""
    src, out = tmp / "src", tmp / "wheel"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "hyperclone", src / "hyperclone", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "notebooks").mkdir()
    for notebook in NOTEBOOKS:
        shutil.copy(notebook, src / "notebooks")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src],
        cwd=src)
    (wheel,) = out.glob("hyperclone-*.whl")
    return wheel


def fresh_venv(where: Path, env: dict) -> Path:
    """A venv that sees this one's installed packages (torch, streamlit, pip) but not HyperClone.

    A ``.pth`` line naming a directory adds it to the path without processing the ``.pth`` files in it, so the
    editable install of HyperClone there is not seen."""
    run([sys.executable, "-m", "venv", "--without-pip", where], cwd=where.parent, env=env)
    python = where / "bin" / "python"
    site_packages = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             cwd=where.parent, env=env).strip())
    (site_packages / "parent-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    absent = subprocess.run([python, "-c", "import hyperclone"], cwd=where.parent, env=env, capture_output=True,
                            text=True, timeout=HANG_GUARD)
    assert absent.returncode != 0 and "No module named 'hyperclone'" in absent.stderr, absent.stderr
    return where


def page_error(url: str, query: str) -> list[str]:
    """The alerts a served explorer page draws for ``query``."""
    with page_session(url, query) as page:
        return [text for kind, text in page.run() if kind == "alert"]


@pytest.mark.slow
def test_a_wheel_installed_without_the_sources_clones_copies_the_tutorials_and_serves(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYPERCLONE_RUNS", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1")
    wheel = build_wheel(tmp_path)
    venv = fresh_venv(tmp_path / "venv", env)
    python, hyperclone = venv / "bin" / "python", venv / "bin" / "hyperclone"
    # --ignore-installed: never touch this venv's editable HyperClone, which pip sees through the .pth line
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel], cwd=tmp_path,
        env=env)
    work = tmp_path / "work"
    work.mkdir()
    where = Path(run([python, "-c", "import hyperclone; print(hyperclone.__file__)"], cwd=work, env=env).strip())
    assert where.resolve().is_relative_to(venv.resolve()), where

    run([hyperclone, "clone", "tiny-gpt2-stdlib", work / "out"], cwd=work, env=env)
    assert (work / "out" / "model.safetensors").is_file()
    assert "usage: hyperclone" in run([python, "-m", "hyperclone", "--help"], cwd=work, env=env)
    run([hyperclone, "notebooks", work / "tutorials"], cwd=work, env=env)
    assert_the_tutorials(sorted((work / "tutorials").iterdir()))

    port, log_path = free_port(), tmp_path / "serve.log"
    with served([hyperclone, "serve", "--port", port], port, work, env, log_path) as url:
        with urllib.request.urlopen(url, timeout=HANG_GUARD) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        alerts = page_error(url, "run=no-such-run")  # a link to a run that is not in the runs folder
    assert any(f"(in {work / 'runs'})" in text for text in alerts), alerts
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
