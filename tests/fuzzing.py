"""Hypothesis strategies that damage input files (truncations, byte flips, values of the
wrong type or shape in JSON), and a check that a call either works or fails with one line
naming the file (import as `from fuzzing import ...`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from splatjax.errors import UserError

#: bounded, reproducible runs for CI (no deadline: the first example compiles / warms caches)
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ_FEW = settings(FUZZ, max_examples=12)
#: for a test expected to fail (a known crash in a file another change owns): no shrinking
FUZZ_KNOWN_BAD = settings(FUZZ_FEW, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False)

# JSON values of every kind, including the non-finite numbers json.loads accepts
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.sampled_from([0, -1, 1e308, -0.0])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def tree_hash(root: Path) -> dict:
    """sha256 of every file under ``root`` (or of ``root`` itself)."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@st.composite
def damaged_bytes(draw, data: bytes, *, head: int | None = None) -> bytes:
    """``data`` truncated, with bytes flipped, or both. ``head``: flips land in the first
    ``head`` bytes half of the time (e.g. a PLY header)."""
    out = bytearray(data)
    kind = draw(st.sampled_from(["truncate", "flip", "both"]))
    if kind in ("flip", "both"):
        for _ in range(draw(st.integers(1, 4))):
            limit = len(out) - 1
            if head and draw(st.booleans()):
                limit = min(limit, head - 1)
            i = draw(st.integers(0, max(0, limit)))
            if out:
                out[i] ^= draw(st.integers(1, 255))
    if kind in ("truncate", "both"):
        out = out[: draw(st.integers(0, max(0, len(out) - 1)))]
    return bytes(out)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):  # a few items of long lists suffice
            yield from _paths(v, prefix + (i,))


@st.composite
def damaged_json(draw, obj) -> str:
    """JSON text of ``obj`` with one value (anywhere, also the whole) replaced by a value of
    any type, removed (in a dict) or its container resized, or the text cut or flipped."""
    import copy

    mode = draw(st.sampled_from(["replace", "replace", "delete", "bytes"]))
    text = json.dumps(obj)
    if mode == "bytes":
        return draw(damaged_bytes(text.encode())).decode("utf-8", errors="replace")
    obj = copy.deepcopy(obj)
    path = draw(st.sampled_from(list(_paths(obj))))
    if not path:
        return json.dumps(draw(json_values))
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if mode == "delete":  # a key of a dict, an item of a list
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return json.dumps(obj)  # NaN/Infinity written as such (json.loads reads them)


def works_or_one_line_error(fn, *names) -> object:
    """``fn()``'s result, or None after a UserError whose message is one line naming one of
    ``names`` (file names or paths). Any other exception propagates (a failing example)."""
    try:
        return fn()
    except UserError as e:
        msg = str(e)
        assert msg.strip() and "\n" not in msg.strip(), f"message is not one line: {msg!r}"
        assert any(str(n) in msg for n in names), f"message names none of {names}: {msg!r}"
        return None


class WorkStarted(Exception):
    """Raised by a patched first step of a command's real work: its input checks passed
    (or came too late)."""


def _refuse_work(*args, **kwargs):
    raise WorkStarted


def refuse_work(monkeypatch, *targets: tuple[str, str]) -> None:
    """Patch each (module name, attribute) of ``targets`` to raise :class:`WorkStarted`."""
    import importlib

    for module, name in targets:
        monkeypatch.setattr(importlib.import_module(module), name, _refuse_work)
