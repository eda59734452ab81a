"""GRAM speed, side by side in one run: meta-training throughput, the regulator's overhead, clustering.

    python benchmarks/bench_gram.py                                  # toy CLIP, 1M x 512 clustering
    python benchmarks/bench_gram.py --device cuda --backbone ViT-B-16 --points 1000000

1. Meta-training throughput (tasks per second) of each ``--learners`` on synthetic pairs (random
   images and short captions with underscores, clustered into domains and pseudo-classes), first-order
   and second-order.
2. The per-step overhead of the regulator downstream: one training step (forward, backward, SGD) of
   the plain learner against the same learner inside ``GRAMModel`` with the ``gate`` regulator hooked on
   its gradients, alternated in one run; reported as the ratio of median step times.
3. Clustering ``--points`` x ``--dim`` synthetic features into ``--k`` clusters, ``--iterations`` Lloyd
   steps from the same random seeds: faiss k-means against :func:`vlprompt.clustering.torch_kmeans`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from vlprompt.backbones import build_clip
from vlprompt.clustering import faiss_kmeans, torch_kmeans
from vlprompt.learners import build_learner
from vlprompt.meta import ClusterSettings, MetaLearner, MetaSettings, PairFeatures, TaskSampler, TaskSettings
from vlprompt.meta.gram import build_meta_learner, uses_frozen_image_features
from vlprompt.meta.tasks import cross_modal_hierarchy

LEARNERS = {
    "coop": {"type": "coop", "n_ctx": 4, "ctx_init": "a photo of a"},
    "vpt": {"type": "vpt", "n_ctx": 8, "depth": 12},
    "maple": {"type": "maple", "n_ctx": 2, "ctx_init": "a photo of a", "depth": 9},
    "ivlp": {"type": "ivlp"},
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def synthetic_pairs(backbone, n: int, seed: int = 0) -> PairFeatures:
    """``n`` pairs: random images, captions with underscores and odd counts, their frozen embeddings."""
    rng = np.random.default_rng(seed)
    size = backbone.image_size
    colours = ["red", "dark_green", "sky_blue", "yellow", "jack-o'-lantern orange", "purple", "grey"]
    shapes = ["circle", "sea_lion", "square", "five-pointed star", "hexagon"]
    images = rng.integers(0, 255, (n, 3, size, size), dtype=np.uint8)
    captions = [f"a photo of a {colours[i % 7]} {shapes[(i // 7) % 5]}" for i in range(n)]
    from vlprompt.meta.features import caption_token_ids, normalise_images

    with torch.no_grad():
        image = torch.cat([backbone.encode_image(normalise_images(images[i:i + 64], backbone), normalize=True)
                           for i in range(0, n, 64)]).float().cpu()
        text = backbone.encode_text(caption_token_ids(backbone, captions), normalize=True).float().cpu()
    return PairFeatures(image, text, captions, images)


def meta_throughput(name: str, backbone_cfg: dict, features: PairFeatures, second_order: bool, steps: int,
                    device: str) -> float:
    torch.manual_seed(0)
    learner, regulator = build_meta_learner(LEARNERS[name], {**backbone_cfg, "device": device}, "gate",
                                            ["object", "shape"])
    regulator.to(device)
    hierarchy = cross_modal_hierarchy(features, ClusterSettings(domains=2, classes_per_domain=8))
    sampler = TaskSampler(hierarchy, TaskSettings(n_way=5, k_shot=4, q_query=8))
    settings = MetaSettings(iterations=steps, meta_batch=2, inner_steps=5, second_order=second_order)
    meta = MetaLearner(learner, regulator, features, sampler, settings)
    meta.meta_step()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        meta.meta_step()
    _sync(device)
    return steps * settings.meta_batch / (time.perf_counter() - start)


def regulator_overhead(name: str, backbone_cfg: dict, steps: int, batch: int, device: str) -> tuple[float, float]:
    """Median seconds per step of the plain learner and of the GRAM-wrapped one, alternated."""
    from vlprompt.meta.model import GRAMModel

    torch.manual_seed(0)
    backbone = build_clip(**backbone_cfg, device=device)
    classes = [f"class_{i}" for i in range(50)]
    plain = build_learner(name, backbone, classes, **{k: v for k, v in LEARNERS[name].items() if k != "type"})
    wrapped = GRAMModel(backbone=backbone_cfg, learner=LEARNERS[name], class_names=classes,
                        gram={"file": None, "init": False, "regulator": "gate"}).to(device).learner
    images = torch.randn(batch, 3, backbone.image_size, backbone.image_size, device=device)
    labels = torch.randint(0, 50, (batch,), device=device)
    runs = {"plain": plain, "gram": wrapped}
    optims = {k: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
              for k, m in runs.items()}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for step in range(steps + 2):
        for key, learner in runs.items():
            _sync(device)
            start = time.perf_counter()
            loss = sum(learner.train().loss(images, labels).values())
            loss.backward()
            optims[key].step()
            optims[key].zero_grad(set_to_none=True)
            _sync(device)
            if step >= 2:
                times[key].append(time.perf_counter() - start)
    return statistics.median(times["plain"]), statistics.median(times["gram"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="toy")
    parser.add_argument("--pretrained", default=None, help="default: the toy weights for the toy CLIP, else none")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--learners", nargs="+", default=["coop", "maple"], choices=sorted(LEARNERS))
    parser.add_argument("--pairs", type=int, default=600)
    parser.add_argument("--meta-steps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-clustering", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    pretrained = args.pretrained or ("toy" if args.backbone == "toy" else None)
    backbone_cfg = {"name": args.backbone, "pretrained": pretrained}
    print(f"backbone {args.backbone} ({pretrained}), device {args.device}, {args.threads} thread(s)")
    features = synthetic_pairs(build_clip(**backbone_cfg, device=args.device), args.pairs)
    print("\n| learner | image features | meta-training, first order (tasks/s) | second order (tasks/s) |")
    print("|---|---|---|---|")
    for name in args.learners:
        cached = uses_frozen_image_features(build_meta_learner(LEARNERS[name], backbone_cfg, "gate", ["a", "b"])[0])
        first = meta_throughput(name, backbone_cfg, features, False, args.meta_steps, args.device)
        second = meta_throughput(name, backbone_cfg, features, True, args.meta_steps, args.device)
        kind = "cached" if cached else "computed (prompted tower)"
        print(f"| {name} | {kind} | {first:.2f} | {second:.2f} |")
    print(f"\nbatch {args.batch_size}:")
    print("| learner | plain step (ms) | GRAM step, gate regulator (ms) | overhead ratio |")
    print("|---|---|---|---|")
    for name in args.learners:
        plain, gram = regulator_overhead(name, backbone_cfg, args.train_steps, args.batch_size, args.device)
        print(f"| {name} | {1000 * plain:.1f} | {1000 * gram:.1f} | {gram / plain:.3f} |")
    if args.skip_clustering:
        return
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.points, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    start = time.perf_counter()
    faiss_kmeans(x, args.k, args.iterations, seed=1, init="random", spherical=False)
    t_faiss = time.perf_counter() - start
    xt = torch.from_numpy(x).to(args.device)
    _sync(args.device)
    start = time.perf_counter()
    torch_kmeans(xt, args.k, args.iterations, seed=1)
    _sync(args.device)
    t_torch = time.perf_counter() - start
    print(f"\n| k-means of {args.points:,} x {args.dim}, k={args.k}, {args.iterations} iterations | seconds |")
    print("|---|---|")
    print(f"| faiss | {t_faiss:.1f} |\n| torch (plain Lloyd) | {t_torch:.1f} |")
    print(f"| torch / faiss | {t_torch / t_faiss:.2f}x |")


if __name__ == "__main__":
    main()
