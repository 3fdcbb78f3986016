"""Flags generated from config dataclasses (splatjax.app.flags)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from splatjax.app.flags import add_config_flags, config_from_flags, flag_fields
from splatjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    steps: int = dataclasses.field(default=175, metadata={"help": "steps"})
    rate: float | None = dataclasses.field(default=None, metadata={"help": "rate"})
    mode: str = dataclasses.field(default="auto", metadata={"help": "mode", "choices": ("auto", "fast")})
    exact: bool = dataclasses.field(default=False, metadata={"help": "exact"})
    background: tuple[float, float, float] = dataclasses.field(default=(1.0, 1.0, 1.0), metadata={"help": "bg"})
    hidden: int = 3

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError("steps", f"must be >= 1 (got {self.steps})", owner="DemoConfig")


@dataclasses.dataclass(frozen=True)
class OtherConfig:
    steps: int = dataclasses.field(default=7, metadata={"help": "shared steps"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed"})


def _parse(argv, *classes):
    p = argparse.ArgumentParser()
    for c in classes:
        add_config_flags(p, c)
    return p.parse_args(argv)


def test_defaults_survive_when_no_flag_given():
    assert config_from_flags(DemoConfig, _parse([], DemoConfig)) == DemoConfig()


def test_every_supported_type_parses():
    args = _parse(["--steps", "5", "--rate", "0.5", "--mode", "fast", "--exact", "--background", "0", "0", "0"],
                  DemoConfig)
    cfg = config_from_flags(DemoConfig, args)
    assert cfg == DemoConfig(steps=5, rate=0.5, mode="fast", exact=True, background=(0.0, 0.0, 0.0))
    assert config_from_flags(DemoConfig, _parse(["--rate", "none", "--no-exact"], DemoConfig)).rate is None


def test_fields_without_help_are_not_flags():
    assert [f.name for f in flag_fields(DemoConfig)] == ["steps", "rate", "mode", "exact", "background"]
    with pytest.raises(SystemExit):
        _parse(["--hidden", "4"], DemoConfig)


def test_shared_field_sets_both_configs():
    args = _parse(["--steps", "9"], DemoConfig, OtherConfig)
    assert config_from_flags(DemoConfig, args).steps == 9
    assert config_from_flags(OtherConfig, args).steps == 9


def test_validation_is_the_configs_own():
    with pytest.raises(ConfigError) as e:
        config_from_flags(DemoConfig, _parse(["--steps", "-3"], DemoConfig))
    assert e.value.flag == "--steps" and "got -3" in str(e.value)


@dataclasses.dataclass(frozen=True)
class RenamedConfig:
    objective: str = dataclasses.field(default="a", metadata={"help": "objective", "flag": "--pose-objective"})


def test_a_field_may_name_its_flag():
    assert config_from_flags(RenamedConfig, _parse(["--pose-objective", "b"], RenamedConfig)).objective == "b"
    with pytest.raises(SystemExit):
        _parse(["--objective", "b"], RenamedConfig)
    assert ConfigError("objective", "bad", owner="RenamedConfig", flag="--pose-objective").flag == "--pose-objective"


@dataclasses.dataclass(frozen=True)
class OuterConfig:
    inner: DemoConfig = dataclasses.field(default=DemoConfig(), metadata={"help": "inner", "prefix": "inner_"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed"})


def test_a_nested_config_gets_prefixed_flags_and_is_rebuilt_whole():
    args = _parse(["--inner-steps", "5", "--no-inner-exact", "--seed", "2"], OuterConfig)
    cfg = config_from_flags(OuterConfig, args)
    assert cfg == OuterConfig(inner=DemoConfig(steps=5), seed=2)
    assert config_from_flags(OuterConfig, _parse([], OuterConfig)) == OuterConfig()
    base = OuterConfig(inner=DemoConfig(mode="fast"))  # flags replace fields of the base's nested config
    assert config_from_flags(OuterConfig, _parse(["--inner-steps", "4"], OuterConfig), base=base).inner == \
        DemoConfig(mode="fast", steps=4)
    with pytest.raises(SystemExit):
        _parse(["--steps", "4"], OuterConfig)  # only the prefixed name exists


def test_a_nested_configs_error_names_its_prefixed_flag():
    with pytest.raises(ConfigError) as err:
        config_from_flags(OuterConfig, _parse(["--inner-steps", "0"], OuterConfig))
    assert err.value.flag == "--inner-steps" and "DemoConfig.steps" in str(err.value)


def test_pose_config_keypoint_flags_set_its_keypoint_config():
    from splatjax.pose import KeypointConfig, PoseConfig

    args = _parse(["--keypoint-width", "120", "--keypoint-rounds", "3", "--keypoint-features", "500"], PoseConfig)
    cfg = config_from_flags(PoseConfig, args)
    assert cfg.keypoint == KeypointConfig(width=120, rounds=3, features=500)
    with pytest.raises(ConfigError) as err:
        config_from_flags(PoseConfig, _parse(["--keypoint-width", "8"], PoseConfig))
    assert err.value.flag == "--keypoint-width"
