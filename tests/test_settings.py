"""One settings object per concept: ``RaceConfig`` and ``Growth`` declare each setting once (default, help, flag,
link and widget names), and the CLI, ``race()`` and the dashboard derive theirs from that declaration."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect

import pytest

from hyperclone.core.errors import HyperCloneError
from hyperclone.core.growth import Growth, default_words, field_default, flag_options, setting, setting_meta, setting_names
from hyperclone.training import loop
from hyperclone.training.config import MEASURED, RUN_ARGUMENTS, RaceConfig, growth_settings, race_config

cli_main = importlib.import_module("hyperclone.cli.main")  # the package exports main() under the same name
cli_race = importlib.import_module("hyperclone.cli.race")
RUN_RACE = loop.run_race  # the real one (the tests below capture race()'s call to it instead of training)

# Settings with no CLI flag, and why: the race measures them and stores them in run.json; nobody chooses them
# (run_config drops them again on resume). race() refuses them by name for the same reason.
NOT_ON_CLI = {"source_sha1", "source_final_lr", "auto_recipe"}

# A value other than the default for every setting: (as typed on the command line, as Python holds it).
RACE_EXAMPLES = {
    "source": ("some/checkpoint", "some/checkpoint"), "factor": ("3", 3), "ffn_factor": ("4", 4),
    "contestants": ("symmetric,random@lr=1e-3", ("symmetric", "random@lr=1e-3")), "data": ("notes.txt", "notes.txt"),
    "steps": ("7", 7), "steps_for": ("random=9", {"random": 9}), "batch_size": ("5", 5), "seq_len": ("48", 48),
    "lr": ("2e-4", 2e-4), "min_lr_ratio": ("0.25", 0.25), "warmup": ("3", 3), "schedule": ("linear", "linear"),
    "weight_decay": ("0.01", 0.01), "betas": ("0.8,0.99", (0.8, 0.99)), "grad_clip": ("0.5", 0.5),
    "eval_every": ("4", 4), "eval_windows": ("6", 6), "seed": ("11", 11), "snr_db": ("12.5", 12.5),
    "precision": ("bf16", "bf16"), "attn_implementation": ("eager", "eager"), "checkpoint_every": ("2", 2),
    "source_train_tokens": ("1000", 1000),
}
GROWTH_EXAMPLES = {
    "factor": ("3", 3), "ffn_factor": ("4", 4), "variant": ("noisy_diagonal", "noisy_diagonal"),
    "snr_db": ("20", 20.0), "seed": ("5", 5), "tie": ("keep", "keep"), "depth": ("2", 2), "depth_every": ("2", 2),
    "stack": (None, True),  # a switch: given or not
}
# Today's dashboard names, kept so that links and the app's tests keep working.
GROWTH_URL = {"factor": "factor", "ffn_factor": "ffn_factor", "variant": "variant", "snr_db": "snr_db", "seed": "seed",
              "depth": "depth", "stack": "stack"}
GROWTH_WIDGETS = {"factor": "factor", "ffn_factor": "ffn", "variant": "variant", "snr_db": "snr", "seed": "seed",
                  "depth": "depth", "stack": "stack"}
RACE_WIDGETS = {"steps": "race_steps", "batch_size": "race_batch", "seq_len": "race_seq", "lr": "race_lr",
                "eval_every": "race_eval"}


def names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def subparser(command: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or cli_main.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def flags_by_dest(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings}


def typed(field: str, text: str | None, examples: dict) -> list[str]:
    """The command-line words that set ``field`` to its example."""
    flag = setting_meta(RaceConfig if examples is RACE_EXAMPLES else Growth, field).get(
        "flag", "--" + field.replace("_", "-"))
    return [flag] if text is None else [flag, text]


# --------------------------------------------------------------------------- #
# Every setting is declared with its help, and reachable from the CLI and from Python
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("cls", [RaceConfig, Growth])
def test_every_setting_declares_its_help(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
    assert not missing, f"{cls.__name__} fields without help=: {missing}; declare them with setting(..., help=...)"


def test_the_examples_cover_every_setting():
    assert set(RACE_EXAMPLES) == set(names(RaceConfig)) - NOT_ON_CLI
    assert set(GROWTH_EXAMPLES) == set(names(Growth))
    for name, (_, value) in {**RACE_EXAMPLES}.items():
        assert value != getattr(RaceConfig(), name), f"{name}: the example must differ from the default"


def test_every_race_setting_has_a_flag_whose_dest_is_the_field():
    flags = flags_by_dest(subparser("race"))
    no_flag = {name for name in names(RaceConfig) if name not in flags}
    assert no_flag == NOT_ON_CLI
    assert NOT_ON_CLI == set(MEASURED) == set(setting_names(RaceConfig, "no_flag"))


@pytest.mark.parametrize("field", sorted(RACE_EXAMPLES))
def test_each_race_flag_sets_its_field(field):
    text, value = RACE_EXAMPLES[field]
    args = cli_main.build_parser().parse_args(["race", *typed(field, text, RACE_EXAMPLES)])
    cfg = cli_race._race_settings(args)
    assert getattr(cfg, field) == value
    assert cfg == dataclasses.replace(RaceConfig(), **{field: value})  # and nothing else


@pytest.fixture
def captured(monkeypatch) -> list:
    """``race()``'s hand-over to the loop, captured instead of run: [(cfg, source, run arguments)]."""
    calls = []
    monkeypatch.setattr(loop, "run_race", lambda cfg, source, **kw: calls.append((cfg, source, kw)))
    return calls


@pytest.mark.parametrize("field", sorted(RACE_EXAMPLES))
def test_race_takes_each_setting_by_name(field, captured):
    value = RACE_EXAMPLES[field][1]
    loop.race("tiny-gpt2-stdlib", **{field: value}) if field != "source" else loop.race(**{field: value})
    cfg, source, _ = captured[-1]
    assert getattr(cfg, field) == value
    assert race_config(**{field: value}) == cfg


def test_race_starts_from_a_config_and_overrides_it_without_changing_it(captured):
    base = RaceConfig(steps=9, lr=1e-3)
    loop.race("tiny-gpt2-stdlib", base, lr=2e-3)
    cfg = captured[-1][0]
    assert (cfg.steps, cfg.lr) == (9, 2e-3) and base.lr == 1e-3 and cfg is not base
    loop.race(config=base)  # no source: the config's
    assert captured[-1][1] == base.source


def test_run_arguments_are_passed_on_and_are_not_settings(captured):
    assert not set(RUN_ARGUMENTS) & set(names(RaceConfig))
    loop.race("tiny-gpt2-stdlib", **{key: f"<{key}>" for key in RUN_ARGUMENTS if key != "log_with"})
    cfg, _, run = captured[-1]
    assert cfg == race_config(source="tiny-gpt2-stdlib")
    assert {key: run[key] for key in RUN_ARGUMENTS if key != "log_with"} == {
        key: f"<{key}>" for key in RUN_ARGUMENTS if key != "log_with"}
    accepted = {p.name for p in inspect.signature(RUN_RACE).parameters.values() if p.kind is p.KEYWORD_ONLY}
    assert set(RUN_ARGUMENTS) <= accepted, "every run argument race() takes must reach run_race"


@pytest.mark.parametrize("key, closest", [("step", "steps"), ("batchsize", "batch_size"), ("devcie", "device"),
                                          ("snr", "snr_db")])
def test_an_unknown_keyword_is_one_line_naming_the_closest(key, closest, captured):
    with pytest.raises(HyperCloneError) as e:
        loop.race("tiny-gpt2-stdlib", **{key: 1})
    assert "\n" not in str(e.value) and f"did you mean {closest}?" in str(e.value) and repr(key) in str(e.value)
    assert not captured


@pytest.mark.parametrize("field", sorted(NOT_ON_CLI))
def test_a_measured_setting_is_refused_by_name(field, captured):
    with pytest.raises(HyperCloneError, match=f"{field} is measured by the race"):
        loop.race("tiny-gpt2-stdlib", **{field: "x"})


def test_a_positional_setting_is_refused_in_one_line(captured):
    with pytest.raises(HyperCloneError, match=r"config must be a RaceConfig, got int 2; give other settings by name"):
        loop.race("tiny-gpt2-stdlib", 2)


def test_every_growth_setting_has_a_clone_flag_that_sets_it():
    flags = flags_by_dest(subparser("clone"))
    assert set(names(Growth)) <= set(flags)
    for field, (text, value) in GROWTH_EXAMPLES.items():
        args = cli_main.build_parser().parse_args(["clone", "src", "out", *typed(field, text, GROWTH_EXAMPLES),
                                                   *(["--depth", "2"] if field in ("stack", "depth_every") else [])])
        growth = cli_main._growth(args)
        assert getattr(growth, field) == value and Growth(**{field: value, **(
            {"depth": 2} if field in ("stack", "depth_every") else {})}) == growth


# --------------------------------------------------------------------------- #
# Defaults and help come from the declaration
# --------------------------------------------------------------------------- #
def test_the_cli_defaults_are_the_dataclass_defaults():
    assert cli_race._race_settings(cli_main.build_parser().parse_args(["race"])) == RaceConfig()
    assert cli_main._growth(cli_main.build_parser().parse_args(["clone", "src", "out"])) == Growth()
    clone_flags = flags_by_dest(subparser("clone"))
    for f in dataclasses.fields(Growth):
        assert clone_flags[f.name].default == f.default


@pytest.mark.parametrize("cls, command", [(RaceConfig, "race"), (Growth, "clone")])
def test_help_texts_and_defaults_shown_come_from_the_declaration(cls, command):
    flags = flags_by_dest(subparser(command))
    for f in dataclasses.fields(cls):
        if f.name not in NOT_ON_CLI:
            assert flags[f.name].help == f.metadata["help"] + default_words(field_default(f)), f.name
    steps = flags_by_dest(subparser("race"))["steps"].help
    assert steps == "training steps per contestant (default 300)"


def test_a_field_added_to_race_config_appears_in_race_help(monkeypatch, capsys):
    @dataclasses.dataclass
    class Wider(RaceConfig):
        label_smoothing: float = setting(0.05, help="a setting added in one place")

    monkeypatch.setattr(cli_race, "RaceConfig", Wider)
    parser = cli_main.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["race", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--label-smoothing LABEL_SMOOTHING a setting added in one place (default 0.05)" in out
    assert parser.parse_args(["race", "--label-smoothing", "0.2"]).label_smoothing == 0.2


def test_a_field_added_to_growth_appears_in_clone_help_and_reaches_the_growth(monkeypatch, capsys):
    @dataclasses.dataclass(frozen=True)
    class Wider(Growth):
        head_factor: int = setting(1, help="a growth setting added in one place")

    monkeypatch.setattr(cli_main, "Growth", Wider)
    parser = cli_main.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["clone", "--help"])
    assert "a growth setting added in one place (default 1)" in " ".join(capsys.readouterr().out.split())
    assert cli_main._growth(parser.parse_args(["clone", "a", "b", "--head-factor", "3"])).head_factor == 3


def test_flag_options_refuse_a_type_they_cannot_read():
    @dataclasses.dataclass
    class Odd:
        pair: tuple[int, int] = setting((1, 2), help="no parse= given")

    with pytest.raises(TypeError, match="pair: the CLI cannot read"):
        flag_options(Odd)


def test_a_bad_flag_value_is_the_settings_own_one_line(capsys):
    with pytest.raises(SystemExit):
        cli_main.build_parser().parse_args(["race", "--steps-for", "random"])
    assert "expected NAME=STEPS[,NAME=STEPS], got 'random'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main.build_parser().parse_args(["race", "--betas", "0.9"])
    assert "expected two numbers B1,B2" in capsys.readouterr().err


# --------------------------------------------------------------------------- #
# The dashboard's names
# --------------------------------------------------------------------------- #
def test_the_dashboard_names_come_from_the_declaration():
    from hyperclone.dashboard import common

    assert setting_names(Growth, "url") == common.GROWTH_URL == GROWTH_URL
    assert setting_names(Growth, "widget") == common.GROWTH_WIDGETS == GROWTH_WIDGETS
    assert setting_names(RaceConfig, "widget") == RACE_WIDGETS
    assert set(common.LINK_NUMBERS) == {"factor", "ffn_factor", "snr_db", "seed", "depth"}


@pytest.mark.parametrize("growth", [Growth(), Growth(3, 2, "noisy_symmetric", 12.5, 4, depth=2, stack=True),
                                    Growth(4, variant="diagonal", depth=3)])
def test_a_link_holds_every_growth_setting_it_names(growth):
    from hyperclone.dashboard.common import growth_from_params, growth_params

    params = growth_params(growth)
    assert set(params) == set(GROWTH_URL.values())
    link = {k: v for k, v in params.items() if v is not None}
    assert growth_from_params(link) == growth


def test_a_race_gets_the_growth_settings_it_shares_with_growth():
    g = Growth(3, 2, "noisy_symmetric", 12.5, 4)
    assert growth_settings(g) == {"factor": 3, "ffn_factor": 2, "snr_db": 12.5, "seed": 4}
    cfg = race_config(**growth_settings(g))
    assert cfg.growth("noisy_symmetric") == Growth(3, 2, "noisy_symmetric", 12.5, 4)
