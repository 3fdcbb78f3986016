"""The command line (splatjax.app.cli): flags parse into the configs, and bad input or bad
options end with one line naming the file or option, exit status 2, no traceback, and the
dataset untouched."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import jax
import pytest
from app_toy import toy_dataset
from dataset_builders import tree_state
from PIL import Image

import splatjax as sj
from splatjax.app import cli, commands
from splatjax.app.flags import config_from_flags


def _parse(argv):
    return cli.build_parser().parse_args(argv)


def test_flags_parse_into_the_configs():
    a = _parse(["evaluate", "D1", "D2", "--out", "O", "--steps", "25", "--train-fraction", "0.4", "--coarse",
                "render", "--exact-exp", "--map-sigma", "2", "--backend", "reference", "--seed", "3"])
    pose = config_from_flags(sj.PoseConfig, a)
    maps = config_from_flags(sj.MapConfig, a)
    fit = config_from_flags(sj.FitConfig, a)
    assert a.data == ["D1", "D2"] and a.model is None
    assert pose.steps == 25 and pose.coarse == "render" and pose.exact_exp and pose.backend == "reference"
    assert maps.map_sigma == 2.0 and maps.features == "auto"
    assert fit.train_fraction == 0.4 and fit.backend == "reference" and fit.seed == 3 and fit.resolution is None
    d = _parse(["detect", "--model", "R", "x.png", "y.png"])
    assert d.images == ["x.png", "y.png"]
    assert config_from_flags(sj.PoseConfig, d, base=commands._DETECT_POSE).coarse == "render"
    f = _parse(["fit", "DATA", "--out", "RUN"])
    assert config_from_flags(sj.FitConfig, f) == sj.FitConfig()
    assert _parse(["demo"]).out == "demo_out"


# ----------------------------------------------------------------------------- bad inputs
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A run folder holding a small random model (enough for errors raised before any work)."""
    run = tmp_path_factory.mktemp("model")
    sj.save_ply(sj.init_random_gaussians(50, key=jax.random.key(0)), run / "model.ply")
    return run


def _toy_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(toy_dataset(), tmp_path / "data" / "01Toy"))


def _delete_test_image(root):
    (root / "test" / "Burrs" / "0.png").unlink()


def _break_json(root):
    (root / "transforms.json").write_text('{"camera_angle_x": 0.7, "frames": [')


def _truncate_train_image(root):
    p = root / "train" / "good" / "3.png"
    p.write_bytes(p.read_bytes()[:60])


def _jpeg_on_black(root):
    p = root / "test" / "good" / "1.png"
    rgba = Image.open(p).convert("RGBA")
    black = Image.new("RGB", rgba.size, (0, 0, 0))
    black.paste(rgba, mask=rgba.split()[3])
    buf = io.BytesIO()
    black.save(buf, format="JPEG")
    p.write_bytes(buf.getvalue())


def _text_as_png(root):
    (root / "note.png").write_text("not an image")


def _garbage_weights(root):
    (root / "weights.pth").write_bytes(b"\x00" * 64)


# (name, how to damage a copy of the toy dataset or None, argv with {data}/{model}/{tmp}, text the line names)
CASES = [
    ("missing data folder", None, ["fit", "{tmp}/nope", "--out", "{tmp}/run"], "nope"),
    ("not a dataset folder", None, ["fit", "{data}/test", "--out", "{tmp}/run"], "test"),
    ("negative iterations", None, ["fit", "{data}", "--out", "{tmp}/run", "--iterations", "-3"], "--iterations"),
    ("non-numeric iterations", None, ["fit", "{data}", "--out", "{tmp}/run", "--iterations", "abc"], "--iterations"),
    ("unknown backend", None, ["fit", "{data}", "--out", "{tmp}/run", "--backend", "bogus"], "--backend"),
    ("unknown flag", None, ["fit", "{data}", "--out", "{tmp}/run", "--bogus"], "--bogus"),
    ("upsampling resolution", None, ["fit", "{data}", "--out", "{tmp}/run", "--resolution", "64"], "--resolution"),
    ("resume with nothing to resume", None, ["fit", "{data}", "--out", "{tmp}/run", "--resume"], "run"),
    ("run folder inside the dataset", None, ["fit", "{data}", "--out", "{data}/run"], "inside the dataset"),
    ("malformed transforms.json", _break_json, ["fit", "{data}", "--out", "{tmp}/run"], "transforms.json"),
    ("truncated training image", _truncate_train_image, ["fit", "{data}", "--out", "{tmp}/run"], "3.png"),
    ("negative fine-pose steps", None, ["evaluate", "{data}", "--out", "{tmp}/o", "--steps", "-3"], "--steps"),
    ("negative map sigma", None, ["evaluate", "{data}", "--out", "{tmp}/o", "--map-sigma", "-1"], "--map-sigma"),
    ("two classes of one name", None, ["evaluate", "{data}", "{tmp}/data2/01Toy", "--out", "{tmp}/o"], "01Toy"),
    ("deleted test image, mask left", _delete_test_image, ["evaluate", "{data}", "--out", "{tmp}/o"], "0_mask.png"),
    ("JPEG on black named .png", _jpeg_on_black, ["evaluate", "{data}", "--out", "{tmp}/o"], "1.png"),
    ("missing test-pose file", None, ["evaluate", "{data}", "--out", "{tmp}/o", "--test-poses", "{tmp}/p.json"],
     "p.json"),
    ("model folder without a model", None, ["evaluate", "{data}", "--out", "{tmp}/o", "--model", "{tmp}"],
     "no fitted model"),
    ("garbage EfficientNet weights", _garbage_weights,
     ["evaluate", "{data}", "--out", "{tmp}/o", "--model", "{model}", "--features", "efficientnet",
      "--efficientnet-weights", "{data}/weights.pth"], "weights.pth"),
    ("missing query image", None, ["detect", "--model", "{model}", "{tmp}/q.png", "--out", "{tmp}/o"], "q.png"),
    ("text file as query image", _text_as_png, ["detect", "--model", "{model}", "{data}/note.png", "--out",
                                                 "{tmp}/o"], "note.png"),
    ("detect without a model", None, ["detect", "--model", "{tmp}/none", "{data}/test/good/0.png"], "none"),
]


@pytest.mark.parametrize("name, damage, argv, names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(name, damage, argv, names, tmp_path, model_dir, capsys):
    data = _toy_copy(tmp_path)
    if name == "two classes of one name":
        shutil.copytree(data, tmp_path / "data2" / "01Toy")
    if damage is not None:
        damage(data)
    before = tree_state(data)
    argv = [a.format(data=data, model=model_dir, tmp=tmp_path) for a in argv]
    status = _run(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[splatjax")]
    assert status == 2, err
    assert len(lines) == 1, err  # progress lines ("[splatjax] ...") aside, one line
    assert "Traceback" not in err and names in lines[0], err
    assert lines[0].startswith("splatjax") and ": error: " in lines[0], err
    assert tree_state(data) == before, "the dataset was modified"


def _run(argv) -> int:
    """Exit status of the command line (argparse errors end in SystemExit)."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return int(e.code)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(sj.DatasetError):
        cli.main(["fit", str(tmp_path / "nope"), "--out", str(tmp_path / "run"), "--debug"])


def test_every_case_is_distinct():
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)
