"""The dashboard's race panel: recipes from its widgets, a bad spec refused in one line before anything starts."""

from __future__ import annotations

from pages import open_page


def test_the_race_panel_builds_recipes_and_refuses_a_bad_spec_in_one_line(runs):
    at = open_page()
    at.session_state["tab"] = "Training race"
    at.run()
    assert not at.exception, at.exception
    racing = lambda: next(c.value for c in at.caption if c.value.startswith("Racing "))  # noqa: E731
    assert racing().startswith("Racing noisy_symmetric@auto, random, source@auto;")  # follows the horizon
    at.selectbox(key="race_recipe").set_value("paper").run()  # no lr of its own: the shared one
    assert racing().startswith("Racing noisy_symmetric, random, source;")
    at.number_input(key="race_clone_lr").set_value(1e-3).run()
    assert racing().startswith("Racing noisy_symmetric@lr=1e-3, random, source;")
    at.selectbox(key="race_recipe").set_value("gentle").run()  # the clone's lr goes to the source too here
    assert racing().startswith("Racing noisy_symmetric@gentle@lr=1e-3, random, source@gentle@lr=1e-3;")
    at.number_input(key="race_clone_lr").set_value(None).run()

    at.text_input(key="race_more").set_value("noisy_symmetric@lr=fast").run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "lr 'fast' is not a number" in errors[0] and "\n" not in errors[0]
    assert at.button(key="race_start").disabled

    at.text_input(key="race_more").set_value("noisy_symmetric@lr=3e-4").run()
    at.selectbox(key="race_recipe").set_value("clone-aware").run()
    at.number_input(key="race_random_lr").set_value(3e-3).run()
    assert not at.error and not at.button(key="race_start").disabled
    # the same variant twice with two recipes: unique names, both racing
    at.text_input(key="race_more").set_value("noisy_symmetric@clone-aware").run()
    assert "listed twice" in at.error[0].value and at.button(key="race_start").disabled
