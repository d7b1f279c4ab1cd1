"""What a class server guarantees: students export only by name into their own page's folder, the teacher
token (any text) is read once and leaves the address bar, only the teacher starts races, stops any race and
clears the cache. AppTest for the pages, a real served dashboard over a bare websocket for classroom mode."""

from __future__ import annotations

import importlib
import os
import threading
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from pages import EXPLORER as APP
from pages import LESSON, one_error, open_page
from serving import Session, free_port, page_session, served, streamlit_run
from streamlit.testing.v1 import AppTest

import hyperclone.teach.classroom as classroom
from hyperclone.teach.classroom import CLASSROOM_ENV, TOKEN_ENV, is_teacher, shared_queue
from hyperclone.cli.serve import serve_command
from hyperclone.core.errors import HyperCloneError

TOKEN = "teacher-secret"
OWNER = "0123456789abcdef"
WAIT = 60.0  # a hang guard, not a speed test


@pytest.fixture
def classroom_dir(tmp_path, monkeypatch) -> Path:
    """Classroom mode with a known token; the server's folder (exports are relative to it) and runs in tmp_path."""
    monkeypatch.setenv(CLASSROOM_ENV, "1")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv("HYPERCLONE_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def page(script: str = APP, teacher: bool = False, **params: str) -> AppTest:
    return open_page(script, **params, **({"token": TOKEN} if teacher else {}))


def labelled(at: AppTest, label: str) -> list:
    return [b for b in at.button if b.label == label]


# --------------------------------------------------------------------------- #
# 6. The teacher token: any text compares, a token that cannot go into a link is refused at serve
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("given", ["clé-secrète", "\udcff\x00", "teacher-secret\u200b", "é" * 10_000])
def test_a_non_ascii_or_garbage_token_is_simply_not_the_teacher(given):
    env = {CLASSROOM_ENV: "1", TOKEN_ENV: TOKEN}
    assert is_teacher(given, env) is False  # no TypeError from compare_digest
    assert is_teacher("clé-secrète", {CLASSROOM_ENV: "1", TOKEN_ENV: "clé-secrète"})  # set by hand: still compares


@pytest.mark.parametrize("token", ["clé-secrète", "two words", "a&b=c#dddd", "x" * 201])
def test_serve_refuses_a_token_that_cannot_go_into_a_link_in_one_line(token):
    args = SimpleNamespace(port=8501, lan=True, token=token)
    with pytest.raises(HyperCloneError) as e:
        serve_command(args, {})
    assert "--token may hold only" in str(e.value) and "\n" not in str(e.value)
    assert serve_command(SimpleNamespace(port=8501, lan=True, token="Good.token~1"), {})[1][TOKEN_ENV] == "Good.token~1"


# --------------------------------------------------------------------------- #
# 3. A student's export: a name, in the page's own folder, within the limits
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["/tmp/x", "../../etc", "a/b", "..", "a..b", ".hidden", "", "x" * 65, "é", "a b"])
def test_an_export_name_is_one_plain_folder_name(name):
    with pytest.raises(HyperCloneError, match="an export name is"):
        classroom.check_export_name(name)
    assert classroom.check_export_name("tiny-gpt2-stdlib-x2_v1.0") == "tiny-gpt2-stdlib-x2_v1.0"


def test_a_page_keeps_a_few_exports_of_bounded_size_and_the_class_a_bounded_total(tmp_path, monkeypatch):
    monkeypatch.setattr(classroom, "PAGE_EXPORTS", 2)
    monkeypatch.setattr(classroom, "PAGE_EXPORT_BYTES", 1000)
    monkeypatch.setattr(classroom, "CLASS_EXPORT_BYTES", 1500)
    for name in ("one", "two"):
        target = classroom.page_export_path(OWNER, name, 300, tmp_path)
        assert target == tmp_path / OWNER / name
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(b"0" * 300)
    with pytest.raises(HyperCloneError, match="at most 2 per page"):
        classroom.page_export_path(OWNER, "three", 1, tmp_path)
    assert classroom.page_export_path(OWNER, "two", 300, tmp_path) == tmp_path / OWNER / "two"  # replacing its own
    with pytest.raises(HyperCloneError, match="no room"):
        classroom.page_export_path(OWNER, "two", 800, tmp_path)  # 300 kept + 800 > the page's 1000
    other = "fedcba9876543210"
    with pytest.raises(HyperCloneError, match="no room"):
        classroom.page_export_path(other, "big", 1000, tmp_path)  # 600 already kept by the class + 1000 > 1500
    with pytest.raises(HyperCloneError, match="no export folder"):
        classroom.page_export_path("../x", "a", 1, tmp_path)


def cloned_export_tab(at: AppTest) -> AppTest:
    at.button(key="clone").click().run()
    at.session_state["tab"] = "Export"
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_student_exports_only_by_name_into_the_pages_own_folder_and_never_over_the_teachers(classroom_dir,
                                                                                             monkeypatch):
    teacher = cloned_export_tab(page(teacher=True))
    teachers = classroom_dir / "out" / "teacher-export"
    teacher.text_input(key="export_dir").set_value(str(teachers)).run()
    teacher.button(key="export_save").click().run()
    assert (teachers / "hyperclone.json").is_file(), [e.value for e in teacher.error]
    before = {p: p.stat().st_mtime_ns for p in teachers.iterdir()}

    student = cloned_export_tab(page())
    with pytest.raises(KeyError):
        student.text_input(key="export_dir")  # no path for a student
    assert any("this page's own folder" in c.value for c in student.caption)
    for bad in ("/tmp/x", "../../teacher-export", str(teachers)):
        student.text_input(key="export_name").set_value(bad).run()
        student.button(key="export_save").click().run()
        assert "an export name is" in one_error(student)
    student.text_input(key="export_name").set_value("teacher-export").run()
    student.checkbox(key="export_overwrite").check().run()
    student.button(key="export_save").click().run()
    mine = classroom_dir / "out" / "class" / student.session_state["owner_id"] / "teacher-export"
    assert not student.error and (mine / "hyperclone.json").is_file()
    assert {p: p.stat().st_mtime_ns for p in teachers.iterdir()} == before  # the teacher's export is untouched
    monkeypatch.setattr(classroom, "PAGE_EXPORTS", 1)
    student.text_input(key="export_name").set_value("second").run()
    student.button(key="export_save").click().run()
    assert "at most 1 per page" in one_error(student) and not (mine.parent / "second").exists()
    assert sorted(p.name for p in (classroom_dir / "out").iterdir()) == ["class", "teacher-export"]
    monkeypatch.setattr(importlib.import_module("hyperclone.dashboard.export_tab"), "PAGE_ZIP_BYTES", 1)  # a zip is built in the server's memory: students' are capped
    student.run()
    assert any("Too large to download" in i.value for i in student.info)
    teacher.run()
    assert not any("Too large to download" in i.value for i in teacher.info)


# --------------------------------------------------------------------------- #
# 8. The token leaves the address bar and the links; 9. a student's Start race is disabled, saying why
# --------------------------------------------------------------------------- #
def test_the_teacher_token_is_read_once_and_leaves_the_address_bar_and_links(classroom_dir):
    at = page(teacher=True, tab="Training race")
    assert "token" not in at.query_params
    assert not at.button(key="race_start").disabled  # still the teacher, from the session
    assert all(TOKEN not in c.value for c in at.code)  # "Link to this view"
    at.run()
    assert not at.button(key="race_start").disabled
    lesson = page(LESSON, teacher=True, chapter="4")
    assert "token" not in lesson.query_params and not lesson.button(key="lesson_race_start").disabled
    assert all(TOKEN not in c.value for c in lesson.code)


def test_a_student_sees_start_race_disabled_with_one_line_saying_only_the_teacher_starts_races(classroom_dir):
    for at, key in ((page(tab="Training race"), "race_start"), (page(LESSON, chapter="4"), "lesson_race_start")):
        assert at.button(key=key).disabled
        assert any("Only the teacher starts races" in c.value for c in at.caption)
        assert not any("press **Start race**" in i.value for i in at.info)
    wrong = page(tab="Training race", token="clé-secrète")  # not the teacher, and no traceback
    assert wrong.button(key="race_start").disabled and not wrong.error and "token" not in wrong.query_params


# --------------------------------------------------------------------------- #
# 7. The teacher stops the running race, whichever page started it
# --------------------------------------------------------------------------- #
@pytest.fixture
def other_pages_race(tmp_path):
    """A race of another page (a stand-in that trains until stopped), running on the shared queue."""
    queue, started = shared_queue(), threading.Event()
    assert queue.wait_idle(WAIT)

    def train(stop_event: threading.Event) -> None:
        started.set()
        stop_event.wait(WAIT)

    job = queue.submit("another-page", tmp_path / "not-a-run", train)
    assert started.wait(WAIT)
    yield job
    queue.stop(job, by="cleanup", teacher=True)
    assert queue.wait_idle(WAIT)


@pytest.mark.parametrize("script, params", [(APP, {"tab": "Training race"}), (LESSON, {"chapter": "4"})],
                         ids=["explorer", "lesson"])
def test_the_teacher_can_stop_another_pages_race_and_a_student_cannot(classroom_dir, other_pages_race, script,
                                                                      params):
    student = page(script, **params)
    assert not labelled(student, "Stop the running race")
    at = page(script, teacher=True, **params)
    at.run()  # a rerun, as after a reload: the teacher's status is kept in the session, not in the link
    stop_button, = labelled(at, "Stop the running race")
    stop_button.click().run()
    assert not at.exception, at.exception
    assert shared_queue().wait_idle(WAIT) and other_pages_race.state == "stopped"


# --------------------------------------------------------------------------- #
# 4. Streamlit's "Clear cache" empties every page's models: only the teacher's page may
# --------------------------------------------------------------------------- #
def test_only_the_teachers_page_clears_the_cache_in_classroom_mode(classroom_dir):
    import streamlit as st
    from streamlit.runtime.app_session import AppSession

    from hyperclone.dashboard.common import TEACHER_KEY

    page()  # the dashboard guards Streamlit's clear_cache message
    calls = []

    @st.cache_resource
    def model() -> int:
        calls.append(1)
        return len(calls)

    model()
    AppSession._handle_clear_cache_request(SimpleNamespace(_session_state={}))
    AppSession._handle_clear_cache_request(SimpleNamespace(_session_state={TEACHER_KEY: False}))
    assert model() == 1 and len(calls) == 1  # still cached
    AppSession._handle_clear_cache_request(SimpleNamespace(_session_state={TEACHER_KEY: True}))
    assert model() == 2


# --------------------------------------------------------------------------- #
# A real served dashboard in classroom mode, driven as a hostile student would: a bare websocket
# --------------------------------------------------------------------------- #
@pytest.fixture
def class_server(tmp_path):
    """``streamlit run app.py`` in classroom mode (as ``serve --lan`` starts it, on localhost), in its own folder."""
    port, log_path = free_port(), tmp_path / "server.log"
    env = dict(os.environ, HYPERCLONE_RUNS=str(tmp_path / "runs"), HF_HUB_OFFLINE="1", **{CLASSROOM_ENV: "1",
                                                                                          TOKEN_ENV: TOKEN})
    with served(streamlit_run(APP, port), port, tmp_path, env, log_path) as url:
        yield url, tmp_path, log_path


@pytest.mark.slow
def test_a_served_class_contains_a_hostile_students_export_and_refuses_its_clear_cache(class_server):
    url, folder, log_path = class_server
    with page_session(url, f"tab=Export&token={quote('clé-secrète')}") as student:  # garbage: not the teacher
        hostile_student(student, folder)
    log = log_path.read_text()
    assert "asked to clear the cache: refused" in log and "Traceback" not in log, log[-3000:]


def hostile_student(student: Session, folder: Path) -> None:
    """Clone, try to export outside the page's folder, export by name, then ask to clear every page's cache."""
    student.run()
    drawn = student.run(clone=True)
    assert "export_name" in student.ids and "export_dir" not in student.ids
    for bad in ("/tmp/hyperclone-escape", "../../escape"):
        drawn = student.run(export_name=bad, export_save=True)
        assert any(kind == "alert" and "an export name is" in text for kind, text in drawn), drawn
    drawn = student.run(export_name="mine", export_save=True)
    assert any("Saved" in text for _, text in drawn), drawn
    saved = [p.relative_to(folder).parts for p in folder.rglob("hyperclone.json")]
    assert len(saved) == 1 and saved[0][:2] == ("out", "class") and saved[0][3:] == ("mine", "hyperclone.json")
    assert not Path("/tmp/hyperclone-escape").exists() and not (folder.parent / "escape").exists()
    student.send(clear_cache=True)
    student.run()  # the clear_cache message is handled before this rerun answers
