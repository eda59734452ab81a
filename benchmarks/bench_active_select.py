"""Selection time of one active-learning round: the faiss coreset and k-means++ against plain torch.

    python benchmarks/bench_active_select.py                       # 100k x 512 features, 1,000 picks
    python benchmarks/bench_active_select.py --pool 20000 --picks 200 --labelled 100

Synthetic normalised features (a pool of ``--pool`` images, ``--labelled`` of them labelled, the
coreset's initial centres); both implementations pick ``--picks`` images from the same arrays in
one run. Reported: seconds per selection (best of ``--repeats``) and the torch / faiss ratio, and
whether the two coresets agree. k-centre greedy is deterministic, but on random unit vectors the
farthest points are near-ties that float32 arithmetic ordered differently (another BLAS blocking,
another thread count) can flip, after which the picks part ways; so when they differ the check
gives the first step that differs and both coresets' covering radii in float64 (the quantity the
greedy minimises), which must agree to float32 precision. k-means++ samples, so only its time is
compared. BADGE's gradient-embedding k-means++ (factorised distances, never the
``C x D`` embedding) is timed on the same pool with ``--classes`` random class probabilities.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vlprompt.active.samplers import Pool, badge, k_center_greedy, k_center_greedy_torch, kmeanspp, kmeanspp_torch


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def covering_radius(xu: torch.Tensor, xl: torch.Tensor, picks: np.ndarray, chunk: int = 8192) -> float:
    """max over the pool of the distance to its nearest centre (labelled + picked), in float64."""
    centres = torch.cat([xl, xu[torch.as_tensor(picks)]]).double()
    nearest = torch.cat([torch.cdist(xu[i:i + chunk].double(), centres).min(1).values
                         for i in range(0, len(xu), chunk)])
    return float(nearest.max())


def coreset_check(xu: torch.Tensor, xl: torch.Tensor, ours: np.ndarray, ref: np.ndarray) -> str:
    """``same picks``, or where the picks part ways and the two covering radii (they must agree)."""
    if np.array_equal(ours, ref):
        return "same picks"
    first = int(np.argmax(ours != ref))
    r_ours, r_ref = covering_radius(xu, xl, ours), covering_radius(xu, xl, ref)
    return (f"picks part at step {first + 1} (a near-tie); covering radius {r_ours:.6f} vs {r_ref:.6f} "
            f"(rel. diff {abs(r_ours - r_ref) / r_ref:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--labelled", type=int, default=1_000)
    parser.add_argument("--picks", type=int, default=1_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.pool, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labelled = rng.choice(args.pool, args.labelled, replace=False)
    unlabelled = np.setdiff1d(np.arange(args.pool), labelled)
    xu, xl = x[unlabelled], x[labelled]
    tu, tl = torch.from_numpy(xu), torch.from_numpy(xl)

    rows = []
    t_faiss, ours = best_of(lambda: k_center_greedy(xu, xl, args.picks), args.repeats)
    t_torch, ref = best_of(lambda: k_center_greedy_torch(tu, tl, args.picks).numpy(), args.repeats)
    rows.append(("coreset (k-centre greedy)", t_faiss, t_torch, coreset_check(tu, tl, ours, ref)))
    t_faiss, _ = best_of(lambda: kmeanspp(xu, args.picks, np.random.default_rng(1)), args.repeats)
    t_torch, _ = best_of(lambda: kmeanspp_torch(tu, args.picks, torch.Generator().manual_seed(1)), args.repeats)
    rows.append(("k-means++ seeding", t_faiss, t_torch, "sampled"))
    logits = rng.standard_normal((args.pool, args.classes), dtype=np.float32) * 3
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    pool = Pool(x, probs, labelled, unlabelled)
    t_badge, _ = best_of(lambda: badge(pool, args.picks, np.random.default_rng(2)), args.repeats)

    print(f"\n{args.pool:,} pool features x {args.dim} (float32), {args.labelled:,} labelled, {args.picks:,} picks, "
          f"{args.threads} CPU thread(s), best of {args.repeats}; faiss {faiss.__version__}, "
          f"torch {torch.__version__}\n")
    print("| selection | vlprompt (faiss) s | plain torch s | torch / vlprompt | check |")
    print("|---|---|---|---|---|")
    for name, tf, tt, check in rows:
        print(f"| {name} | {tf:.2f} | {tt:.2f} | {tt / tf:.2f}x | {check} |")
    print(f"\nBADGE (k-means++ on {args.classes}-class gradient embeddings, factorised, "
          f"{args.classes * args.dim:,}-d never built): {t_badge:.2f} s")


if __name__ == "__main__":
    main()
