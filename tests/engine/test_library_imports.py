"""The library without the trainer: loading a prompted CLIP, classifying, and reading what training
wrote (``learned.safetensors``) import neither mmengine nor the test-time adapters.

Each check runs in a fresh interpreter (this one has imported both long ago).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from helpers import ROOT

from vlprompt.backbones import save_safetensors

HEAVY = ("mmengine", "vlprompt.adapters", "vlprompt.engine")


def _run(code: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _learned(path: Path) -> Path:
    """A ``learned.safetensors`` as training writes it (test-tiny CoOp, moved context), as
    tests/test_tta_tool.py writes one."""
    from vlprompt.engine import PromptModel
    from vlprompt.engine.hooks import to_plain

    torch.manual_seed(3)
    model = PromptModel(dict(name="test-tiny", pretrained=None), dict(type="coop", n_ctx=4),
                        ["red circle", "blue star", "sea lion"])
    state = model.learner.learned_state_dict()
    with torch.no_grad():
        for value in state.values():
            value.add_(torch.randn_like(value))
    save_safetensors(state, path, {"vlprompt": json.dumps(to_plain(model.metadata()))})
    return path


LOADED = f"""
import json, sys
print(json.dumps({{"heavy": sorted(m for m in sys.modules if m.split(".")[0] == "mmengine"
                                  or m.startswith({HEAVY[1:]!r})), "result": result}}))
"""


def test_the_toy_classifier_imports_no_trainer_and_no_adapter():
    code = """
import numpy as np
import vlprompt
from vlprompt.toyworld import render, sample_scene

clf = vlprompt.load_prompted_clip("toy")
rng = np.random.default_rng(0)
names = ["red circle", "blue star", "green square"]
scenes = [sample_scene(rng, shape=s, colour=c, n_objects=1) for c, s in (n.split() for n in names)]
images = [__import__("PIL.Image").Image.fromarray(render(scene, 64, i)) for i, scene in enumerate(scenes)]
probs = clf.classify(images, names)
result = {"shape": list(probs.shape), "sums": [round(float(s), 4) for s in probs.sum(-1)]}
""" + LOADED
    out = _run(code)
    assert out["result"] == {"shape": [3, 3], "sums": [1.0, 1.0, 1.0]}
    assert out["heavy"] == []


def test_reading_and_loading_a_learned_file_imports_no_trainer_and_no_adapter(tmp_path):
    path = _learned(tmp_path / "learned.safetensors")
    from vlprompt.engine.checkpoint import read_learned

    state, meta = read_learned(path)
    code = f"""
import torch
import vlprompt
from vlprompt.learned import read_learned

state, meta = read_learned({str(path)!r})
clf = vlprompt.load_prompted_clip({str(path)!r})
probs = clf.classify(torch.randn(2, 3, 32, 32), meta["class_names"])
result = {{"keys": sorted(state), "learner": meta["learner"]["type"], "names": meta["class_names"],
          "same": bool(torch.equal(clf.learner.ctx.detach(), state["ctx"])), "shape": list(probs.shape)}}
""" + LOADED
    out = _run(code)
    assert out["result"] == {"keys": sorted(state), "learner": "coop", "names": meta["class_names"], "same": True,
                             "shape": [2, 3]}
    assert out["heavy"] == []


def test_without_mmengine_names_resolve_only_among_registered_ones_and_join_mmengine_unchanged():
    code = """
import sys
import vlprompt.learners
from vlprompt.registry import DATASETS, LEARNERS, UnregisteredNameError

refused = []
for name in ("logging.basicConfig", "torch.hub.load", "os.system", "nope.registry", "copo"):
    try:
        LEARNERS.get(name)
    except UnregisteredNameError as err:
        refused.append(name if "is not a registered learner" in str(err) else str(err))
found = [LEARNERS.get(k).__name__ for k in ("coop", "vlprompt.coop", "vlprompt.learners.coop.CoOp")]
before = {"learners": list(LEARNERS.module_dict), "datasets": list(DATASETS.module_dict)}
light = "mmengine" not in sys.modules
import mmengine.registry
import vlprompt.engine
after = {"learners": list(LEARNERS.module_dict), "datasets": list(DATASETS.module_dict)}
result = {"refused": refused, "found": found, "light": light, "same": before == after,
          "mm": [mmengine.registry.MODELS.get("vlprompt.coop").__name__,
                 mmengine.registry.DATASETS.get("LabelledSubset").__name__,
                 mmengine.registry.DATA_SAMPLERS.get("TaskBalancedSampler").__name__]}
print(__import__("json").dumps({"heavy": [], "result": result}))
"""
    out = _run(code)["result"]
    assert out["refused"] == ["logging.basicConfig", "torch.hub.load", "os.system", "nope.registry", "copo"]
    assert out["found"] == ["CoOp"] * 3 and out["light"] and out["same"]
    assert out["mm"] == ["CoOp", "LabelledSubset", "TaskBalancedSampler"]


def test_the_engine_reexports_the_library_reader():
    import vlprompt.engine.checkpoint as engine_checkpoint
    import vlprompt.learned as learned

    for name in ("read_learned", "read_vlprompt_safetensors", "load_learner", "learner_spec", "BACKBONE_KEYS"):
        assert getattr(engine_checkpoint, name) is getattr(learned, name)
