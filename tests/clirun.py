"""The ``hyperclone`` command line in a fresh process, as a script runs it (stdin closed, no hub), and its one-line
refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HANG_GUARD_S = 600  # per command: far above a busy 2-core machine's slowest, so only a hang fails it


def cli_env(**extra: str) -> dict[str, str]:
    """This environment with the checkout first on the path and the hub offline, plus ``extra``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, HF_HUB_OFFLINE="1", **extra)


def cli(*args, cwd: Path | None = None, env: dict | None = None, head: list | None = None,
        **popen) -> subprocess.Popen:
    """``python -m hyperclone ARGS`` (or ``head ARGS``) started in a fresh process, stdin closed, output piped."""
    return subprocess.Popen([*(head or [sys.executable, "-m", "hyperclone"]), *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=cli_env(**(env or {})), **popen)


def run_cli(*args, **kw) -> tuple[int, str, str]:
    """``cli(*args, **kw)`` run to its end: (exit code, stdout, stderr)."""
    with cli(*args, **kw) as proc:
        try:
            out, err = proc.communicate(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return proc.returncode, out, err


def one_line(text: str) -> str:
    """The one line ``text`` holds (what a user is shown): no traceback, no second line."""
    assert "Traceback" not in text, text[-3000:]
    lines = text.strip().splitlines()
    assert len(lines) == 1, text[-3000:]
    return lines[0]


def error_line(err: str) -> str:
    """The one ``error:`` line of ``err`` (transformers may draw progress bars on stderr too); no traceback."""
    assert "Traceback" not in err, err[-3000:]
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    return line


def refused(*argv, out: Path | None = None, preexec_fn=None) -> str:
    """Run ``hyperclone ARGV``; check it refused (exit 2) in one ``error:`` line, leaving no ``out``; that line."""
    code, stdout, err = run_cli(*argv, env={"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
                                preexec_fn=preexec_fn)
    assert "Traceback" not in err, err
    assert code == 2, (code, stdout, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    if out is not None:
        assert not out.exists(), f"{out} was left behind"
    return lines[0]


def edit_config(path: Path, **changes) -> None:
    """Change keys of the checkpoint's config.json at ``path``."""
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` and its bytes, to show that a command left them alone."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
