"""Wall time of a sweep by launcher: sequential against ``--launcher local --jobs N``, and Slurm's per-run overhead.

    python benchmarks/bench_sweep.py                        # a 6-run toy sweep, sequential vs local --jobs 2
    python benchmarks/bench_sweep.py --slurm                # + the same sweep through a running Slurm
    python benchmarks/bench_sweep.py --epochs 2 --jobs 4    # shorter runs, 4 at once

The sweep is ``tools/fewshot.py --method coop`` on toy-shapes and toy-hues, 1 shot, seeds 1-3 (6 runs) with the
tiny CLIP, each launcher in a fresh work root, one after another in this run (on a quiet machine: the
launchers' runs share its cores). The table gives each launcher's wall time for the whole sweep (the zero-shot
references included, the same for every launcher) and the speed-up over sequential. The bound under it is what
running N at once can give at most here: one toy run of ``tools/train.py`` alone (all the cores) against N
started together (the cores shared out, as the local launcher does), without any sweep around them. With
``--slurm`` (start one with tests/slurm/start_local_slurm.sh) it adds the Slurm launcher and its overhead per
run against ``local``: the time from a job's submission to its function's first line, read from submitit's logs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(root: Path, epochs: int, launch: list[str]) -> float:
    """Seconds of one fewshot sweep in ``root`` with the ``launch`` options."""
    cmd = [sys.executable, str(ROOT / "tools" / "fewshot.py"), "--method", "coop", "--datasets", "toy-shapes",
           "toy-hues", "--shots", "1", "--seeds", "1", "2", "3", "--epochs", str(epochs), "--work-root", str(root),
           *launch]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "VLPROMPT_PROGRESS": "0"})
    return time.perf_counter() - start


def train_runs(root: Path, epochs: int, side_by_side: int) -> float:
    """Seconds of ``side_by_side`` toy CoOp runs of ``tools/train.py`` started at once (1 shot, seeds 1..n), each
    with the CPU threads a launcher gives it: all the cores for one run alone, ``cores // n`` for n at once."""
    threads = str(max(1, len(os.sched_getaffinity(0)) // side_by_side))
    start = time.perf_counter()
    train, config = str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / "coop" / "toy_shapes.py")
    procs = [subprocess.Popen([sys.executable, train, config,
                               "--work-dir", str(root / f"bound{side_by_side}_{seed}"), "--cfg-options",
                               f"randomness.seed={seed}", "train_dataloader.dataset.num_shots=1",
                               f"train_cfg.max_epochs={epochs}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "VLPROMPT_PROGRESS": "0",
                                                              **({"OMP_NUM_THREADS": threads} if side_by_side > 1
                                                                 else {})})
             for seed in range(1, side_by_side + 1)]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"a tools/train.py run of the bound failed ({proc.args})")
    return time.perf_counter() - start


def job_start_delays(root: Path) -> list[float]:
    """Per job: seconds from its submission (the ``_submitted.pkl`` file's mtime) to its first log line (submitit
    writes ``Starting with JobEnvironment`` to the job's stdout when the function's process begins)."""
    delays = []
    for submitted in root.rglob("submitit/*_submitted.pkl"):
        job_id = submitted.name.split("_")[0]
        for log in submitted.parent.glob(f"{job_id}_*log.out"):
            first = log.stat().st_mtime if log.stat().st_size else None
            text = log.read_text(errors="replace")
            match = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\).*Starting with JobEnvironment", text)
            if match:
                started = time.mktime(time.strptime(match.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + \
                    int(match.group(1)[20:]) / 1000
                delays.append(started - submitted.stat().st_mtime)
            elif first:
                delays.append(first - submitted.stat().st_mtime)
    return sorted(delays)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each run (the toy CLIP, 1 shot)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once for the local launcher")
    parser.add_argument("--slurm", action="store_true", help="also the Slurm launcher (a Slurm must be running)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        seq = sweep(Path(tmp) / "sequential", args.epochs, [])
        rows.append(("sequential", seq, 1.0))
        local = sweep(Path(tmp) / "local", args.epochs, ["--launcher", "local", "--jobs", str(args.jobs)])
        rows.append((f"local --jobs {args.jobs}", local, seq / local))
        local_delays = job_start_delays(Path(tmp) / "local")
        alone = train_runs(Path(tmp), args.epochs, 1)
        pair = train_runs(Path(tmp), args.epochs, args.jobs)
        slurm_delays: list[float] = []
        if args.slurm:
            slurm = sweep(Path(tmp) / "slurm", args.epochs, ["--launcher", "slurm", "--gpus-per-run", "0",
                                                              "--cpus-per-run", "1", "--time", "60"])
            rows.append(("slurm (cpus-per-run 1)", slurm, seq / slurm))
            slurm_delays = job_start_delays(Path(tmp) / "slurm")
    print(f"6-run toy sweep (fewshot.py, coop, toy-shapes + toy-hues, 1 shot, seeds 1-3, {args.epochs} epochs)\n")
    print("| launcher | wall time | speed-up over sequential |\n|---|---|---|")
    for name, seconds, ratio in rows:
        print(f"| {name} | {seconds:.1f} s | {ratio:.2f}x |")

    def describe(delays: list[float]) -> str:
        return f"median {delays[len(delays) // 2]:.2f} s (min {delays[0]:.2f}, max {delays[-1]:.2f})" if delays \
            else "not measured"

    print(f"\nthe bound on this machine: one run of tools/train.py alone {alone:.1f} s, {args.jobs} side by side "
          f"{pair:.1f} s: at most {args.jobs * alone / pair:.2f}x from running {args.jobs} at once")
    print(f"\nsubmission to the job's first line: local {describe(local_delays)}", end="")
    if args.slurm:
        overhead = (slurm_delays[len(slurm_delays) // 2] - local_delays[len(local_delays) // 2]) \
            if slurm_delays and local_delays else float("nan")
        print(f"; slurm {describe(slurm_delays)}; Slurm's overhead per run over local: {overhead:.2f} s")
    else:
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
