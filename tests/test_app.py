"""The dashboard, driven headless with Streamlit's AppTest: every section on the built-in GPT-2 model."""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pytest
import torch
from pages import one_error, open_page
from streamlit.testing.v1 import AppTest

from hyperclone.core.verify import TOLERANCE, kl_tolerance

BUILTIN = "tiny-gpt2-stdlib"


def cloned(at: AppTest) -> AppTest:
    at.button(key="clone").click().run()
    assert not at.exception, at.exception
    return at


def open_tab(at: AppTest, label: str) -> AppTest:
    """Switch tabs (stateful tabs: only the open one runs)."""
    at.session_state["tab"] = label
    at.run()
    assert not at.exception, at.exception
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def chart(at: AppTest, key: str) -> dict:
    """The plotly figure (as JSON) of the chart with widget key ``key``."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert found, f"no plotly chart {key!r}"
    return json.loads(found[0].proto.spec)


def shape(array) -> tuple[int, ...]:
    """Shape of a plotly JSON array (a list, or a typed array {dtype, bdata, shape})."""
    if isinstance(array, dict):
        if "shape" in array:
            return tuple(int(n) for n in str(array["shape"]).split(","))
        return (np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).size,)
    return (len(array), len(array[0])) if array and isinstance(array[0], list) else (len(array),)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_default_page_renders_the_builtin_source_and_a_clone_button(app):
    assert errors(app) == []
    assert app.sidebar.selectbox(key="builtin").value == BUILTIN
    assert metric(app, "family") == "gpt2"
    assert any(m.value.startswith("**Wide model:**") for m in app.markdown)
    assert not app.button(key="clone").disabled
    assert [t.label for t in app.tabs] == ["Compare", "Heatmaps", "Equivalence", "Training race", "Export"]


def test_clone_builtin_and_equivalence_passes_with_measured_numbers(app):
    open_tab(app, "Equivalence")
    t0 = time.perf_counter()
    cloned(app)
    print(f"AppTest: Clone -> equivalence result {time.perf_counter() - t0:.2f} s")
    assert errors(app) == []
    assert any("Equivalence PASSED" in s.value for s in app.success)
    assert float(metric(app, "max relative diff")) <= TOLERANCE[torch.float32]  # 84 eps, derived in verify.py
    max_abs = float(metric(app, "max |logit diff|"))  # = the relative diff x max |logit|: bounded by the line above
    assert 0 <= float(metric(app, "mean KL(source‖clone)")) <= kl_tolerance(2048, max_abs)  # the built-in vocab
    assert metric(app, "top-1 agreement") == "100.0%"
    assert metric(app, "Clone → result").endswith(" s")
    scatter = chart(app, "logit_scatter")
    assert shape(scatter["data"][0]["x"]) == shape(scatter["data"][0]["y"]) and shape(scatter["data"][0]["x"])[0] > 100
    bars = chart(app, "layer_bars")
    assert len(bars["data"][0]["x"]) == 1 + 4  # embeddings + every layer of the built-in model
    assert any("identical" in c.value for c in app.caption)  # greedy continuations agree
    open_tab(app, "Compare")
    rows = app.dataframe[0].value
    params = rows.set_index("")["×"]["hidden"]
    assert params == "2.00"


def test_heatmap_shows_source_clone_and_block_sum_with_the_right_shapes(app):
    cloned(app)
    open_tab(app, "Heatmaps")
    app.selectbox(key="hm_layer").set_value("layer 0").run()
    app.selectbox(key="hm_tensor").set_value("attn.c_proj.weight").run()
    app.select_slider(key="hm_side").set_value(160).run()
    fig = chart(app, "heatmap")
    shapes = [shape(d["z"]) for d in fig["data"] if d["type"] == "heatmap"]
    assert shapes == [(64, 64), (128, 128), (64, 64)]  # source W, x2 clone, one row of blocks summed
    assert len(fig["layout"]["shapes"]) == 2  # the block grid: one row edge, one column edge


@pytest.mark.slow
def test_ten_step_race_yields_a_curve_for_every_contestant_and_persists(app, tmp_path):
    open_tab(app, "Training race")
    app.number_input(key="race_steps").set_value(10).run()
    app.number_input(key="race_batch").set_value(4).run()
    app.selectbox(key="race_seq").set_value(64).run()
    app.number_input(key="race_eval").set_value(5).run()
    contestants = app.multiselect(key="race_contestants").value
    assert set(contestants) == {"noisy_symmetric", "random", "source"}
    app.button(key="race_start").click().run()
    deadline = time.time() + 240
    while not any("Race finished" in s.value for s in app.success):
        assert time.time() < deadline, "the 10-step race did not finish in 240 s"
        assert not app.exception and not errors(app), (app.exception, errors(app))
        time.sleep(2)
        app.run()
    app.run()  # the page as it stays once the race is over
    assert not app.exception and not errors(app), (app.exception, errors(app))
    loss = chart(app, "race_loss")
    raced = ["noisy_symmetric@gentle", "random", "source@gentle"]  # auto: gentle for a short race; random at its lr
    assert sorted(t["name"] for t in loss["data"] if t.get("name") in raced) == raced
    assert all(shape(t["x"]) == (3,) for t in loss["data"] if t.get("name") in raced)  # steps 0, 5, 10
    sym = chart(app, "race_symmetry")
    assert [t["name"] for t in sym["data"] if t.get("name")] == ["noisy_symmetric@gentle"]
    assert any(m.label.endswith("at equal tokens") for m in app.metric)  # the read-out, not a one-sided bound
    assert chart(app, "race_horizon")
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.jsonl").exists()

    other_tab = open_page()  # a reload / second tab sees the saved run
    open_tab(other_tab, "Training race")
    assert next(s for s in other_tab.selectbox if s.label == "Run").value == str(runs[0])
    assert chart(other_tab, "race_loss")


def test_recorded_races_are_listed_labelled_not_live_and_drawn_with_their_horizon(app):
    from hyperclone.training.recorded import recorded_races

    open_tab(app, "Training race")
    app.radio(key="race_mode").set_value("Recorded races").run()
    assert not app.exception and not errors(app), (app.exception, errors(app))
    picker = app.selectbox(key="race_recorded")
    assert picker.options == [r.label for r in recorded_races()] and len(picker.options) >= 2
    assert any("Recorded, not live" in w.value and "python benchmarks/record_races.py" in w.value for w in app.warning)
    loss = chart(app, "recorded_loss")
    assert {t.get("name") for t in loss["data"]} >= {"noisy_symmetric@gentle", "random"}
    assert chart(app, "recorded_horizon")
    assert not [b for b in app.button if b.key == "race_start"]  # nothing to start: it was recorded earlier


@pytest.mark.slow
def test_bad_inputs_show_one_line_errors_and_the_app_keeps_working(app, tmp_path):
    app.sidebar.radio(key="source_kind").set_value("Local directory").run()
    app.sidebar.text_input(key="local_dir").set_value(str(tmp_path / "missing")).run()
    app.sidebar.button(key="load").click().run()
    assert "not found" in one_error(app)

    app.sidebar.radio(key="source_kind").set_value("Hub id").run()
    app.sidebar.text_input(key="hub_id").set_value("nobody-here/no-such-model").run()
    app.sidebar.button(key="load").click().run()
    assert "built-in" in one_error(app)  # offline: names the built-in models instead

    app.sidebar.radio(key="source_kind").set_value("Built-in").run()
    assert errors(app) == []
    if not torch.cuda.is_available():
        app.sidebar.selectbox(key="device").set_value("cuda").run()
        assert "CUDA is not available" in one_error(app)
        app.sidebar.selectbox(key="device").set_value("auto").run()

    cloned(app)
    open_tab(app, "Equivalence")
    app.text_area(key="check_text").set_value("   ").run()
    assert "empty" in one_error(app)
    app.text_area(key="check_text").set_value("print('hello')").run()
    assert errors(app) == []

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    open_tab(app, "Export")
    app.text_input(key="export_dir").set_value(str(busy)).run()
    app.button(key="export_save").click().run()
    assert "not empty" in one_error(app)
    assert (busy / "keep.txt").read_text() == "mine"

    open_tab(app, "Training race")
    app.multiselect(key="race_contestants").set_value([]).run()
    assert app.button(key="race_start").disabled
    assert not app.button(key="clone").disabled  # still working after every error


def test_export_saves_checkpoint_with_provenance_and_offers_a_zip(app, tmp_path):
    cloned(app)
    open_tab(app, "Export")
    out = tmp_path / "export"
    app.text_input(key="export_dir").set_value(str(out)).run()
    app.button(key="export_save").click().run()
    assert errors(app) == [] and not app.exception
    record = json.loads((out / "hyperclone.json").read_text())
    assert record["source"] == BUILTIN and record["equivalence"]["passed"]
    assert (out / "README.md").exists() and (out / "model.safetensors").exists()
    assert any("Saved" in s.value for s in app.success)
    assert app.get("download_button")
