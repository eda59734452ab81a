"""tools/tta.py: test-time adaptation over a test set, from a config (and a checkpoint), in one or
two processes, with its results, tables and errors.

Everything runs on the random-init ``test-tiny`` CLIP (32 px) over a few toy-world samples; RLCF's
teacher is another ``test-tiny`` (the toy teacher's weights are not needed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, config_id, write_learned
from tool_loader import load_tool

from vlprompt.adapters import run as tta_run
from vlprompt.errors import ConfigError, UserError

tta = load_tool("tta")  # tools/tta.py: the arguments and the table (the loop is vlprompt.adapters.run)

TPT_CONFIG = "configs/tpt/toy_shapes_noise.py"
RLCF_CONFIG = "configs/rlcf/toy_shapes_noise.py"
TINY = ["model.backbone.name=test-tiny", "model.backbone.pretrained=None"]
TINY_TEACHER = ["adapter.teacher.name=test-tiny", "adapter.teacher.pretrained=None"]
FOUR_VIEWS = ["views.n_views=4", "adapter.selection_p=0.5"]  # int(4 x 0.5) = 2 views selected
TTA_DATASETS = ("imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r", "caltech101", "dtd",
                "eurosat", "fgvc-aircraft", "food101", "oxford-flowers", "oxford-pets", "stanford-cars", "sun397",
                "ucf101", "toy-shapes-noise", "toy-shapes-night", "toy-shapes-sketch", "toy-hues")
# composed runs (vlprompt.engine.compose): configs/<method>/<dataset>.py need no file
TTA_CONFIGS = [ROOT / "configs" / m / f"{d.replace('-', '_')}.py" for m in ("tpt", "rlcf") for d in TTA_DATASETS]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _results(work_dir: Path) -> dict:
    return json.loads((work_dir / "results.json").read_text())


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("path", TTA_CONFIGS, ids=config_id)
def test_tta_configs_follow_the_published_recipes(path):
    from vlprompt.engine import load_config

    cfg = load_config(path)
    method, name = path.parent.name, cfg.test_dataloader.dataset.name
    assert cfg.adapter.type == method and cfg.adapter.variant == "prompt" and cfg.adapter.selection_p == 0.1
    assert cfg.model.learner == dict(type="coop", n_ctx=4, ctx_init="a photo of a")
    if method == "tpt":
        assert (cfg.adapter.steps, cfg.adapter.lr, cfg.adapter.weight_decay) == (1, 5e-3, 0.01)
    else:
        fine = not name.startswith(("imagenet", "toy-"))
        assert (cfg.adapter.steps, cfg.adapter.lr, cfg.adapter.weight_decay) == (5 if fine else 3, 7e-3, 5e-4)
        assert cfg.adapter.sample_k == 3
        teacher = ("toy", "toy-teacher") if name.startswith("toy-") else ("ViT-L-14", "openai")
        assert (cfg.adapter.teacher.name, cfg.adapter.teacher.pretrained) == teacher
    if name.startswith("toy-"):
        assert cfg.model.backbone.name == "toy" and cfg.views.n_views == 32
    else:
        assert cfg.model.backbone == dict(name="ViT-B-16", pretrained="openai") and cfg.views.n_views == 64
    assert cfg.views.augmix is None  # TPT's rule decides: AugMix outside the ImageNet family


# ------------------------------------------------------------------------------------------ runs
@pytest.mark.slow  # torch.distributed launches of tools/tta.py (25 s each)
@pytest.mark.parametrize("config", [TPT_CONFIG, "configs/zero/toy_shapes_noise.py"], ids=["tpt", "zero"])
def test_two_gloo_processes_give_the_predictions_of_one(tmp_path, config):
    """torchrun with 2 CPU ranks: each adapts its share (r::2) and rank 0 gathers; the predictions and
    the accuracy of an episodic adapter (tuning or training-free) equal a 1-process run's (each sample's views
    depend on its index and the seed only)."""
    common = [config, "--limit", "10", "--cfg-options", *TINY, *FOUR_VIEWS]
    single = [sys.executable, "tools/tta.py", *common[:3], "--work-dir", str(tmp_path / "one"), *common[3:]]
    double = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
              "tools/tta.py", *common[:3], "--launcher", "pytorch", "--work-dir", str(tmp_path / "two"), *common[3:]]
    for cmd in (single, double):
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert one["samples"]["count"] == two["samples"]["count"] == 10
    assert (one["processes"], two["processes"]) == (1, 2)
    assert len({i for i, _ in one["predictions"]}) == 10
    assert two["predictions"] == one["predictions"]
    assert two["metrics"]["accuracy/top1"] == one["metrics"]["accuracy/top1"]


def test_a_run_writes_results_with_top1_and_seconds_per_sample(tmp_path):
    rows = tta.main([TPT_CONFIG, "--limit", "4", "--work-dir", str(tmp_path), "--cfg-options", *TINY, *FOUR_VIEWS])
    record = _results(tmp_path)
    assert set(record["metrics"]) == {"accuracy/top1", "accuracy/ece", "sec_per_sample", "views_sec_per_sample"}
    assert record["metrics"]["sec_per_sample"] > 0
    assert record["run"]["dataset"] == "toy-shapes-noise" and record["run"]["model"]["learner"]["type"] == "coop"
    assert record["adapter"]["type"] == "tpt"
    assert record["views"] == {"n_views": 4, "augmix": True, "crop_scale": [0.25, 1.0]}  # the toy TPT configs
    assert record["samples"] == {"count": 4, "of": 1200, "limit": 4, "seed": 1}
    labels = {i: label for i, label in enumerate(it.label for it in _dataset("toy-shapes-noise").items)}
    correct = sum(labels[i] == p for i, p in record["predictions"])
    assert record["metrics"]["accuracy/top1"] == pytest.approx(100 * correct / 4) == rows[0]["top1"]
    # the seeded draw covers the test set, not its first class
    assert len({labels[i] for i, _ in record["predictions"]}) > 1
    # ECE (15 bins) from each prediction's recorded confidence; the reliability diagram beside the results
    from vlprompt.engine.metrics import expected_calibration_error

    confidence = torch.tensor(record["confidences"])
    correct = torch.tensor([labels[i] == p for i, p in record["predictions"]])
    assert len(confidence) == 4 and ((confidence > 0) & (confidence <= 1)).all()
    # the recorded confidences have 6 decimals: the ECE from them is within 1e-4 points of the exact one
    assert record["metrics"]["accuracy/ece"] == pytest.approx(expected_calibration_error(confidence, correct), abs=1e-4)
    assert rows[0]["ece"] == pytest.approx(record["metrics"]["accuracy/ece"]) and rows[0]["peak_memory_mb"] > 0
    assert (tmp_path / "reliability.png").stat().st_size > 5_000


def _dataset(name: str):
    from vlprompt.datasets import build_dataset

    return build_dataset(name, split="test", transform=None, progress=False)


def test_without_steps_the_prediction_is_the_learners_on_view_0(tmp_path):
    """``adapter.steps=0`` is the zero-shot reference: the prompt's own prediction of view 0."""
    from vlprompt.adapters import TPTViews, default_prompt_learner
    from vlprompt.backbones import build_clip

    tta.main([TPT_CONFIG, "--limit", "3", "--work-dir", str(tmp_path), "--cfg-options", *TINY, "adapter.steps=0"])
    record = _results(tmp_path)
    data = _dataset("toy-shapes-noise")
    torch.manual_seed(1)  # the tool seeds the random-weight backbone with the config's seed
    learner = default_prompt_learner(build_clip("test-tiny"), data.classnames)
    views = TPTViews.for_backbone(learner.backbone, n_views=1)
    with torch.no_grad():
        expected = [[i, int(learner(views(data.load_image(data.items[i].impath))).argmax())]
                    for i, _ in record["predictions"]]
    assert record["predictions"] == expected


def test_several_configs_give_a_table_and_rlcf_runs_with_a_given_teacher(tmp_path):
    options = [*TINY, *FOUR_VIEWS, *TINY_TEACHER]
    rows = tta.main([RLCF_CONFIG, "--datasets", "toy-shapes-noise", "toy-shapes-night", "--limit", "3",
                     "--work-dir", str(tmp_path), "--cfg-options", *options])
    assert [(r["method"], r["dataset"]) for r in rows] == [("rlcf-prompt", "toy-shapes-noise"),
                                                           ("rlcf-prompt", "toy-shapes-night")]
    for name in ("toy_shapes_noise_toy_shapes_noise", "toy_shapes_noise_toy_shapes_night"):
        assert _results(tmp_path / name)["adapter"]["teacher"]["name"] == "test-tiny"
    md = (tmp_path / "tta.md").read_text()
    assert "| rlcf-prompt | toy-shapes-night | 3 / 1200 | 4 |" in md and "| average (2) |" in md
    assert "**" not in md.split("settings that differ")[0]  # one method: no rival, nothing bold
    lines = (tmp_path / "tta.csv").read_text().splitlines()
    assert lines[0].startswith("method,dataset,samples") and len(lines) == 3


def test_a_checkpoint_learner_is_adapted_on_the_test_sets_classes(tmp_path):
    """The checkpoint's context is what the adapter tunes, over the 40 test classes (the file has 3)."""
    path = write_learned(tmp_path / "learned.safetensors", n_ctx=4)
    from vlprompt.cli import cfg_options
    from vlprompt.engine import load_config
    from vlprompt.engine.checkpoint import read_learned

    cfg = load_config(TPT_CONFIG, str(tmp_path / "run"), cfg_options(TINY))
    names = list(_dataset("toy-shapes-noise").classnames)
    learner, model = tta_run.build_run_learner(cfg, path, names, torch.device("cpu"))
    assert torch.equal(learner.ctx.detach(), read_learned(path)[0]["ctx"]) and learner.class_names == names
    adapter = tta_run.build_adapter_of(cfg, learner, torch.device("cpu"))
    assert adapter.student.trainable[0] is learner.ctx
    assert model["checkpoint"] == str(path) and model["num_classes"] == 40
    tta.main([TPT_CONFIG, "--checkpoint", str(path), "--limit", "2", "--work-dir", str(tmp_path / "run"),
              "--cfg-options", *FOUR_VIEWS])
    record = _results(tmp_path / "run")
    model = record["run"]["model"]
    assert model["checkpoint"] == str(path) and model["backbone"]["name"] == "test-tiny"
    assert model["num_classes"] == 40


def test_a_learner_without_text_context_fails_at_start_naming_it(tmp_path):
    path = write_learned(tmp_path / "vpt.safetensors", learner="vpt")
    with pytest.raises(ConfigError, match=r"VPT \('vpt'\) has no text context tokens"):
        tta.main([TPT_CONFIG, "--checkpoint", str(path), "--limit", "2", "--work-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "results.json").exists()


def test_an_unknown_checkpoint_stops_with_one_line(tmp_path):
    missing = tmp_path / "nope" / "learned.safetensors"
    proc = subprocess.run([sys.executable, "tools/tta.py", TPT_CONFIG, "--checkpoint", str(missing)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --checkpoint {missing} does not exist (give a "
                                                "learned.safetensors or epoch_N.pth from a work dir, or leave it "
                                                "out for the zero-shot prompt)"]


def test_bad_settings_are_refused_before_any_sample_naming_them(tmp_path):
    with pytest.raises(ConfigError, match=r"views.n_views=8 with adapter.selection_p=0.1 selects no view"):
        tta.main([TPT_CONFIG, "--work-dir", str(tmp_path), "--cfg-options", *TINY, "views.n_views=8"])
    with pytest.raises(ConfigError, match=r"adapter=.*TPT: steps must be an int >= 0, got -1"):
        tta.main([TPT_CONFIG, "--work-dir", str(tmp_path), "--cfg-options", *TINY, "adapter.steps=-1"])
    with pytest.raises(UserError, match="torchrun"):
        tta.main([TPT_CONFIG, "--work-dir", str(tmp_path), "--launcher", "pytorch"])
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("dataset, weight, augmix", [("imagenet", 50.0, None), ("imagenet-r", 20.0, True),
                                                     ("imagenet-sketch", 20.0, True), ("dtd", 50.0, None),
                                                     ("toy-shapes-noise", 50.0, None)])
def test_ctpt_configs_give_the_published_weights(dataset, weight, augmix):
    """hee-suk-yoon/C-TPT's scripts: lambda 50 (fine-grained, ImageNet), 20 with AugMix views (A/V2/R/Sketch)."""
    from vlprompt.engine import load_config

    cfg = load_config(f"configs/ctpt/{dataset.replace('-', '_')}.py")
    assert (cfg.adapter.type, cfg.adapter.atfd_weight, cfg.views.augmix) == ("ctpt", weight, augmix)
    assert (cfg.adapter.steps, cfg.adapter.lr, cfg.adapter.selection_p) == (1, 5e-3, 0.1)
    assert cfg.model.learner == dict(type="coop", n_ctx=4, ctx_init="a photo of a")


def test_ctpt_runs_through_the_tool_and_refuses_the_image_variant(tmp_path):
    rows = tta.main(["configs/ctpt/toy_shapes_noise.py", "--limit", "3", "--work-dir", str(tmp_path),
                     "--cfg-options", *TINY, *FOUR_VIEWS])
    assert rows[0]["method"] == "ctpt" and rows[0]["samples"] == 3
    with pytest.raises(ConfigError, match="C-TPT tunes the text prompt"):
        tta.main(["configs/ctpt/toy_shapes_noise.py", "--limit", "3", "--work-dir", str(tmp_path / "image"),
                  "--cfg-options", *TINY, *FOUR_VIEWS, "adapter.variant=image"])


def test_stream_seeds_run_each_online_adapter_once_per_order_and_tabulate_the_spread(tmp_path):
    """``--stream-seeds 1 2``: TDA (which keeps state) runs once per stream order, each recorded; ZERO (episodic)
    once; the table gives TDA's mean ± std over the orders beside each order's row."""
    rows = tta.main(["configs/tda/toy_shapes_noise.py", "configs/zero/toy_shapes_noise.py", "--limit", "6",
                     "--stream-seeds", "1", "2", "--work-dir", str(tmp_path), "--cfg-options", *TINY, *FOUR_VIEWS])
    assert [(r["method"], r["stream_seed"]) for r in rows] == [("tda", 1), ("tda", 2), ("zero", None)]
    streams = [_results(tmp_path / f"toy_shapes_noise_stream{s}")["stream"] for s in (1, 2)]
    assert [s["seed"] for s in streams] == [1, 2] and streams[0]["order"] != streams[1]["order"]
    assert sorted(streams[0]["order"]) == sorted(streams[1]["order"])  # the same samples, in another order
    assert "stream" not in _results(tmp_path / "toy_shapes_noise")  # ZERO's run: no order to record
    table = (tmp_path / "tta.md").read_text()
    import statistics

    top1 = [r["top1"] for r in rows[:2]]
    assert f"mean ± std (2) | {statistics.fmean(top1):.2f} ± {statistics.pstdev(top1):.2f}" in table.replace("**", "")
    assert "| stream order |" in table


@pytest.mark.slow  # 8 toy runs (15 s)
@pytest.mark.parametrize("method, learner", [("tda", "maple"), ("dmn", "coop"), ("ctpt", "maple"),
                                             ("zero", "promptsrc")])
def test_each_adapter_runs_on_a_trained_learner_from_a_checkpoint(tmp_path, method, learner):
    """Combinations no official code offers: an online or training-free adapter (or C-TPT's tuning) over a trained
    MaPLe / CoOp / PromptSRC read from its checkpoint; the prediction differs from the zero-shot prompt's."""
    hparams = {"maple": dict(n_ctx=2, depth=2), "coop": dict(n_ctx=4),
               "promptsrc": dict(n_ctx_text=2, n_ctx_vision=2, text_depth=2, vision_depth=2)}[learner]
    path = write_learned(tmp_path / "learned.safetensors", learner, **hparams)
    config = f"configs/{method}/toy_shapes_noise.py"
    common = ["--limit", "4", "--cfg-options", *TINY, *FOUR_VIEWS]
    trained = tta.main([config, "--checkpoint", str(path), "--work-dir", str(tmp_path / "trained"), *common])
    plain = tta.main([config, "--work-dir", str(tmp_path / "plain"), *common])
    assert trained[0]["method"] == f"{method} + {learner}" and plain[0]["method"] == method
    record = _results(tmp_path / "trained")
    assert record["run"]["model"]["learner"]["type"] == learner and record["run"]["model"]["num_classes"] == 40
    assert record["confidences"] != _results(tmp_path / "plain")["confidences"]
