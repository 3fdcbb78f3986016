"""Randomly initialised EfficientNet-b4, EfficientNet-Lite0 and LoFTR networks and their weight files, as pytest
fixtures shared by the weights, features and LoFTR tests (import the fixtures by name)."""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_pytorch")
pytest.importorskip("kornia")

from efficientnet_pytorch import EfficientNet  # noqa: E402
from kornia.feature import LoFTR  # noqa: E402

from splatjax.nets.weights import (  # noqa: E402
    EFFICIENTNET_ENV,
    LITE0_PACKAGE,
    LOFTR_ENV,
    build_efficientnet_lite0,
    loftr_indoor_new_config,
)

__all__ = ["effnet", "effnet_file", "lite0_net", "lite0_file", "loftr_net", "loftr_file", "no_hub", "no_lite0"]


def _random_bn_statistics(model) -> None:
    """Random, non-trivial BN statistics so that a wrong load would show."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)


@pytest.fixture(scope="module")
def effnet():
    torch.manual_seed(0)
    m = EfficientNet.from_name("efficientnet-b4").eval()
    _random_bn_statistics(m)
    return m


@pytest.fixture(scope="module")
def lite0_net():
    torch.manual_seed(2)
    m = build_efficientnet_lite0().eval()
    _random_bn_statistics(m)
    return m


@pytest.fixture(scope="module")
def lite0_file(lite0_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "lite0_random.pth"
    torch.save(lite0_net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def effnet_file(effnet, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "effnet_b4_random.pth"
    torch.save(effnet.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def loftr_net():
    torch.manual_seed(1)
    return LoFTR(pretrained=None, config=loftr_indoor_new_config()).eval()


@pytest.fixture(scope="module")
def loftr_file(loftr_net, tmp_path_factory):
    # kornia's checkpoint layout: {"state_dict": {"matcher.<key>": tensor}}
    path = tmp_path_factory.mktemp("weights") / "loftr_random.ckpt"
    torch.save({"state_dict": {"matcher." + k: v for k, v in loftr_net.state_dict().items()}}, path)
    return path


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no weights environment variables."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.delenv(EFFICIENTNET_ENV, raising=False)
    monkeypatch.delenv(LOFTR_ENV, raising=False)
    return tmp_path / "hub" / "checkpoints"


@pytest.fixture
def no_lite0(monkeypatch):
    """The EfficientNet-Lite0 weights package hidden (as if not installed)."""
    monkeypatch.setitem(sys.modules, LITE0_PACKAGE, None)
