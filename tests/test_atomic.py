"""compiler/atomic.py: a file or folder is replaced whole or not at all, and nothing half-written is left behind."""
import stat

import pytest

from compiler import atomic


def test_staged_file_replaces_the_file_whole_and_readable(tmp_path):
    final = tmp_path / "sub" / "model.onnx"
    with atomic.staged_file(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".model.onnx.") and not final.exists()
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"
    assert stat.S_IMODE(final.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert sorted(p.name for p in final.parent.iterdir()) == ["model.onnx"]


def test_staged_file_keeps_the_old_file_when_the_writer_fails(tmp_path):
    final = tmp_path / "model.onnx"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="exporter failed"):
        with atomic.staged_file(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("exporter failed")
    assert final.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_write_text_and_json(tmp_path):
    atomic.write_text(tmp_path / "a.txt", "one\n")
    atomic.write_text(tmp_path / "a.txt", "two\n")
    atomic.write_json(tmp_path / "b.json", {"b": 1, "a": 2})
    assert (tmp_path / "a.txt").read_text() == "two\n"
    assert (tmp_path / "b.json").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.json"]
