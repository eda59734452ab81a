"""The active prompt-learning round loop (PCB's protocol), through the normal engine.

Round 0 labels ``budget`` images of the pool at random (``budget``: the number of classes, as
published). Every later round scores the whole pool with the model trained in the round before
(normalised image features and class probabilities), lets the sampler choose (with PCB: the
sampler proposes ``candidate_fraction`` of the pool, then :func:`~vlprompt.active.pcb.pcb_select`
picks ``budget`` of them towards class balance), adds the picks to the labelled set, and trains
the prompt **from scratch** on the labelled set with ``build_runner`` (any learner; the test split is
evaluated after each round).

A run's folder holds ``active_state.json`` (the settings, and per finished round the picks, the
test accuracy and the class histogram of the labelled set), written atomically after each round,
and one ``round<r>/`` work dir per round (logs, ``learned.safetensors``, ``results.json``). A run
started again resumes after its last finished round: the next selection is computed from that
round's ``learned.safetensors`` with the round's own seeded generator, so an interrupted run ends
with the labelled indices an uninterrupted one has. A state written with other settings stops the
run naming the keys that differ. A state that cannot be one (empty, truncated, or with picks that are
not pool indices or label an image twice) stops the run and the report with one line naming the
file and the value (:class:`ActiveStateError`), before anything is built from it.

Where the released code (kaist-dmlab/pcb@4ccf408, ``trainers/alvlm.py``) and the paper leave a
choice, vlprompt's defaults and settings:

* ``candidate_fraction`` (0.1) is of the *whole* pool, as in the code (``n_cand = len(train_x) * GAMMA``);
  ``candidates_of="remaining"`` takes it of the unlabelled part instead.
* the released code applies PCB in every round after the first whatever the sampler (``pcb`` is
  not a switch there); vlprompt makes it one, and without it the sampler picks ``budget`` images
  directly (the paper's baselines).
* its ``random`` proposes only ``budget`` candidates, so random + PCB labels the same images as
  random; vlprompt's random proposes ``candidate_fraction`` of the pool like the other samplers.
* the prompt of every round starts from the same seeded initialisation (the run's seed); the
  released code draws it afresh from the global generator each round.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..datasets.builder import build_dataset_from_cfg
from ..datasets.subset import LabelledSubset
from ..datasets.transforms import build_transform
from ..errors import ConfigError, UserError
from ..io import atomic_write_text
from ..learners import PromptLearner
from .pcb import EXHAUSTED, balance_entropy, class_histogram, pcb_select
from .samplers import SAMPLERS, Pool, sampler

__all__ = ["STATE_FILE", "ActiveSettings", "ActiveStateError", "check_state", "labelled_indices", "read_state",
           "run_active", "score_pool"]

STATE_FILE = "active_state.json"
TO_LABEL_FILE = "to_label_round{round}.csv"
"""Per round, the pool images chosen for labelling, as a list a person can work through (``path,class``: the
class the dataset has for it, to check or correct)."""
CANDIDATES_OF = ("pool", "remaining")


@dataclass(frozen=True)
class ActiveSettings:
    """One active-learning run's settings (a config's ``active`` dict).

    Args:
        sampler: one of :data:`~vlprompt.active.samplers.SAMPLERS` (random, entropy, coreset, badge).
        pcb: balance the sampler's candidates with PCB.
        rounds: labelling rounds, round 0 included (8, as published).
        budget: images labelled per round; ``None``: the number of classes (as published).
        candidate_fraction: PCB's candidates per round, as a fraction (``GAMMA`` = 0.1).
        candidates_of: ``"pool"`` (official) or ``"remaining"``: what the fraction is of.
        exhausted: PCB when the least represented class has no candidate left (``"random"``, official,
            or ``"next"``; :mod:`vlprompt.active.pcb`).
        score_batch_size: images per batch when scoring the pool.
    """

    sampler: str = "random"
    pcb: bool = False
    rounds: int = 8
    budget: int | None = None
    candidate_fraction: float = 0.1
    candidates_of: str = "pool"
    exhausted: str = "random"
    score_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS.module_dict:
            raise ConfigError(f"active.sampler={self.sampler!r} is not a sampler; known: "
                              f"{', '.join(SAMPLERS.module_dict)}")
        if not isinstance(self.rounds, int) or self.rounds < 1:
            raise ConfigError(f"active.rounds must be a whole number >= 1, got {self.rounds!r}")
        if self.budget is not None and (not isinstance(self.budget, int) or self.budget < 1):
            raise ConfigError(f"active.budget must be None or a whole number >= 1, got {self.budget!r}")
        if not 0 < float(self.candidate_fraction) <= 1:
            raise ConfigError(f"active.candidate_fraction must be in (0, 1], got {self.candidate_fraction!r}")
        if self.candidates_of not in CANDIDATES_OF:
            raise ConfigError(f"active.candidates_of must be one of {CANDIDATES_OF}, got {self.candidates_of!r}")
        if self.exhausted not in EXHAUSTED:
            raise ConfigError(f"active.exhausted must be one of {EXHAUSTED}, got {self.exhausted!r}")
        if not isinstance(self.score_batch_size, int) or self.score_batch_size < 1:
            raise ConfigError(f"active.score_batch_size must be a whole number >= 1, got {self.score_batch_size!r}")

    @classmethod
    def from_config(cls, active: Mapping[str, Any] | None, **overrides: Any) -> ActiveSettings:
        """Settings from a config's ``active`` dict (unknown keys are an error naming them)."""
        values = {**dict(active or {}), **{k: v for k, v in overrides.items() if v is not None}}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"active: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    @property
    def label(self) -> str:
        """``entropy``, ``entropy+pcb``: the strategy's name in tables and folders."""
        return f"{self.sampler}+pcb" if self.pcb else self.sampler


# ------------------------------------------------------------------------------------------------ pool
def pool_config(cfg) -> dict:
    """The pool's dataset dict: the inner dataset of the config's ``LabelledSubset`` train set."""
    data = (cfg.get("train_dataloader") or {}).get("dataset")
    kind = (data or {}).get("type")
    if data is None or kind not in (LabelledSubset, "LabelledSubset"):
        raise ConfigError(f"{cfg.filename}: an active-learning config trains on "
                          "train_dataloader.dataset = dict(type=LabelledSubset, dataset=<the pool>, indices=None)")
    return copy.deepcopy(data.to_dict() if hasattr(data, "to_dict") else dict(data))


def build_pool(cfg, image_size: int) -> Any:
    """The pool dataset with the test transform (scoring, not training, reads it)."""
    inner = dict(pool_config(cfg)["dataset"])
    inner.setdefault("data_root", cfg.get("data_root"))
    inner["transform"] = build_transform(False, image_size)
    inner.setdefault("image_size", image_size)
    inner.setdefault("progress", False)
    return build_dataset_from_cfg(inner)


def pool_labels(pool: Any) -> np.ndarray:
    """Every pool image's (true) label, read from the item list (no decoding)."""
    return np.asarray(LabelledSubset(pool).labels, dtype=np.int64)


def frozen_image_features(learner: PromptLearner) -> bool:
    """Whether the learner's image features are the frozen backbone's (CoOp, KgCoOp: nothing
    prompts the image tower), so the pool's features can be computed once for every round."""
    return type(learner).encode_images is PromptLearner.encode_images


@torch.no_grad()
def score_pool(learner: PromptLearner, pool: Any, batch_size: int = 256, features: np.ndarray | None = None,
               num_workers: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image features ``(N, D)`` and class probabilities ``(N, C)`` of every pool image.

    ``features`` (for a learner with :func:`frozen_image_features`) skips the image tower.
    """
    learner.eval()
    device = learner.device
    text = None if learner.image_conditioned_text else learner.encode_classes()
    if features is not None:
        f = torch.from_numpy(features).to(device)
        probs = [learner.logits(f[i:i + batch_size], text.to(f.dtype)).float().softmax(-1).cpu()
                 for i in range(0, len(f), batch_size)]
        return features, torch.cat(probs).numpy()
    loader = torch.utils.data.DataLoader(pool, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    dtype = next(learner.backbone.parameters()).dtype
    feats, probs = [], []
    from tqdm import tqdm

    for batch in tqdm(loader, desc="scoring the pool", leave=False, disable=not progress):
        f = learner.encode_images(batch["img"].to(device, dtype))
        classes = text if text is not None else learner.encode_classes(f)
        probs.append(learner.logits(f, classes.to(f.dtype)).float().softmax(-1).cpu())
        feats.append(f.float().cpu())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


# ------------------------------------------------------------------------------------------------ state
class ActiveStateError(UserError, ValueError):
    """An ``active_state.json`` that cannot be a run's state; the message names the file and the value."""


_WHOLE = {"round": 0, "labelled": 0, "classes_seen": 0}
"""The whole-number fields of a round's record (at least this value); ``top1`` and ``balance`` are numbers."""


def _is_whole(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_state(state: Any, path: str | Path) -> dict:
    """``state`` if it can be a run's ``active_state.json`` (``path``, named in the errors): a mapping with a
    whole ``seed``, a ``pool_size`` >= 1 and a list of ``rounds``, each a record whose picks (``selected``) are
    pool indices (whole numbers below ``pool_size``) never labelled before, and whose counts and scores are
    numbers. Anything else is an :class:`ActiveStateError` naming the file, the key and the value."""
    def bad(where: str, value: Any, why: str) -> ActiveStateError:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:80] + "..."
        return ActiveStateError(f"{path}: {where} = {shown} {why}; remove the file (or the run's folder) to "
                                "start the run over")

    if not isinstance(state, dict):
        raise ActiveStateError(f"{path}: is not an active-learning state (a {type(state).__name__}, not a mapping); "
                               "remove the file (or the run's folder) to start the run over")
    if not _is_whole(state.get("seed")):
        raise bad("'seed'", state.get("seed"), "is not a whole number")
    pool_size = state.get("pool_size")
    if not _is_whole(pool_size, 1):
        raise bad("'pool_size'", pool_size, "is not a whole number >= 1")
    rounds = state.get("rounds")
    if not isinstance(rounds, list):
        raise bad("'rounds'", rounds, "is not a list of rounds")
    seen: dict[int, str] = {}
    for r, record in enumerate(rounds):
        if not isinstance(record, dict):
            raise bad(f"rounds[{r}]", record, "is not a round's record")
        for key, low in _WHOLE.items():
            if not _is_whole(record.get(key), low):
                raise bad(f"rounds[{r}].{key}", record.get(key), "is not a whole number")
        for key in ("top1", "balance"):
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(f"rounds[{r}].{key}", value, "is not a number")
        counts = record.get("class_counts")
        if not isinstance(counts, list) or not all(_is_whole(c) for c in counts):
            raise bad(f"rounds[{r}].class_counts", counts, "is not a list of whole numbers")
        picks = record.get("selected")
        if not isinstance(picks, list):
            raise bad(f"rounds[{r}].selected", picks, "is not a list of pool indices")
        for j, pick in enumerate(picks):
            where = f"rounds[{r}].selected[{j}]"
            if not _is_whole(pick) or pick >= pool_size:
                raise bad(where, pick, f"is not a pool index (a whole number from 0 to {pool_size - 1})")
            if pick in seen:
                raise bad(where, pick, f"is labelled twice (also {seen[pick]})")
            seen[pick] = where
    return state


def read_state(run_dir: str | Path) -> dict | None:
    """A run's ``active_state.json`` (checked: :func:`check_state`), or ``None`` if it has none. An empty,
    truncated or unreadable file is an :class:`ActiveStateError` naming it."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ActiveStateError(f"{path}: cannot be read ({err})") from None
    if not text.strip():
        raise ActiveStateError(f"{path}: is empty (a run stopped while writing it?); remove the file (or the run's "
                               "folder) to start the run over")
    try:
        state = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ActiveStateError(f"{path}: is not JSON (truncated or edited? {err}); remove the file (or the run's "
                               "folder) to start the run over") from None
    return check_state(state, path)


def labelled_indices(state: Mapping[str, Any], upto: int | None = None) -> list[int]:
    """The labelled pool indices after round ``upto`` (default: the last finished one), in pick order."""
    rounds = state["rounds"] if upto is None else state["rounds"][:upto + 1]
    return [i for r in rounds for i in r["selected"]]


def _identity(settings: ActiveSettings, seed: int, pool_size: int, classes: list[str], cfg) -> dict:
    """What a run's rounds depend on, recorded in its state and compared on resume: the strategy's
    settings, the seed, the pool, the backbone asked for and how each round trains."""
    backbone = cfg.model.get("backbone", {})
    optimizer = (cfg.get("optim_wrapper") or {}).get("optimizer") or {}
    loader = cfg.get("train_dataloader") or {}
    return {"settings": asdict(settings), "seed": seed, "pool_size": pool_size, "classes": classes,
            "config": str(cfg.filename),
            "backbone": {"name": backbone.get("name"), "pretrained": _plain(backbone.get("pretrained"))},
            "training": {"lr": optimizer.get("lr"), "max_epochs": (cfg.get("train_cfg") or {}).get("max_epochs"),
                         "batch_size": loader.get("batch_size")}}


def _plain(value: Any) -> Any:
    return None if value is None else str(value)


def _check_resumable(state: dict, identity: dict, run_dir: Path) -> None:
    """A state written with other settings, seed, pool, backbone or round training stops the run,
    naming what differs (states written before a key was recorded are not compared on it)."""
    differ = []
    for group in ("settings", "backbone", "training"):
        recorded = state.get(group)
        if group != "settings" and recorded is None:
            continue
        differ += [f"{group}.{k} ({(recorded or {}).get(k)!r} there, {v!r} here)"
                   for k, v in identity[group].items() if (recorded or {}).get(k) != v]
    differ += [k for k in ("seed", "pool_size", "classes") if state.get(k) != identity[k]]
    if differ:
        raise ConfigError(f"{run_dir / STATE_FILE} was written by a run with another {', '.join(differ)}; "
                          "resume with the same settings, or use another work dir")


# ------------------------------------------------------------------------------------------------ selection
def select_round(round_index: int, settings: ActiveSettings, budget: int, pool: Pool, labels: np.ndarray,
                 num_classes: int, seed: int) -> tuple[np.ndarray, int | None]:
    """The pool indices labelled in round ``round_index`` (and how many candidates PCB saw)."""
    rng = np.random.default_rng([seed, round_index])
    if round_index == 0:
        return sampler("random")(pool, budget, rng), None
    choose = sampler(settings.sampler)
    if not settings.pcb:
        return choose(pool, budget, rng), None
    base = len(pool.features) if settings.candidates_of == "pool" else len(pool.unlabelled)
    n_candidates = max(budget, int(base * settings.candidate_fraction))
    candidates = choose(pool, n_candidates, rng)
    counts = class_histogram(labels[pool.labelled], num_classes)
    picks = pcb_select(candidates, pool.pseudo_labels[candidates], counts, budget, rng, settings.exhausted)
    return picks, len(candidates)


# ------------------------------------------------------------------------------------------------ the loop
def write_to_label(path: Path, pool: Any, picks: Any) -> None:
    """The images of ``picks`` (pool indices) as a CSV of ``path,class`` rows, in pick order."""
    import csv
    import io

    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["path", "class"])
    for index in picks:
        item = pool.items[int(index)]
        writer.writerow([item.impath, item.classname])
    atomic_write_text(path, rows.getvalue())


_NULL = None


@contextlib.contextmanager
def _console_to_log_only() -> Iterator[None]:
    """Build a round's runner with its console stream pointed at nothing: mmengine's logger binds
    ``sys.stdout`` when it is created, so the round's environment, config and progress lines go to
    the round's log file only and the console keeps the active-learning progress display. The null
    stream stays open: the runner's handler writes to it for the rest of the round."""
    global _NULL
    if _NULL is None:
        _NULL = open(os.devnull, "w")  # noqa: SIM115 - held for the process's lifetime
    with contextlib.redirect_stdout(_NULL):
        yield


def _train_round(cfg, round_dir: Path, labelled: list[int], name: str) -> tuple[float, str]:
    """Train the learner from scratch on the labelled images, then test the last-epoch model on the
    test split with the same runner; its top-1 and the digest of the backbone weights it trained on."""
    from ..engine import build_runner
    from ..engine.results import write_results
    from ..engine.runner import runner_model

    rcfg = copy.deepcopy(cfg)
    rcfg.work_dir = str(round_dir)
    rcfg.train_dataloader.dataset.indices = list(labelled)
    rcfg.load_from, rcfg.resume = None, False
    rcfg.experiment_name = f"{name}_{time.time_ns()}"
    with _console_to_log_only():
        runner = build_runner(rcfg)
    runner.train()
    metrics = runner.test()
    model = runner_model(runner)
    write_results(round_dir / "results.json", metrics, rcfg, model.metadata(), labelled=len(labelled))
    return float(metrics["accuracy/top1"]), model.learner.backbone.weights_digest


def _trained_learner(cfg, round_dir: Path, class_names: list[str], seed: int, state_weights: str | None = None,
                     state_path: Path | None = None) -> PromptLearner:
    """The learner of a finished round, rebuilt from its ``learned.safetensors`` (seeded as the runner
    seeds before building it, so that a randomly initialised backbone is the one it trained with).
    ``state_weights``: the backbone digest the run's state recorded, checked before anything is loaded."""
    from mmengine.runner import set_random_seed

    from ..backbones import check_same_weights
    from ..engine import LEARNED_FILE, PromptModel
    from ..engine.checkpoint import load_learned_into

    set_random_seed(seed)
    model_cfg = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model))
    model_cfg.pop("type", None)
    model = PromptModel(**{k: v for k, v in model_cfg.items() if k in ("backbone", "learner")},
                        class_names=class_names)
    if state_weights is not None:
        check_same_weights(state_weights, model.learner.backbone, state_path, "written")
    load_learned_into(model, round_dir / LEARNED_FILE)
    return model.learner


def run_active(cfg, run_dir: str | Path, settings: ActiveSettings, seed: int = 1,
               on_round: Callable[[dict], None] | None = None) -> dict:
    """Run (or resume) the rounds of one strategy and seed in ``run_dir``; returns the final state.

    ``on_round`` is called with each finished round's record (the tools' progress display).
    """
    from ..backbones import get_arch
    from ..workdir import work_dir_lock

    run_dir = Path(run_dir)
    cfg = copy.deepcopy(cfg)
    cfg.randomness = {**(cfg.get("randomness") or {}), "seed": seed}
    pool_config(cfg)  # a config that is not an active-learning one stops here
    backbone = cfg.model.get("backbone", {})
    image_size = get_arch(backbone["name"]).image_size if backbone.get("name") else 224
    pool = build_pool(cfg, image_size)
    labels = pool_labels(pool)
    classes = list(pool.classnames)
    budget = settings.budget or len(classes)
    if budget * settings.rounds > len(pool):
        raise ConfigError(f"active: {settings.rounds} rounds of {budget} images need {budget * settings.rounds} "
                          f"images; the pool ({pool!r}) has {len(pool)}")
    identity = _identity(settings, seed, len(pool), classes, cfg)
    with work_dir_lock(run_dir):
        state = read_state(run_dir)
        if state is None:
            state = {**identity, "rounds": []}
        else:
            _check_resumable(state, identity, run_dir)
        features = None
        for r in range(len(state["rounds"]), settings.rounds):
            start = time.perf_counter()
            labelled = labelled_indices(state)
            if r == 0:
                scores = Pool(np.zeros((len(pool), 1)), np.zeros((len(pool), 1)), [], np.arange(len(pool)))
            else:
                learner = _trained_learner(cfg, run_dir / f"round{r - 1}", classes, seed,
                                           state.get("backbone_weights"), run_dir / STATE_FILE)
                cache = features if frozen_image_features(learner) else None
                feats, probs = score_pool(learner, pool, settings.score_batch_size, cache)
                features = feats if frozen_image_features(learner) else None
                unlabelled = np.setdiff1d(np.arange(len(pool)), labelled)
                scores = Pool(feats, probs, labelled, unlabelled)
            picks, n_candidates = select_round(r, settings, budget, scores, labels, len(classes), seed)
            select_s = time.perf_counter() - start
            labelled = labelled + [int(i) for i in picks]
            round_dir = run_dir / f"round{r}"
            if round_dir.exists():  # an interrupted round: started again from its selection
                shutil.rmtree(round_dir)
            top1, weights = _train_round(cfg, round_dir, labelled, f"active_{settings.label}_seed{seed}_round{r}")
            state.setdefault("backbone_weights", weights)
            counts = class_histogram(labels[labelled], len(classes))
            record = {"round": r, "selected": [int(i) for i in picks], "labelled": len(labelled),
                      "candidates": n_candidates, "top1": top1, "class_counts": counts.tolist(),
                      "balance": balance_entropy(labels[labelled], len(classes)),
                      "classes_seen": int((counts > 0).sum()), "select_s": round(select_s, 3),
                      "round_s": round(time.perf_counter() - start, 3)}
            state["rounds"].append(record)
            write_to_label(run_dir / TO_LABEL_FILE.format(round=r), pool, picks)
            atomic_write_text(run_dir / STATE_FILE, json.dumps(state, indent=1))
            if on_round is not None:
                on_round(record)
    return state
