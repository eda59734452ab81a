"""Training-step time and peak memory of prompt learners, with CoCoOp's per-image baselines.

    python benchmarks/bench_train_step.py --classes 50 --repeats 1            # CPU, quick
    python benchmarks/bench_train_step.py --device cuda                        # GPU, bf16 autocast
    python benchmarks/bench_train_step.py --learners coop cocoop kgcoop --classes 50 1000

One step is forward + backward + SGD step (lr 0.002, momentum 0.9, weight decay 5e-4) on a batch
of random 224 px images, for a learner built by its registry name with its default
hyper-parameters on a random-weight backbone (ViT-B-16 by default). Every configuration runs in
its own process, so the peak memory is that configuration's alone: the peak RSS on the CPU
(``ru_maxrss``), ``torch.cuda.max_memory_allocated`` on a GPU.

Learners whose class features depend on the image (CoCoOp) are also timed, in the same run, the
way the published code runs them, and their logits compared with the batched ones:

* ``loop``: the text tower called once per image of the batch, one after another (what
  CoCoOp's ``CustomCLIP.forward`` does), on vlprompt's truncated text tower;
* ``official`` (CoCoOp only): the published code path itself: one call per image on the full
  77-token context, prompts assembled from prefix / context / suffix embeddings.

The ratio column gives how many times faster the batched step is than each baseline.

``--text-checkpointing`` adds, per learner and class count, the ``checkpointed`` path: the same
batched step with activation checkpointing of the text blocks (``build_clip(text_checkpointing=True)``),
the memory-for-compute trade of a multitask step over thousands of class prompts (MVLPT)::

    python benchmarks/bench_train_step.py --learners mcoop mupt --classes 2191 --batch-size 32 \
        --text-checkpointing --cpu-max-prompts 3000 --repeats 1 --warmup 0

``--official-cmd`` adds, in the same run, an outside program that times a learner's official
implementation (which vlprompt never ships): a command template with ``{learner}``, ``{classes}``
and ``{batch_size}`` whose last ``RESULT {json}`` line gives ``median_s``, ``min_s``,
``peak_bytes`` and ``base_bytes`` (peak RSS of its process; memory before the first step). Its row
is the ``external`` path, and the ratio column says how many times faster vlprompt's step is.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vlprompt.backbones import build_clip
from vlprompt.learners import LEARNERS, PromptLearner, build_learner, list_learners

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_backbone import class_names  # noqa: E402 - the shared class-name generator
from bench_common import run_isolated  # noqa: E402

GIB = 1024**3


# ------------------------------------------------------------------------------- per-image baselines
def loop_logits(learner: PromptLearner, images: torch.Tensor) -> torch.Tensor:
    """Logits with the class features of each image encoded one image at a time (for CoCoOp, one
    ``encode_text`` call per image; the loss is then cross-entropy alone)."""
    image_features = learner.encode_images(images)
    class_features = torch.cat([learner.encode_classes(image_features[i : i + 1]) for i in range(len(images))])
    return learner.logits(image_features, class_features.to(image_features.dtype))


class OfficialCoCoOp:
    """CoCoOp's published forward: per image, the text tower on full 77-token prompts built as
    ``cat(prefix, ctx + pi(x), suffix)`` from the embeddings of a placeholder prompt."""

    def __init__(self, learner: PromptLearner) -> None:
        self.learner = learner
        clip = learner.backbone
        placeholder = " ".join(["X"] * learner.n_ctx)
        self.ids = clip.tokenize([f"{placeholder} {name}." for name in learner.class_names]).to(clip.device)
        with torch.no_grad():
            emb = clip.model.token_embedding(self.ids)
        self.prefix, self.suffix = emb[:, :1], emb[:, 1 + learner.n_ctx :]

    def text_features(self, prompts: torch.Tensor) -> torch.Tensor:
        m = self.learner.backbone.model
        x = prompts + m.positional_embedding
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        return x[torch.arange(len(x)), self.ids.argmax(-1)] @ m.text_projection

    def __call__(self, learner: PromptLearner, images: torch.Tensor) -> torch.Tensor:
        image_features = learner.encode_images(images)
        contexts = learner.conditioned_context(image_features)  # ctx + meta_net(x), (B, n_ctx, D)
        logits = []
        for ctx_i, f_i in zip(contexts, image_features, strict=True):
            n_cls = len(self.prefix)
            prompts = torch.cat([self.prefix, ctx_i[None].expand(n_cls, -1, -1), self.suffix], dim=1)
            text = F.normalize(self.text_features(prompts), dim=-1)
            logits.append(learner.backbone.logit_scale * f_i @ text.t().to(f_i.dtype))
        return torch.stack(logits)


def has_loop_baseline(cls: type[PromptLearner]) -> bool:
    """Image-conditioned text, and a step that is the cross-entropy alone (not DePT's, which has its head)."""
    return cls.image_conditioned_text and not cls.learner_name.startswith("dept_")


def baselines(learner: PromptLearner) -> dict[str, Callable[[PromptLearner, torch.Tensor], torch.Tensor]]:
    """The per-image baselines that apply to a learner (none unless its text is image-conditioned)."""
    if not has_loop_baseline(type(learner)):
        return {}
    found = {"loop": loop_logits}
    if learner.learner_name == "cocoop":
        found["official"] = OfficialCoCoOp(learner)
    return found


def learner_settings(name: str, arch: str, device: torch.device, names: list[str]) -> dict:
    """What a learner needs beyond its defaults: PromptKD's teacher, PromptSRC on a random ViT-L/14 as published
    (on another student architecture, the same architecture)."""
    if name != "promptkd":
        return {}
    teacher = build_clip("ViT-L-14" if arch == "ViT-B-16" else arch, device=device)
    return {"teacher": build_learner("promptsrc", teacher, names)}


# ------------------------------------------------------------------------------- one configuration
def run_worker(cfg: dict) -> dict:
    """Time one (learner, classes, variant) in this process; return times, memory, logit diff."""
    device = torch.device(cfg["device"])
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    checkpointed = cfg["variant"] == "checkpointed"
    clip = build_clip(cfg["arch"], device=device, text_checkpointing=checkpointed, vision_checkpointing=checkpointed)
    names = class_names(cfg["classes"])
    learner = build_learner(cfg["learner"], clip, names, **learner_settings(cfg["learner"], cfg["arch"], device, names))
    names = learner.class_names
    batch = cfg["batch_size"]
    images = torch.randn(batch, 3, clip.image_size, clip.image_size, device=device)
    labels = torch.randint(len(names), (batch,), device=device)
    if hasattr(learner, "set_cache"):  # a cache learner (Tip-Adapter-F): a random normalised 16-shot cache
        keys = F.normalize(torch.randn(16 * len(names), clip.embed_dim, device=device), dim=-1)
        learner.set_cache(keys, torch.arange(len(names), device=device).repeat_interleave(16))
    params = [p for p in learner.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
    variant = cfg["variant"]
    baseline = baselines(learner).get(variant)
    if variant not in ("batched", "checkpointed") and baseline is None:
        raise ValueError(f"{cfg['learner']} has no {variant!r} baseline")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["bf16"])
    learner.train()

    def step() -> None:
        with autocast:
            if baseline is None:
                total = sum(learner.loss(images, labels).values())
            else:
                total = F.cross_entropy(baseline(learner, images).float(), labels)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        sync()
        base_mem = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    prompts = len(names) * (batch if learner.image_conditioned_text else 1)  # text-tower rows per step
    out = dict(cfg, params=sum(p.numel() for p in params), prompts=prompts)
    try:
        for _ in range(cfg["warmup"]):
            step()
        times = []
        for _ in range(cfg["repeats"]):
            sync()
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError:
        return dict(out, error="out of memory")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.update(median_s=statistics.median(times), min_s=min(times), peak_bytes=peak, base_bytes=base_mem)
    if baseline is not None:  # the same logits? compared in fp32, after timing (outside the peak)
        with torch.no_grad():
            ref = learner.class_logits(learner.encode_images(images)).float()  # the prompts' logits, batched
            got = baseline(learner, images).float()
        out["logit_diff"] = (ref - got).abs().max().item()
    return out


def run_config(cfg: dict, script: str) -> dict:
    """One configuration in a process of its own (an external implementation through its command template)."""
    return {"prompts": "-", **run_isolated(cfg, script, cfg["command"] if cfg["variant"] == "external" else None)}


# ------------------------------------------------------------------------------- report
def _mem(res: dict) -> tuple[str, str]:
    if "peak_bytes" not in res:
        return "-", "-"
    return f"{res['peak_bytes'] / GIB:.2f}", f"{(res['peak_bytes'] - res['base_bytes']) / GIB:.2f}"


def print_table(results: list[dict], device_desc: str) -> None:
    """Markdown table; ratios are to the batched step of the same learner and class count, and to
    CoOp at the same class count."""
    batched = {(r["learner"], r["classes"]): r for r in results if r["variant"] == "batched" and "median_s" in r}
    mem_kind = "GPU max allocated" if results and results[0]["device"].startswith("cuda") else "CPU peak RSS"
    print(f"\n{device_desc}")
    print(
        f"\n| learner | classes | batch | path | text prompts/step | step s (median) | min | batched is x faster "
        f"| x CoOp step | {mem_kind} GiB | over model GiB | x batched peak | logit max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        key = (r["learner"], r["classes"])
        if "median_s" not in r:
            print(f"| {r['learner']} | {r['classes']} | {r['batch_size']} | {r['variant']} | - | "
                  f"{r.get('error', 'skipped')} | - | - | - | - | - | - | - |")
            continue
        ref = batched.get(key)
        faster = f"{r['median_s'] / ref['median_s']:.2f}x" if ref and r["variant"] != "batched" else "-"
        coop = batched.get(("coop", r["classes"]))
        vs_coop = f"{r['median_s'] / coop['median_s']:.2f}" if coop else "-"
        peak, over = _mem(r)
        diff = f"{r['logit_diff']:.1e}" if "logit_diff" in r else "-"
        mem_ratio = f"{r['peak_bytes'] / ref['peak_bytes']:.2f}" if ref and r["variant"] != "batched" else "-"
        print(f"| {r['learner']} | {r['classes']} | {r['batch_size']} | {r['variant']} | {r['prompts']} | "
              f"{r['median_s']:.3f} | {r['min_s']:.3f} | {faster} | {vs_coop} | {peak} | {over} | {mem_ratio} "
              f"| {diff} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--learners", nargs="+", default=["coop", "cocoop"], help=f"from {list_learners()}")
    parser.add_argument("--classes", nargs="+", type=int, default=[50, 1000])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on cuda")
    parser.add_argument("--baselines", nargs="*", default=["loop", "official"],
                        help="per-image baselines for image-conditioned learners (none: only batched)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 2 on CPU, 10 on GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 3 on GPU)")
    parser.add_argument("--cpu-max-prompts", type=int, default=2000,
                        help="on CPU, skip configurations whose text tower sees more prompts per step "
                             "(CoCoOp: batch x classes; the 77-token official path counts 6x), which "
                             "would take minutes and tens of GiB")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--text-checkpointing", action="store_true",
                        help="also time each learner with activation checkpointing of the text blocks")
    parser.add_argument("--official-cmd", default=None,
                        help="command timing an official implementation (see above), e.g. "
                             "'python /path/to/adapter.py {learner} {classes}'")
    parser.add_argument("--official-classes", nargs="*", type=int, default=None,
                        help="class counts for --official-cmd (default: all of --classes)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return
    unknown = sorted(set(args.learners) - set(list_learners()))
    if unknown:
        parser.error(f"unknown learners {unknown}; registered: {list_learners()}")
    cuda = args.device.startswith("cuda")
    repeats = args.repeats or (10 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    base = dict(arch=args.arch, batch_size=args.batch_size, device=args.device, bf16=cuda and not args.fp32,
                repeats=repeats, warmup=warmup, threads=args.threads)
    script = os.path.abspath(__file__)
    results = []
    for name in args.learners:
        cls = LEARNERS.get(name)
        conditioned = cls.image_conditioned_text
        offered = (["loop"] if has_loop_baseline(cls) else []) + (["official"] if name == "cocoop" else [])
        for n_cls in args.classes:
            variants = ["batched"] + (["checkpointed"] if args.text_checkpointing else []) \
                + [v for v in offered if v in args.baselines]
            if args.official_cmd and (args.official_classes is None or n_cls in args.official_classes):
                variants.append("external")
            for variant in variants:
                cfg = dict(base, learner=name, classes=n_cls, variant=variant)
                prompts = n_cls * (args.batch_size if conditioned else 1)
                load = prompts * (6 if variant == "official" else 1)  # 77 tokens instead of about 13
                if variant == "external":  # an outside program: its own limits
                    res = run_config(dict(cfg, command=args.official_cmd), script)
                elif not cuda and load > args.cpu_max_prompts:
                    res = dict(cfg, error=f"skipped on CPU: load {load} > --cpu-max-prompts")
                else:
                    res = run_config(cfg, script)
                took = f"{res['median_s']:.3f} s/step" if "median_s" in res else res["error"]
                label = "external (--official-cmd)" if variant == "external" else variant
                print(f"# {name}, {n_cls} classes, {label}: {took}", flush=True)
                results.append(res)
    threads = args.threads or torch.get_num_threads()
    desc = torch.cuda.get_device_name(args.device) if cuda else f"CPU, {threads} threads"
    precision = "bf16 autocast" if base["bf16"] else "fp32"
    print_table(results, f"{args.arch} (random weights), {precision}, {desc}, torch {torch.__version__}, "
                         f"median of {repeats} steps after {warmup} warm-up")


if __name__ == "__main__":
    main()
