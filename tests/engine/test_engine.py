"""The training engine: schedule, checkpoints, resume, NaN stop, and two-process training."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT
from safetensors import safe_open
from tool_loader import load_tool

import vlprompt
from vlprompt.engine import NaNGuardHook, WarmupCosineLR, dassl_lr
from vlprompt.engine.checkpoint import load_learner, read_learned
from vlprompt.evaluation.report import harmonic_mean

test_tool = load_tool("test")  # tools/test.py, by its file
from toy_run import CONFIG, FAST  # noqa: E402
from toy_run import train as _train  # noqa: E402


def test_schedule_is_dassls_constant_warmup_then_per_epoch_cosine():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.002)
    scheduler = WarmupCosineLR(optimizer, end=200)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    # CoOp#26's log: 1e-5 for the warm-up epoch, then 2e-3, then the cosine over 200 epochs
    assert lrs[0] == 1e-5 and lrs[1] == 0.002
    assert lrs[2] == pytest.approx(0.001 * (1 + math.cos(math.pi / 200)))
    assert lrs[3] == pytest.approx(dassl_lr(3, 0.002, 200))
    assert dassl_lr(199, 0.002, 200) > 0  # never reaches 0


def test_iters_per_shot_sets_max_iters_and_spans_the_scheduler_over_the_run():
    from vlprompt.engine.runner import iterations_for_shots

    loader = dict(dataset=dict(num_shots=4))
    train_cfg, scheduler = iterations_for_shots(dict(by_epoch=False, iters_per_shot=500, val_interval=9), loader,
                                                dict(type="CosineAnnealingLR", eta_min=1e-6, by_epoch=False))
    assert train_cfg == dict(by_epoch=False, max_iters=2000, val_interval=9)  # CLIP-LoRA: 500 x shots
    assert scheduler["end"] == 2000  # T_max of the official cosine = the whole run
    kept = dict(type="CosineAnnealingLR", by_epoch=False, end=7)
    assert iterations_for_shots(dict(by_epoch=False, iters_per_shot=2), loader, [kept])[1] == [kept]
    plain = dict(by_epoch=True, max_epochs=3)
    assert iterations_for_shots(plain, loader, None) == (plain, None)  # no iters_per_shot: untouched
    with pytest.raises(ValueError, match="num_shots is None"):
        iterations_for_shots(dict(by_epoch=False, iters_per_shot=5), dict(dataset=dict()))
    with pytest.raises(ValueError, match="by_epoch=False"):
        iterations_for_shots(dict(iters_per_shot=5), loader)
    with pytest.raises(ValueError, match="whole number"):
        iterations_for_shots(dict(by_epoch=False, iters_per_shot=0.5), loader)


def test_train_then_checkpoint_round_trip_and_novel_test(tmp_path):
    metrics = _train(tmp_path / "run")
    assert set(metrics) == {"base/top1", "base/ece", "novel/top1", "novel/ece", "hm"}
    assert metrics["hm"] == pytest.approx(harmonic_mean(metrics["base/top1"], metrics["novel/top1"]))
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results["run"]["protocol"]["name"] == "base2novel"
    assert results["run"]["model"]["learner"]["type"] == "coop"
    assert results["run"]["model"]["class_names"][0] == "red circle"  # base classes of toy-shapes

    # the release file holds only the learned context, with what is needed to rebuild the model
    learned = tmp_path / "run/learned.safetensors"
    with safe_open(str(learned), framework="pt") as f:
        assert list(f.keys()) == ["ctx"]
    state, meta = read_learned(tmp_path / "run/epoch_2.pth")  # mmengine checkpoint, weights_only
    assert list(state) == ["ctx"] and meta["class_names"][0] == "red circle"
    assert torch.equal(state["ctx"], read_learned(learned)[0]["ctx"])

    learner = load_learner(learned)
    assert len(learner.class_names) == 20 and torch.equal(learner.ctx, state["ctx"])
    clf = vlprompt.load_prompted_clip(learned)
    probs = clf.classify(torch.randn(3, 3, 32, 32), ["blue heart", "a novel thing"])
    assert probs.shape == (3, 2) and torch.equal(clf.learner.ctx, state["ctx"])

    novel = test_tool.main([CONFIG, str(learned), "--subsample", "novel", "--work-dir", str(tmp_path / "run"),
                            "--out", str(tmp_path / "novel.json"), "--cfg-options", *FAST])
    assert novel["accuracy/top1"] == pytest.approx(metrics["novel/top1"])
    record = json.loads((tmp_path / "novel.json").read_text())
    assert record["run"]["subsample"] == "novel" and record["run"]["model"]["class_names"][0] == "yellow circle"


@pytest.mark.slow  # two 3-epoch runs, one resumed (the default run trains in the round-trip test)
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    straight = _train(tmp_path / "straight", epochs=3)
    # the same run stopped after epoch 2 (its checkpoint and schedule are those of a 3-epoch run) ...
    stopped = tmp_path / "stopped"
    _train_until(stopped, stop_after=2, epochs=3)
    assert (stopped / "epoch_2.pth").exists() and not (stopped / "epoch_3.pth").exists()
    # ... and resumed from its last checkpoint
    resumed = _train(stopped, epochs=3, resume=True)
    a = read_learned(tmp_path / "straight/learned.safetensors")[0]["ctx"]
    b = read_learned(stopped / "learned.safetensors")[0]["ctx"]
    assert torch.equal(a, b)
    assert resumed == straight


class _Stop(Exception):
    pass


def _train_until(work_dir: Path, stop_after: int, epochs: int) -> None:
    from mmengine.hooks import Hook

    class StopAfter(Hook):
        priority = "LOWEST"  # after the checkpoint of the epoch is written

        def after_train_epoch(self, runner):
            if runner.epoch + 1 >= stop_after:  # runner.epoch counts finished epochs after this hook
                raise _Stop

    import vlprompt.engine as engine  # tools/train.py takes build_runner from here when main() runs

    original = engine.build_runner

    def build_with_stop(cfg, launcher="none"):
        runner = original(cfg, launcher)
        runner.register_hook(StopAfter())
        return runner

    engine.build_runner = build_with_stop
    try:
        with pytest.raises(_Stop):
            _train(work_dir, epochs=epochs)
    finally:
        engine.build_runner = original


def test_nan_loss_stops_with_the_step(tmp_path):
    class FakeRunner:
        epoch, iter = 2, 17

    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 3, iteration 5 \(training step 18\)"):
        NaNGuardHook().after_train_iter(FakeRunner(), 4, outputs={"loss": torch.tensor(float("nan"))})
    NaNGuardHook().after_train_iter(FakeRunner(), 4, outputs={"loss": torch.tensor(1.0)})
    # end to end: an absurd learning rate drives the loss to inf/nan and training stops
    with pytest.raises(FloatingPointError, match="training step"):
        _train(tmp_path / "nan", "optim_wrapper.optimizer.lr=1e30", epochs=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three torchrun launches (45 s)
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """gloo on CPU: 2 ranks x 4 images equal 1 rank x 8 images (deterministic inputs)."""
    common = [*FAST, "train_dataloader.dataset.transform=test", "train_cfg.max_epochs=3", "test_dataloader=None"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = [sys.executable, "tools/train.py", CONFIG, "--work-dir", str(tmp_path / "one"), "--no-test",
              "--cfg-options", *common, "train_dataloader.batch_size=8"]
    double = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
              "tools/train.py", CONFIG, "--launcher", "pytorch", "--work-dir", str(tmp_path / "two"), "--no-test",
              "--cfg-options", *common, "train_dataloader.batch_size=4"]
    # control: one process with half the batch takes other steps, so the tolerance is meaningful
    half = [*single[:4], str(tmp_path / "half"), *single[5:-1], "train_dataloader.batch_size=4"]
    for cmd in (single, double, half):
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two, other = (read_learned(tmp_path / name / "learned.safetensors")[0]["ctx"]
                       for name in ("one", "two", "half"))
    assert (one - two).abs().max().item() < 1e-5  # stated tolerance: float summation order only
    assert (one - other).abs().max().item() > 1e-4
