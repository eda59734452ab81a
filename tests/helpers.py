"""What the tests in every folder share: the repository's root, and a ``learned.safetensors`` without training.

The test folders have no ``__init__.py``: pytest puts ``tests/`` (the folder of the top ``conftest.py``) on
``sys.path``, so ``from helpers import ROOT``, ``fake_data``, ``seeded_models`` and ``toy_run`` import from
any folder below it. For the same reason a test file's name must be unique across the folders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository
GOLDEN_DIR = ROOT / "tests" / "golden"  # what the official code computed (each file's NOTE says how)
#: every shipped config and overlay, at any depth (configs/kapt/no_head/dtd.py...): the one glob that the
#: config tests filter; configs/_base_/ and the _partial.py files that configs import are not configs
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.py") if "_base_" not in p.parts and not p.name.startswith("_"))


def configs_under(folder: str) -> list[Path]:
    """The configs of :data:`CONFIGS` under ``configs/<folder>`` (sub-folders included)."""
    top = ROOT / "configs" / folder
    return [p for p in CONFIGS if top in p.parents]


def config_id(path: Path) -> str:
    """``coop/dtd``, ``kapt/no_head/dtd``: a config's test id."""
    return path.relative_to(ROOT / "configs").with_suffix("").as_posix()


def write_learned(path: str | Path, learner: str = "coop", class_names: Sequence[str] = ("red circle", "blue star",
                  "sea lion"), *, backbone: dict | None = None, config: str | None = None, seed: int = 3,
                  **hparams) -> Path:
    """A ``learned.safetensors`` as ``tools/train.py`` writes it, without training: the learned parameters
    of ``learner`` (built with ``hparams`` on ``backbone``, by default the random-init ``test-tiny``), each
    moved off its initial value by a seeded random step, and the same metadata (backbone, learner and its
    hyper-parameters, class names, backbone info, protocol, config, epoch and iteration)."""
    import torch

    from vlprompt.backbones import save_safetensors
    from vlprompt.engine import PromptModel
    from vlprompt.engine.hooks import to_plain

    torch.manual_seed(seed)
    model = PromptModel(backbone or dict(name="test-tiny", pretrained=None), dict(type=learner, **hparams),
                        list(class_names))
    state = model.learner.learned_state_dict()
    with torch.no_grad():
        for value in state.values():
            if value.is_floating_point():
                value.add_(torch.randn_like(value))
    meta = {**model.metadata(), "protocol": {}, "config": config, "epoch": 1, "iter": 1}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(state, path, {"vlprompt": json.dumps(to_plain(meta))})
    return path
