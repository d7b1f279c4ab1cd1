"""A class on one server: races queue one at a time, each owned by its page; the teacher token; ``hyperclone serve``."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from clirun import one_line, run_cli
from serving import free_port, serve_args, served

from hyperclone.teach.classroom import CLASSROOM_ENV, TOKEN_ENV, RaceQueue, check_teacher, is_teacher
from hyperclone.cli.serve import serve_command
from hyperclone.core.errors import HyperCloneError

WAIT = 30.0  # seconds a queue operation may take on a loaded machine before the test calls it stuck


class FakeRace:
    """A race that trains until released (or stopped), recording who trained when."""

    def __init__(self, log: list, name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, stop_event: threading.Event) -> None:
        self.log.append(("start", self.name))
        self.started.set()
        while not (self.release.is_set() or stop_event.is_set()):
            stop_event.wait(0.01)
        self.log.append(("end", self.name))
        if self.fail:
            raise RuntimeError("boom\nsecond line")


def test_races_train_one_at_a_time_in_the_order_asked_with_visible_positions(tmp_path):
    queue, log = RaceQueue(), []
    races = {name: FakeRace(log, name) for name in "abc"}
    jobs = {name: queue.submit(f"page-{name}", tmp_path / name, races[name]) for name in "abc"}
    assert races["a"].started.wait(WAIT)
    assert [queue.position(jobs[n]) for n in "abc"] == [0, 1, 2]
    assert jobs["a"].state == "running" and jobs["b"].state == jobs["c"].state == "queued"
    races["a"].release.set()
    assert races["b"].started.wait(WAIT)
    assert queue.position(jobs["c"]) == 1 and jobs["a"].state == "finished"
    races["b"].release.set()
    races["c"].release.set()
    assert queue.wait_idle(WAIT)
    assert log == [("start", "a"), ("end", "a"), ("start", "b"), ("end", "b"), ("start", "c"), ("end", "c")]


def test_one_page_cannot_stop_another_pages_race_but_the_teacher_can(tmp_path):
    queue, log = RaceQueue(), []
    first, second = FakeRace(log, "first"), FakeRace(log, "second")
    job1 = queue.submit("alice", tmp_path / "1", first)
    job2 = queue.submit("bob", tmp_path / "2", second)
    assert first.started.wait(WAIT)
    with pytest.raises(HyperCloneError, match="belongs to another page"):
        queue.stop(job1, by="bob")
    assert job1.state == "running" and not job1.stop_event.is_set()
    queue.stop(job2, by="bob")  # a queued race leaves the line and never trains
    assert job2.state == "stopped"
    queue.stop(job1, by="teacher-page", teacher=True)
    assert queue.wait_idle(WAIT)
    assert job1.state == "stopped" and ("start", "second") not in log


def test_a_page_has_one_active_race_and_a_failure_is_one_line_on_its_own_job(tmp_path):
    queue, log = RaceQueue(), []
    bad = FakeRace(log, "bad", fail=True)
    job = queue.submit("alice", tmp_path / "1", bad)
    with pytest.raises(HyperCloneError, match="already has a race"):
        queue.submit("alice", tmp_path / "2", FakeRace(log, "again"))
    bad.release.set()
    assert queue.wait_idle(WAIT)
    assert job.state == "failed" and job.error == "boom" and queue.latest("alice") is job
    assert queue.submit("alice", tmp_path / "3", FakeRace(log, "later")).owner == "alice"  # allowed once it ended


def test_the_teacher_token_is_needed_only_in_classroom_mode():
    assert is_teacher(None, {})  # localhost: everyone is the teacher
    env = {CLASSROOM_ENV: "1", TOKEN_ENV: "s3cret-token"}
    assert is_teacher("s3cret-token", env) and not is_teacher("wrong", env) and not is_teacher(None, env)
    assert not is_teacher("", {CLASSROOM_ENV: "1"})  # no token set: nobody is, rather than everybody
    with pytest.raises(HyperCloneError) as e:
        check_teacher("wrong", "starting a race", env)
    assert "teacher token" in str(e.value) and "\n" not in str(e.value)


def test_serve_binds_to_localhost_unless_asked_and_warns_when_it_does_not():
    argv, env, lines = serve_command(serve_args(), {CLASSROOM_ENV: "1", TOKEN_ENV: "left-over"})
    assert argv[argv.index("--server.address") + 1] == "localhost"
    assert CLASSROOM_ENV not in env and TOKEN_ENV not in env and "WARNING" not in " ".join(lines)
    argv, env, lines = serve_command(serve_args(lan=True, port=9000), {})
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0" and argv[argv.index("--server.port") + 1] == "9000"
    token = env[TOKEN_ENV]
    assert env[CLASSROOM_ENV] == "1" and len(token) >= 8 and lines[0].startswith("WARNING")
    assert any(token in line for line in lines)
    assert serve_command(serve_args(lan=True), {})[1][TOKEN_ENV] != token  # a new token each time
    assert serve_command(serve_args(lan=True, token="given-token"), {})[1][TOKEN_ENV] == "given-token"


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port must be between 1 and 65535"),
    (["--token", "abcdefgh"], "--token only applies with --lan"),
    (["--lan", "--token", "short"], "at least 8 characters"),
])
def test_bad_serve_arguments_are_one_line(args, message):
    code, _, err = run_cli("serve", *args)
    assert code == 2 and message in one_line(err), err


@pytest.mark.slow
def test_hyperclone_serve_starts_the_dashboard_on_localhost(tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = dict(os.environ, HYPERCLONE_RUNS=str(tmp_path / "runs"), HF_HUB_OFFLINE="1")
    with served([sys.executable, "-m", "hyperclone", "serve", "--port", port], port, tmp_path, env, log_path):
        pass
    assert f"dashboard on http://localhost:{port} (this machine only)" in log_path.read_text()


def test_models_built_in_several_threads_at_once_are_whole_and_initialised_alike():
    """A page loading a model while a race builds its random-init contestant (transformers patches globals)."""
    import torch

    from hyperclone import load_source
    from hyperclone.training.contestants import starting_model
    from hyperclone.training.config import RaceConfig

    source, _ = load_source("tiny-gpt2-stdlib", device="cpu")
    cfg = RaceConfig(factor=2, seed=3)
    reference = starting_model("random", source, cfg).state_dict()
    loaded, initialised = [], []

    def load() -> None:
        for _ in range(6):
            model, _ = load_source("tiny-gpt2-stdlib", device="cpu")
            loaded.append(all(p.device.type == "cpu" for p in model.parameters()))

    def init() -> None:
        for _ in range(6):
            state = starting_model("random", source, cfg).state_dict()
            initialised.append(all(torch.equal(state[k], reference[k]) for k in reference))

    threads = [threading.Thread(target=f) for f in (load, init, load, init)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 4)
    assert len(loaded) == 12 and all(loaded) and len(initialised) == 12 and all(initialised)
