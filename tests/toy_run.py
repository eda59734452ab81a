"""A short toy CoOp training run through tools/train.py, shared by the engine tests."""

import uuid
from pathlib import Path

from helpers import ROOT
from tool_loader import load_tool

train_tool = load_tool("train")  # tools/train.py, by its file
CONFIG = str(ROOT / "configs/coop/toy_shapes.py")
# A small, fast variant of the toy CoOp run: random-init tiny backbone, 2 shots per class.
FAST = [
    "model.backbone.name=test-tiny", "model.backbone.pretrained=None",
    "train_dataloader.dataset.num_shots=2", "train_dataloader.batch_size=8",
    "test_dataloader.batch_size=200", "default_hooks.logger.interval=1",
]


def train(work_dir: Path, *options: str, epochs: int = 2, resume: bool = False, test: bool = True) -> dict:
    """``tools/train.py`` on the toy config with :data:`FAST` settings; ``test=False`` adds ``--no-test``."""
    argv = [CONFIG, "--work-dir", str(work_dir), "--cfg-options", *FAST, f"train_cfg.max_epochs={epochs}",
            f"experiment_name=run_{uuid.uuid4().hex[:8]}", *options]
    return train_tool.main(argv + (["--resume"] if resume else []) + ([] if test else ["--no-test"]))
