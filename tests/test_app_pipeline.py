"""splatjax.app.pipeline: the interim command-line adapters parse into the configs."""

import argparse

import pytest

from splatjax.app import pipeline
from splatjax.errors import ConfigError


def test_cli_argument_helpers_parse_into_configs():
    p = pipeline.add_evaluate_arguments(argparse.ArgumentParser())
    a = p.parse_args(["D1", "D2", "--out", "O", "--steps", "25", "--train-fraction", "0.4", "--coarse", "render",
                      "--exact-exp", "--map-sigma", "2"])
    assert a.data == ["D1", "D2"] and a.train_fraction == 0.4 and a.model is None
    pose_config, map_config = pipeline._configs(a)
    assert pose_config.steps == 25 and pose_config.coarse == "render" and pose_config.exact_exp
    assert map_config.map_sigma == 2.0 and map_config.features == "auto"
    d = pipeline.add_detect_arguments(argparse.ArgumentParser()).parse_args(["--model", "R", "x.png", "y.png"])
    assert d.images == ["x.png", "y.png"] and d.coarse == "render"
    m = pipeline.add_demo_arguments(argparse.ArgumentParser()).parse_args([])
    assert m.out == "demo_out"
    bad = p.parse_args(["D", "--out", "O", "--steps", "0"])
    with pytest.raises(ConfigError, match="steps"):
        pipeline._configs(bad)
