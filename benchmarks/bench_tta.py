"""Test-time adaptation cost: seconds per test sample and peak memory of every adapter (TPT, C-TPT, RLCF
(prompt); ZERO, MTA; TDA, BoostAdapter, DMN-ZS).

    python benchmarks/bench_tta.py --methods tpt --classes 200 --views 8                 # CPU, quick-ish
    python benchmarks/bench_tta.py --device cuda --views 64 --classes 200 1000           # GPU, bf16 autocast
    python benchmarks/bench_tta.py --methods tpt --classes 200 1000 --views 8 --official-classes 200 \\
        --official-cmd '/work/main/.venv/bin/python /path/to/bench_official_tta.py {method} {classes} \\
                        --views {views} --samples {samples} --warmup {warmup} --device {device} --names vlprompt'

One "sample" is what tools/tta.py does per test image once its views exist: the adapter's call
(confidence selection, TPT's and C-TPT's 1 step or RLCF's 3 steps with the teacher scoring the selected
views, prediction of view 0, reset; the training-free adapters' one pass of the views and their read-out;
the online adapters' cache or memory update and read-out, their state carried over the stream of warm-up and
timed samples) and the host read of the prediction. The online adapters take their ImageNet-A settings (TDA
and BoostAdapter: alpha 2, beta 5, delta 3), DMN its memory of 50 and fusion 1, C-TPT lambda 50. The student is a
random-weight ViT-B/16 with TPT's 4 context tokens from "a photo of a" over ``--classes`` names
(``bench_backbone.class_names``); RLCF's teacher a random-weight ``--teacher`` (ViT-L/14, as
published); the views are ``randn(views, 3, 224, 224)`` seeded with 1000 + sample index (the
augmentation is not timed, as on the official side). With fewer than 10 views, ``int(views x 0.1)``
selects nothing, so ``selection_p`` becomes ``1 / views`` there, as the official script does.

Every configuration runs in its own process, so its peak memory is its own: peak RSS
(``ru_maxrss``) on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU. ``--official-cmd`` adds,
in the same run, an outside program timing the official implementation (which vlprompt never
ships): a template with ``{method}`` (tpt, rlcf_prompt), ``{classes}``, ``{views}``, ``{samples}``,
``{warmup}``, ``{device}`` whose last line is ``RESULT {json}`` with ``median_s``, ``min_s``,
``peak_bytes`` and ``base_bytes``. The table gives official / vlprompt time and vlprompt / official
peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

from vlprompt.adapters import RLCF, build_adapter, default_prompt_learner
from vlprompt.backbones import build_clip

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_backbone import class_names  # noqa: E402 - the shared class-name generator
from bench_common import run_isolated  # noqa: E402

GIB = 1024**3
METHODS = ("tpt", "ctpt", "rlcf_prompt", "zero", "mta", "tda", "boostadapter", "dmn")
SETTINGS = {"ctpt": dict(atfd_weight=50.0), "tda": dict(positive=dict(alpha=2.0, beta=5.0)),
            "boostadapter": dict(positive=dict(alpha=2.0, beta=5.0), delta=3, query="confident"),
            "dmn": dict(memory_size=50, beta=5.5, fusion=1.0)}
"""Each adapter's settings in this benchmark (the rest: its defaults); ZERO and MTA keep theirs."""


def selection_p(views: int, wanted: float = 0.1) -> float:
    """``wanted``, or ``1 / views`` where ``int(views x wanted)`` would select no view (as the official script)."""
    return wanted if int(views * wanted) >= 1 else 1.0 / views


def run_worker(cfg: dict) -> dict:
    """Time one (method, classes, views) in this process."""
    device = torch.device(cfg["device"])
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    clip = build_clip(cfg["arch"], device=device)
    learner = default_prompt_learner(clip, class_names(cfg["classes"]))
    method = cfg["method"]
    p = selection_p(cfg["views"], 0.3 if method == "zero" else 0.1)
    if method == "rlcf_prompt":
        torch.manual_seed(2)
        adapter = RLCF(learner, build_clip(cfg["teacher"], device=device), selection_p=p)
        adapter.reward.teachers[0].class_features(learner.class_names)  # per-dataset set-up, as officially
    else:
        adapter = build_adapter(dict(type=method, **SETTINGS.get(method, {}),
                                     **({"selection_p": p} if method != "mta" else {})), learner)
        if hasattr(adapter, "class_features"):
            adapter.class_features(None)  # the training-free adapters' class features: once per dataset, as officially
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["bf16"])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def sample(i: int) -> float:
        size = clip.image_size
        views = torch.randn(cfg["views"], 3, size, size, generator=torch.Generator().manual_seed(1000 + i)).to(device)
        sync()
        start = time.perf_counter()
        with autocast:
            logits = adapter(views, i)
        int(logits.argmax())  # the host read of the prediction
        return time.perf_counter() - start

    if device.type == "cuda":
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        for i in range(cfg["warmup"]):
            sample(i)
        times = [sample(cfg["warmup"] + i) for i in range(cfg["samples"])]
    except torch.OutOfMemoryError:
        return dict(cfg, error="out of memory")
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(cfg, selected=int(cfg["views"] * p), median_s=statistics.median(times), min_s=min(times),
                peak_bytes=peak, base_bytes=base)


def run_config(cfg: dict, script: str) -> dict:
    """One configuration in a process of its own (the official one through its command template)."""
    official = cfg["impl"] == "official"
    return {**run_isolated(cfg, script, cfg["command"] if official else None), "impl": cfg["impl"]}


def print_table(results: list[dict], desc: str) -> None:
    """Markdown table; the ratios compare each official row with vlprompt's at the same method, classes, views."""
    ours = {(r["method"], r["classes"], r["views"]): r for r in results if r["impl"] == "vlprompt" and "median_s" in r}
    mem_kind = "GPU max allocated" if results and str(results[0]["device"]).startswith("cuda") else "CPU peak RSS"
    print(f"\n{desc}\n")
    print(f"| method | classes | views | implementation | s/sample (median) | min | official / vlprompt time "
          f"| {mem_kind} GiB | over model GiB | vlprompt / official memory |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        head = f"| {r['method']} | {r['classes']} | {r['views']} | {r['impl']} |"
        if "median_s" not in r:
            print(f"{head} {r.get('error', 'skipped')} | - | - | - | - | - |")
            continue
        ref = ours.get((r["method"], r["classes"], r["views"]))
        official = r["impl"] == "official" and ref is not None
        speed = f"**{r['median_s'] / ref['median_s']:.2f}x**" if official else "-"
        mem = f"**{ref['peak_bytes'] / r['peak_bytes']:.2f}**" if official else "-"
        print(f"{head} {r['median_s']:.3f} | {r['min_s']:.3f} | {speed} | {r['peak_bytes'] / GIB:.2f} | "
              f"{(r['peak_bytes'] - r['base_bytes']) / GIB:.2f} | {mem} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--classes", nargs="+", type=int, default=[200, 1000])
    parser.add_argument("--views", type=int, default=None, help="views per sample (default 64 on GPU, 8 on CPU)")
    parser.add_argument("--samples", type=int, default=None, help="timed samples (default 10 on GPU, 2 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed samples first (default 3 on GPU, 1 on CPU)")
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--teacher", default="ViT-L-14", help="RLCF's reward CLIP architecture (random weights)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--official-cmd", default=None, help="command timing the official implementation (above)")
    parser.add_argument("--official-classes", nargs="*", type=int, default=None,
                        help="class counts for --official-cmd (default: all of --classes)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return
    cuda = args.device.startswith("cuda")
    views = args.views or (64 if cuda else 8)
    samples = args.samples or (10 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    base = dict(arch=args.arch, teacher=args.teacher, device=args.device, bf16=cuda and not args.fp32, views=views,
                samples=samples, warmup=warmup, threads=args.threads)
    script = os.path.abspath(__file__)
    results = []
    for method in args.methods:
        for n_cls in args.classes:
            impls = ["vlprompt"]
            if args.official_cmd and (args.official_classes is None or n_cls in args.official_classes):
                impls.append("official")
            for impl in impls:
                cfg = dict(base, method=method, classes=n_cls, impl=impl)
                if impl == "official":
                    cfg["command"] = args.official_cmd
                res = run_config(cfg, script)
                took = f"{res['median_s']:.3f} s/sample" if "median_s" in res else res["error"]
                print(f"# {method}, {n_cls} classes, {views} views, {impl}: {took}", flush=True)
                results.append(res)
    threads = args.threads or torch.get_num_threads()
    desc = torch.cuda.get_device_name(args.device) if cuda else f"CPU, {threads} threads"
    precision = "bf16 autocast" if base["bf16"] else "fp32"
    print_table(results, f"{args.arch} student, {args.teacher} teacher (random weights), {precision}, {desc}, "
                         f"torch {torch.__version__}, median of {samples} samples after {warmup} warm-up")


if __name__ == "__main__":
    main()
