"""Settings refuse a bad value where they are made: `EngineSettings`, `TeachConfig` and
`ObjectConfig` check every user field on construction (`dataclasses.replace` too), by the same
rules (`options.check`) the node's parameters and the CLI flags use."""

from __future__ import annotations

import dataclasses

import pytest

from povss_ros.objects import ObjectConfig
from povss_ros.options import check, user_fields
from povss_ros.personal.teach import TeachConfig
from povss_ros.settings import EngineSettings

CLASSES = (EngineSettings, TeachConfig, ObjectConfig)


def _bad_values(f: dataclasses.Field) -> list[object]:
    """Values just outside the field's limits, as its metadata states them."""
    meta, bad = f.metadata, []
    if meta["low"] is not None:
        bad.append(meta["low"] - 1)
    if meta["high"] is not None:
        bad.append(meta["high"] + 1)
    if meta["positive"]:
        bad.append(0)
    if meta["odd"]:
        bad.append(2 if meta["low"] is None or meta["low"] <= 2 else meta["low"] + 1)
    if meta["choices"]:
        bad.append("no such choice")
    return bad


CASES = [(cls, f.name, value) for cls in CLASSES for f in user_fields(cls)
         for value in _bad_values(f)]


def test_the_defaults_are_valid():
    for cls in CLASSES:
        made = cls()
        assert all(check(f, getattr(made, f.name)) is None for f in user_fields(cls))


@pytest.mark.parametrize(("cls", "name", "value"), CASES,
                         ids=[f"{c.__name__}.{n}={v}" for c, n, v in CASES])
def test_a_value_outside_a_fields_limits_is_refused_naming_the_field(cls, name, value):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{name} must "):
        cls(**{name: value})
    with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{name} must "):
        dataclasses.replace(cls(), **{name: value})


def test_every_class_has_limits_to_check():
    assert {cls for cls, _, _ in CASES} == set(CLASSES)


def test_the_issues_example_and_its_message():
    with pytest.raises(ValueError) as err:
        EngineSettings(input_min_size=-5)
    assert str(err.value) == "EngineSettings.input_min_size must be at least 0, got -5"
    with pytest.raises(ValueError, match=r"TeachConfig\.kernel must be odd, got 4"):
        EngineSettings(teach=TeachConfig(kernel=4))
    with pytest.raises(ValueError, match=r"EngineSettings\.resize must be one of exact \| fast"):
        EngineSettings(resize="cubic")


def test_lists_nan_and_prefix_choices_follow_the_shared_rules():
    with pytest.raises(ValueError, match=r"EngineSettings\.vocabulary holds a blank entry"):
        EngineSettings(vocabulary=["mug", " "])
    with pytest.raises(ValueError, match=r"ObjectConfig\.stuff_words holds a blank entry"):
        ObjectConfig(stuff_words=["wall", ""])
    with pytest.raises(ValueError, match=r"TeachConfig\.lr must be a finite number"):
        TeachConfig(lr=float("nan"))
    assert EngineSettings(device="cuda:1").device == "cuda:1"  # "cuda:*" accepts any index
    with pytest.raises(ValueError, match=r"EngineSettings\.device must be one of"):
        EngineSettings(device="tpu")


def test_values_at_the_limits_and_the_harness_switches_pass():
    assert EngineSettings(input_min_size=0, capture_buffer_size=300).input_min_size == 0
    assert TeachConfig(alpha=0.0, kernel=31, seed=2**32 - 1).kernel == 31
    # The ablation switches and implementation choices are not user fields: unchecked.
    off = TeachConfig(use_prompt=False, use_negative=False, use_visual=False, threads=None)
    assert off.threads is None and not off.use_prompt
    assert ObjectConfig(outlier_mads=-1.0).outlier_mads == -1.0


def test_the_evaluation_harness_seeds_are_accepted():
    """The harness draws each episode's teaching seed as a uint32 (`seeded`)."""
    from povss_lab.eval.runner import seeded

    seeds = [seeded(TeachConfig(), s, k, i).seed for s in range(2) for k in (1, 5)
             for i in range(8)]
    assert max(seeds) >= 2**31  # the upper half occurs: the field's bound must hold it
