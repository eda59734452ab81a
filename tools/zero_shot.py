"""Zero-shot (and optionally linear-probe) accuracy of a CLIP on a set of datasets, as a table.

    python tools/zero_shot.py                                   # the tiny CLIP on the toy world
    python tools/zero_shot.py --linear-probe                    # + 16-shot linear probe per dataset
    python tools/zero_shot.py --backbone ViT-B-16 --pretrained openai \\
        --datasets dtd eurosat --data-root /data --templates dataset

Toy datasets are generated on first use into the cache (``~/.cache/vlprompt``). A test-only
dataset (a domain such as toy-shapes-night, ImageNet-A) is probed with a classifier trained on
the dataset that has the same classes; each probe is fitted once (its features extracted and its
weight decay searched once) and tested on every test set that shares its training set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vlprompt.cli import DATA_ENV, HelpFormatter, add_debug_argument, dataset_arguments, device_argument, run_tool


def _templates(kind: str, dataset: str) -> str | list[str]:
    from vlprompt.datasets import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT, get_template

    return {
        "photo": "a photo of a {}.",
        "select": IMAGENET_TEMPLATES_SELECT,
        "ensemble": IMAGENET_TEMPLATES,
    }.get(kind) or get_template(dataset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--backbone", default="toy")
    parser.add_argument("--pretrained", default=None, help="tag or weight file (default: the packaged one)")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME",
                        help="registry names (default: the toy datasets)")
    parser.add_argument("--data-root", default=None, help=f"benchmarks' root (default: ${DATA_ENV})")
    parser.add_argument("--templates", default="photo", choices=["photo", "dataset", "select", "ensemble"],
                        help="'a photo of a {}.', the dataset's hand-written one, the 7 selected or the 60 "
                             "ImageNet templates")
    parser.add_argument("--linear-probe", action="store_true", help="also fit a K-shot linear probe")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default=None, help="default: cuda when a GPU is available, else cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if args.datasets is not None:  # one name per dataset (one row each); a typo is refused before torch is imported
        args.datasets = dataset_arguments(args.datasets)
    args.device = device_argument(args.device)  # a device this machine lacks: one line, before any work
    import torch
    from tqdm import tqdm

    from vlprompt.backbones import build_clip, get_arch
    from vlprompt.datasets import build_dataset, build_test_transform
    from vlprompt.datasets.toyworld import TOY_DATASETS
    from vlprompt.evaluation import extract_features, probe_accuracy, train_linear_probe
    from vlprompt.io import atomic_write_json
    from vlprompt.tables import markdown_table
    from vlprompt.zeroshot import class_text_features

    if args.datasets is None:
        args.datasets = list(TOY_DATASETS)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    arch = get_arch(args.backbone)
    pretrained = args.pretrained or next(iter(arch.local_weights), None)
    clip = build_clip(args.backbone, pretrained=pretrained, device=args.device)
    transform = build_test_transform(clip.image_size)
    data_root = args.data_root
    toy = set(TOY_DATASETS)
    # check every dataset before the long work starts
    tests = {}
    for name in args.datasets:
        tests[name] = build_dataset(name, data_root=None if name in toy else data_root, split="test",
                                    transform=transform)

    rows, start = [], time.perf_counter()
    probes = {}  # source dataset -> (probe, weight decay): fitted once for all its test sets (its domains)
    bar = tqdm(tests.items(), desc="zero-shot" + (" + linear probe" if args.linear_probe else ""), unit="dataset")
    for name, test in bar:
        bar.set_postfix_str(name)
        feats, labels = extract_features(clip, test, args.batch_size, desc=f"{name}: test features")
        text = class_text_features(clip, test.classnames, _templates(args.templates, name)).float().cpu()
        zero_shot = ((feats @ text.t()).argmax(-1) == labels).float().mean().item() * 100
        row = {"dataset": name, "classes": len(test.classnames), "test_images": len(test),
               "zero_shot": round(zero_shot, 2)}
        if args.linear_probe:
            source = name
            if test.is_test_only:
                source = next((n for n in tests if not tests[n].is_test_only
                               and tests[n].classnames == test.classnames), None)
            if source is None:
                row["linear_probe"] = None
            else:
                if source not in probes:  # one (training set, shots, seed) per invocation: the source names it
                    src_root = None if source in toy else data_root
                    train = build_dataset(source, data_root=src_root, split="train", num_shots=args.shots,
                                          seed=args.seed, transform=transform)
                    val = build_dataset(source, data_root=src_root, split="val", num_shots=args.shots,
                                        seed=args.seed, transform=transform)
                    probes[source] = train_linear_probe(
                        extract_features(clip, train, args.batch_size,
                                         desc=f"{source}: {args.shots}-shot train features"),
                        len(test.classnames),
                        val=extract_features(clip, val, args.batch_size, desc=f"{source}: val features"),
                        desc=f"{source}: probe weight-decay search")
                head, wd = probes[source]
                acc = probe_accuracy(head, feats, labels)
                row.update(linear_probe=round(acc, 2), probe_trained_on=source, probe_weight_decay=wd)
        rows.append(row)
    bar.close()

    header = ["dataset", "classes", "test images", "zero-shot top-1"]
    if args.linear_probe:
        header += [f"{args.shots}-shot linear probe", "gap"]
    cells = []
    for r in rows:
        line = [r["dataset"], r["classes"], r["test_images"], f"{r['zero_shot']:.2f}"]
        if args.linear_probe:
            lp = r.get("linear_probe")
            note = "" if r.get("probe_trained_on") in (None, r["dataset"]) else f" (probe from {r['probe_trained_on']})"
            line += [f"{lp:.2f}{note}", f"{lp - r['zero_shot']:+.2f}"] if lp is not None else ["-", "-"]
        cells.append(line)
    print(f"\n{args.backbone} ({pretrained or 'random weights'}), templates: {args.templates}\n")
    print(markdown_table(header, cells), end="")
    print(f"\n{time.perf_counter() - start:.1f} s")
    if args.out:
        atomic_write_json(args.out, {"backbone": args.backbone, "pretrained": pretrained, "rows": rows}, indent=2)


if __name__ == "__main__":
    run_tool(main)
