"""Issue 30 item 2: a finished run is reused only while every file its config names holds the same
bytes: a knowledge file under the data root, a ``load_from`` ``.pth``, a backbone weights file, edited
in place (same path, even the same size within the same second), stop the sweep instead of being
reused. No training: the sweep's work is a stand-in that counts its calls."""

from __future__ import annotations

import os

import pytest
from helpers import ROOT

KAPT_DTD = ROOT / "configs" / "kapt" / "dtd.py"
COOP_SHAPES = ROOT / "configs" / "coop" / "toy_shapes.py"


def _rewrite_same_size_same_second(path, data: bytes) -> None:
    """Rewrite ``path`` with ``data`` (same length) and put its whole-second mtime back, as an edit
    within the same second would leave it."""
    before = os.stat(path)
    assert len(data) == before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, int(before.st_mtime) * 10**9 + 500_000_000))


@pytest.mark.parametrize("name, key, options", [
    ("dtd/knowledge.tsv", "model.learner.knowledge.file", []),  # relative to the data root
    ("init.pth", "load_from", ["load_from={path}"]),
    ("weights.bin", "model.backbone.pretrained", ["model.backbone.pretrained={path}"]),
])
def test_a_file_the_config_names_is_keyed_on_its_bytes(tmp_path, name, key, options):
    from vlprompt.engine.sweep import effective_config

    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"class\tdescription one\n")
    os.utime(path, ns=(0, 1_700_000_000 * 10**9))
    config = KAPT_DTD if key.startswith("model.learner.knowledge") else COOP_SHAPES
    opts = [f"data_root={tmp_path}"] + [o.format(path=path) for o in options]
    first = effective_config(config, opts)
    assert key in first["input_files"], first.get("input_files")
    assert effective_config(config, opts) == first
    _rewrite_same_size_same_second(path, b"class\tdescription two\n")
    assert effective_config(config, opts)["input_files"][key] != first["input_files"][key]


def test_a_sweep_reuses_a_run_only_while_its_knowledge_file_is_unchanged(tmp_path):
    from vlprompt.engine.sweep import SweepRun, plan_runs, run_or_reuse

    knowledge = tmp_path / "data" / "dtd" / "knowledge.tsv"
    knowledge.parent.mkdir(parents=True)
    knowledge.write_text("banded\tstripes of colour\n")

    def sweep_run() -> SweepRun:
        return SweepRun(tmp_path / "runs" / "kapt" / "dtd" / "seed1", KAPT_DTD, [f"data_root={tmp_path / 'data'}"])

    calls = []
    run = plan_runs([sweep_run()])[0]
    run.run_dir.mkdir(parents=True)
    run_or_reuse(run, lambda: calls.append(1) or {"base": 50.0})
    assert run_or_reuse(plan_runs([sweep_run()])[0], lambda: calls.append(1) or {"base": 60.0})[1]  # reused
    assert len(calls) == 1
    _rewrite_same_size_same_second(knowledge, b"banded\tstripes of colouR\n")
    with pytest.raises(SystemExit, match=r"input_files\.model\.learner\.knowledge\.file"):
        plan_runs([sweep_run()])
    assert len(calls) == 1
