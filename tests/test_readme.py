"""The README's library snippet runs as written (in a temporary working folder)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _library_snippet() -> str:
    text = README.read_text()
    section = text.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_library_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_library_snippet(), "README.md (Library)", "exec"), namespace)
    metrics = namespace["sj"].evaluate_detection(namespace["maps"].scores, namespace["maps"].maps,
                                                 namespace["data"].test.labels, namespace["data"].test.masks)
    assert 0.0 <= metrics.image_auroc <= 1.0 and metrics.pixel_auroc > 0.5
    assert namespace["rgbs"].shape == (len(namespace["data"].train), 64, 64, 3)
    assert "DetectionMetrics" in capsys.readouterr().out
