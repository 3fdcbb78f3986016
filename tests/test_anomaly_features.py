"""splatjax.anomaly.features: EfficientNet-b4 taps against the reference forward, dlpack bridges,
the extractor factory."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")

from efficientnet_pytorch import EfficientNet  # noqa: E402,F401

from torch_nets import effnet, effnet_file, no_hub  # noqa: E402,F401

from splatjax.anomaly.weights import EFFICIENTNET_ENV, WeightsError  # noqa: E402
from splatjax.anomaly import features as F  # noqa: E402
from splatjax.errors import ConfigError  # noqa: E402


def _images(key, b=2, h=224, w=224):
    return jax.random.uniform(key, (b, h, w, 3), jnp.float32)


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
    with pytest.raises(ConfigError, match="features"):
        F.make_feature_extractor("resnet")
    monkeypatch.setenv(EFFICIENTNET_ENV, str(effnet_file))
    ext3 = F.make_feature_extractor("auto", log=log.append, device="cpu")
    assert isinstance(ext3, F.EfficientNetFeatures) and ext3.rgb_term
    assert str(effnet_file) in log[-1]
    ext4 = F.make_feature_extractor("weights-free", log=log.append)
    assert isinstance(ext4, F.WeightsFreeFeatures)
