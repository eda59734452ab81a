"""The shared helpers: vlprompt.io (atomic write, config hash), init_distributed."""

import json

import pytest

from vlprompt.cli import UsageError
from vlprompt.engine.compat import init_distributed
from vlprompt.io import atomic_write, atomic_write_json, atomic_write_text


def test_atomic_write_text_json_bytes_and_callable(tmp_path):
    out = tmp_path / "sub" / "a.txt"
    assert atomic_write_text(out, "héllo\n") == out and out.read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "b.json", {"x": 1}, indent=2)
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": 1}
    atomic_write(tmp_path / "c.bin", b"\x00\x01")
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    seen = []
    atomic_write(tmp_path / "d.png", lambda tmp: (seen.append(tmp.suffix), tmp.write_text("img")), suffix=".png")
    assert seen == [".png"] and (tmp_path / "d.png").read_text() == "img"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "c.bin", "d.png", "sub"]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "state.json"
    out.write_text("old")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(out, broken)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_init_distributed_without_a_launcher_or_rank(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert init_distributed("none") == (0, 1)
    assert init_distributed("pytorch") == (0, 1)  # left to the Runner
    with pytest.raises(UsageError, match=r"--launcher pytorch: start the tool with torchrun \(torchrun "
                       r"--nproc_per_node N tools/tta.py CONFIG --launcher pytorch\); RANK is not set"):
        init_distributed("pytorch", start_on_gpu=True, tool="tools/tta.py")


def test_markdown_table_and_csv(tmp_path):
    from vlprompt.tables import markdown_table, write_tables

    md = markdown_table(["a", "b"], [[1, "x"], ["", 2.5]], "T")
    assert md == "### T\n\n| a | b |\n|---|---|\n| 1 | x |\n|  | 2.5 |\n"
    files = write_tables(tmp_path, "t", md, ["a", "b"], [[1, "x"], {"b": 2}])
    assert files["md"].read_text() == md and files["csv"].read_bytes() == b"a,b\r\n1,x\r\n,2\r\n"



def test_config_hash_keeps_the_values_of_both_former_hashes():
    import hashlib
    import json

    from vlprompt.io import config_hash

    cfg = {"b": [1, 2.5], "a": {"z": None}}
    compact = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    assert config_hash(cfg) == hashlib.sha256(compact.encode()).hexdigest()  # sweeps
    spaced = json.dumps(cfg, sort_keys=True)
    assert config_hash(cfg, length=16, compact=False) == hashlib.sha256(spaced.encode()).hexdigest()[:16]  # meta
