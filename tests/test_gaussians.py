"""splatjax.gaussians: activations, initialisation and the 3DGS PLY format (round trip,
INRIA layout, and every malformed file refused with a DatasetError naming it)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import splatjax as sj
from splatjax.errors import DatasetError, DatasetNotFoundError
from splatjax.gaussians import load_ply, rgb_to_sh0, save_ply, sh0_to_rgb

INRIA_ORDER = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
               + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])


def _random(n=25, seed=0) -> sj.Gaussians:
    rng = np.random.default_rng(seed)
    return sj.Gaussians(
        means=jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
        log_scales=jnp.asarray(rng.uniform(-4, -1, (n, 3)), jnp.float32),
        quats=jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
        opacity_logits=jnp.asarray(rng.normal(size=n), jnp.float32),
        sh0=jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
    )


def test_activations():
    g = _random()
    np.testing.assert_allclose(np.asarray(g.scales), np.exp(np.asarray(g.log_scales)), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(g.unit_quats), axis=1), 1.0, atol=1e-6)
    assert float(g.opacities.min()) > 0 and float(g.opacities.max()) < 1
    rgb = jnp.asarray([[0.2, 0.5, 0.9]])
    np.testing.assert_allclose(np.asarray(sh0_to_rgb(rgb_to_sh0(rgb))), np.asarray(rgb), atol=1e-6)
    assert float(sh0_to_rgb(jnp.full(3, -100.0)).min()) == 0.0
    assert g.take(jnp.arange(5)).num == 5


def test_init_random_gaussians():
    g = sj.init_random_gaussians(200, key=jax.random.key(0), extent=1.3, opacity=0.1)
    assert g.num == 200 and float(jnp.abs(g.means).max()) <= 1.3
    np.testing.assert_allclose(np.asarray(g.opacities), 0.1, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g.quats), np.tile([1.0, 0, 0, 0], (200, 1)))
    assert float(jnp.ptp(g.log_scales, axis=1).max()) == 0.0        # isotropic
    pts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)
    g2 = sj.init_random_gaussians(0, key=jax.random.key(1), points=pts)
    assert g2.num == 5
    # sqrt of the mean squared distance to the 3 nearest neighbours: 1 for the origin
    assert float(g2.scales[0, 0]) == pytest.approx(1.0, rel=1e-5)


def test_ply_round_trip_and_layout(tmp_path):
    from plyfile import PlyData

    g = _random()
    save_ply(g, tmp_path / "m.ply")
    assert os.listdir(tmp_path) == ["m.ply"]
    ply = PlyData.read(str(tmp_path / "m.ply"))
    assert [p.name for p in ply["vertex"].properties] == INRIA_ORDER
    back = load_ply(tmp_path / "m.ply")
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh0"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(g, name)))


def _write_vertices(path, names, n=3, values=None):
    from plyfile import PlyData, PlyElement

    v = np.zeros(n, dtype=[(k, "f4") for k in names])
    for k in names:
        v[k] = 0.5 if values is None else values.get(k, 0.5)
    PlyData([PlyElement.describe(v, "vertex")]).write(str(path))


def test_bad_ply_files(tmp_path):
    p = tmp_path / "m.ply"
    with pytest.raises(DatasetNotFoundError, match="model file .*m.ply' does not exist"):
        load_ply(p)
    save_ply(_random(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="m.ply' is not a readable PLY file .*truncated or corrupt"):
        load_ply(p)
    p.write_bytes(b"")
    with pytest.raises(DatasetError, match="not a readable PLY"):
        load_ply(p)
    p.write_text("hello, not a ply\n")
    with pytest.raises(DatasetError, match="not a readable PLY"):
        load_ply(p)
    _write_vertices(p, [k for k in INRIA_ORDER if k not in ("opacity", "rot_3")])
    with pytest.raises(DatasetError, match=r"not a 3DGS PLY: missing vertex properties \['opacity', 'rot_3'\]"):
        load_ply(p)
    _write_vertices(p, INRIA_ORDER, n=0)
    with pytest.raises(DatasetError, match="holds no Gaussians"):
        load_ply(p)
    _write_vertices(p, INRIA_ORDER, values={"y": np.array([0.0, np.nan, 1.0])})
    with pytest.raises(DatasetError, match="NaN or infinite x/y/z in 1 of 3 Gaussians"):
        load_ply(p)
    (tmp_path / "d.ply").mkdir()
    with pytest.raises(DatasetNotFoundError, match="is not a file"):
        load_ply(tmp_path / "d.ply")


def _inria_order(degree):
    rest = [f"f_rest_{j}" for j in range(3 * ((degree + 1) ** 2 - 1))]
    return INRIA_ORDER[:9] + rest + INRIA_ORDER[9:]


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_ply_round_trip_with_sh(tmp_path, degree):
    from plyfile import PlyData

    g = _random().with_sh_degree(degree)
    k1 = (degree + 1) ** 2 - 1
    rest = np.random.default_rng(degree).normal(size=(g.num, k1, 3)).astype(np.float32)
    g = sj.Gaussians(g.means, g.log_scales, g.quats, g.opacity_logits, g.sh0, jnp.asarray(rest))
    save_ply(g, tmp_path / "m.ply")
    ply = PlyData.read(str(tmp_path / "m.ply"))
    assert [p.name for p in ply["vertex"].properties] == _inria_order(degree)
    # INRIA's channel-major order: f_rest_{c (K-1) + k} is coefficient k + 1 of channel c
    v = ply["vertex"].data
    for c, k in ((0, 0), (1, k1 - 1), (2, 1)):
        np.testing.assert_array_equal(v[f"f_rest_{c * k1 + k}"], rest[:, k, c])
    back = load_ply(tmp_path / "m.ply")
    assert back.sh_degree == degree
    for name in ("means", "log_scales", "quats", "opacity_logits", "sh0", "sh_rest"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(g, name)))


def test_inria_ply_with_f_rest_loads(tmp_path):
    """A degree-3 PLY written by hand in INRIA's layout (45 f_rest values, channel-major)
    loads with its view-dependent coefficients; a wrong f_rest count is refused."""
    n, k1 = 4, 15
    rng = np.random.default_rng(0)
    features_rest = rng.normal(size=(n, k1, 3)).astype(np.float32)  # INRIA's _features_rest [N, 15, 3]
    flat = np.transpose(features_rest, (0, 2, 1)).reshape(n, 45)      # .transpose(1, 2).flatten(1)
    values = {f"f_rest_{j}": flat[:, j] for j in range(45)}
    values.update(rot_0=np.ones(n, np.float32))
    p = tmp_path / "inria.ply"
    _write_vertices(p, _inria_order(3), n=n, values=values)
    g = load_ply(p)
    assert g.sh_degree == 3 and g.sh_rest.shape == (n, 15, 3)
    np.testing.assert_array_equal(np.asarray(g.sh_rest), features_rest)
    _write_vertices(p, INRIA_ORDER + [f"f_rest_{j}" for j in range(10)])
    with pytest.raises(DatasetError, match="inria.ply' has 10 f_rest_\\* properties"):
        load_ply(p)
