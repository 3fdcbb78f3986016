"""Weights loading (EfficientNet-b4, LoFTR), feature taps, dlpack bridges, LoFTR match counts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
kornia = pytest.importorskip("kornia")

from efficientnet_pytorch import EfficientNet  # noqa: E402
from kornia.feature import LoFTR  # noqa: E402

from splatjax.anomaly import features as F  # noqa: E402
from splatjax.pose.loftr import loftr_match_counts  # noqa: E402
from splatjax.anomaly.weights import (  # noqa: E402
    EFFICIENTNET_B4_FILENAME,
    EFFICIENTNET_ENV,
    LOFTR_ENV,
    LOFTR_INDOOR_NEW_FILENAME,
    WeightsError,
    find_efficientnet_weights,
    find_loftr_weights,
    load_efficientnet_b4,
    load_loftr,
    loftr_indoor_new_config,
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def effnet():
    torch.manual_seed(0)
    m = EfficientNet.from_name("efficientnet-b4").eval()
    # random, non-trivial BN statistics so that a wrong load would show
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


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


def test_efficientnet_tap_shapes_and_reference_forward(effnet):
    ext = F.EfficientNetFeatures.from_model(effnet, "cpu", batch_size=2)
    x = _images(jax.random.key(1), b=3, h=200, w=160)  # resized to 224 x 224 inside
    taps = ext.features(x)
    shapes = [t.shape for t in taps]
    assert shapes == [(3, 112, 112, 24), (3, 56, 56, 32), (3, 28, 28, 56), (3, 14, 14, 160)]
    assert tuple(t.shape[-1] for t in taps) == F.EFFICIENTNET_TAP_CHANNELS
    # same as running efficientnet_pytorch's own blocks on the normalised, resized batch
    xr = jax.image.resize(x, (3, 224, 224, 3), "linear")
    mean, std = np.asarray(F.IMAGENET_MEAN), np.asarray(F.IMAGENET_STD)
    t = torch.from_numpy(((np.asarray(xr) - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        h = effnet._swish(effnet._bn0(effnet._conv_stem(t)))
        ref = []
        for i, block in enumerate(effnet._blocks[:22]):
            h = block(h, drop_connect_rate=effnet._global_params.drop_connect_rate * i / 32)
            if i in F.EFFICIENTNET_TAP_BLOCKS:
                ref.append(h.permute(0, 2, 3, 1).numpy())
    for a, b in zip(taps, ref):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-4)
    # levels: channel-summed squared tap differences, one per tap (3 pairs in 2 passes)
    r = jax.image.resize(x, (3, 224, 224, 3), "linear")
    q = jnp.roll(r, 1, axis=0)
    levels = ext.levels(r, q)
    fq = [jnp.roll(t, 1, axis=0) for t in taps]
    assert [lv.shape for lv in levels] == [(3, 112, 112), (3, 56, 56), (3, 28, 28), (3, 14, 14)]
    for lv, a, b in zip(levels, taps, fq):
        np.testing.assert_allclose(np.asarray(lv), np.asarray(jnp.sum((a - b) ** 2, -1)), rtol=1e-3, atol=1e-3)


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


def test_loftr_match_counts_equal_per_pair_forward():
    torch.manual_seed(2)
    cfg = loftr_indoor_new_config()
    cfg["match_coarse"]["thr"] = 0.0  # random weights: keep every mutual-nearest match
    net = LoFTR(pretrained=None, config=cfg).eval()
    rng = np.random.default_rng(0)
    q = rng.random((48, 48)).astype(np.float32)
    cands = rng.random((5, 48, 48)).astype(np.float32)
    cands[2] = q
    counts = loftr_match_counts(net, jnp.asarray(q), jnp.asarray(cands), batch=2)
    assert counts.shape == (5,) and counts.dtype == np.int64
    ref, confs = [], []
    with torch.no_grad():
        for c in cands:
            out = net({"image0": torch.from_numpy(q)[None, None], "image1": torch.from_numpy(c)[None, None]})
            ref.append(len(out["confidence"]))
            confs.append(out["confidence"].numpy())
    np.testing.assert_array_equal(counts, ref)
    assert counts.sum() > 0
    # a threshold in the widest gap of the middle half of the confidences (batched and
    # one-by-one forwards differ by float rounding, so not at a confidence value)
    v = np.unique(np.concatenate(confs))
    lo, hi = len(v) // 4, max(3 * len(v) // 4, len(v) // 4 + 2)
    i = lo + int(np.argmax(np.diff(v[lo:hi])))
    thr = float(0.5 * (v[i] + v[i + 1]))
    counts_thr = loftr_match_counts(net, q, cands, batch=3, threshold=thr)
    np.testing.assert_array_equal(counts_thr, [int((c > thr).sum()) for c in confs])
    with pytest.raises(ValueError, match="query must be"):
        loftr_match_counts(net, cands, cands)


# --------------------------------------------------------------------------- dlpack and factory


def test_dlpack_round_trip_is_zero_copy_on_cpu():
    x = jax.random.uniform(jax.random.key(4), (2, 8, 8, 3))
    t = F.jax_to_torch(x)
    assert t.data_ptr() == x.unsafe_buffer_pointer()
    np.testing.assert_array_equal(t.numpy(), np.asarray(x))
    y = torch.arange(2 * 64 * 3, dtype=torch.float32).reshape(2, 64, 3) * 0.5
    j = F.torch_to_jax(y)
    assert j.unsafe_buffer_pointer() == y.data_ptr()
    np.testing.assert_array_equal(np.asarray(j), y.numpy())
    # a non-contiguous view comes back with the right values
    np.testing.assert_array_equal(np.asarray(F.torch_to_jax(y.permute(2, 0, 1))), y.permute(2, 0, 1).numpy())


def test_make_feature_extractor_choices(no_hub, effnet_file, monkeypatch):
    monkeypatch.setattr(F, "_ANNOUNCED", set())
    log: list[str] = []
    ext = F.make_feature_extractor("auto", log=log.append)
    assert isinstance(ext, F.WeightsFreeFeatures) and not ext.rgb_term
    ext2 = F.make_feature_extractor("auto", log=log.append)
    assert isinstance(ext2, F.WeightsFreeFeatures)
    assert len(log) == 1  # announced once
    assert "WEIGHTS-FREE" in log[0] and "--efficientnet-weights" in log[0] and EFFICIENTNET_ENV in log[0]
    with pytest.raises(WeightsError, match="EfficientNet features requested but no EfficientNet-b4 weights"):
        F.make_feature_extractor("efficientnet", log=log.append)
    with pytest.raises(ValueError, match="unknown feature extractor"):
        F.make_feature_extractor("resnet")
    monkeypatch.setenv(EFFICIENTNET_ENV, str(effnet_file))
    ext3 = F.make_feature_extractor("auto", log=log.append, device="cpu")
    assert isinstance(ext3, F.EfficientNetFeatures) and ext3.rgb_term
    assert str(effnet_file) in log[-1]
    ext4 = F.make_feature_extractor("weights-free", log=log.append)
    assert isinstance(ext4, F.WeightsFreeFeatures)
