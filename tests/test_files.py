"""splatjax.files (atomic writes, the JSON reader, required paths) and splatjax.errors."""

from __future__ import annotations

import os

import pytest

from splatjax.errors import ConfigError, DatasetError, DatasetNotFoundError, UserError, WeightsError
from splatjax.files import atomic_write, read_json, require_dir, require_file, write_json


def test_atomic_write_content_kinds(tmp_path):
    assert atomic_write(tmp_path / "a" / "b.txt", "héllo") == tmp_path / "a" / "b.txt"
    assert (tmp_path / "a" / "b.txt").read_text("utf-8") == "héllo"
    atomic_write(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "d.bin", lambda f: f.write(b"xyz"))
    assert (tmp_path / "d.bin").read_bytes() == b"xyz"
    write_json(tmp_path / "e.json", {"k": [1, 2.5]})
    assert read_json(tmp_path / "e.json") == {"k": [1, 2.5]}
    assert (tmp_path / "e.json").read_text().endswith("\n")


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.txt"
    atomic_write(target, "old")

    def half(f):
        f.write(b"new but incomp")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.txt"]


def test_read_json_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="pose file .* does not exist"):
        read_json(tmp_path / "none.json", "pose file")
    with pytest.raises(FileNotFoundError):          # still a FileNotFoundError for old callers
        read_json(tmp_path / "none.json")
    with pytest.raises(DatasetNotFoundError, match="is not a file"):
        read_json(tmp_path)
    (tmp_path / "bad.json").write_text('{"a": 1,\n "b": }')
    with pytest.raises(DatasetError, match=r"malformed JSON in .*bad.json.*line 2, column 7"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(DatasetError, match="is not UTF-8 text"):
        read_json(tmp_path / "latin.json")
    if os.geteuid() != 0:
        (tmp_path / "locked.json").write_text("{}")
        (tmp_path / "locked.json").chmod(0)
        with pytest.raises(DatasetError, match="permission denied"):
            read_json(tmp_path / "locked.json")


def test_require_paths(tmp_path):
    assert require_dir(tmp_path, "folder") == tmp_path
    (tmp_path / "f").write_text("x")
    assert require_file(tmp_path / "f", "file") == tmp_path / "f"
    with pytest.raises(DatasetNotFoundError, match="dataset folder .*f' is not a folder"):
        require_dir(tmp_path / "f", "dataset folder")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        require_file(tmp_path / "g", "image")


def test_error_family():
    for cls in (DatasetError, DatasetNotFoundError, ConfigError, WeightsError):
        assert issubclass(cls, UserError)
    assert issubclass(DatasetError, ValueError) and issubclass(DatasetNotFoundError, FileNotFoundError)
    e = ConfigError("coarse_resolution", "must be >= 8 (got 2)", owner="PoseConfig")
    assert str(e) == "PoseConfig.coarse_resolution: must be >= 8 (got 2)"
    assert e.flag == "--coarse-resolution" and e.option == "coarse_resolution"
    assert e.detail == "must be >= 8 (got 2)"
