"""Backbone speed: vlprompt's promptable towers against open_clip's, side by side in one run.

    python benchmarks/bench_backbone.py                      # CPU, ViT-B-16, random weights
    python benchmarks/bench_backbone.py --device cuda --dtype bf16

Reports, as ratios to open_clip on the same machine and in the same process:
  * text: open_clip ``encode_text`` (77-token context) vs vlprompt's truncated tower on 1000
    class prompts "a photo of a {name}." (and the max abs difference of the features);
  * image: open_clip ``encode_image`` vs vlprompt's tower with no prompts and with 4 prompt
    tokens appended and replaced in every layer (deep prompts), batch 8 at 224 px.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from vlprompt.backbones import ImagePrompts, build_clip

# Words to compose typical class names of one to three words ("red fox", "annual crop land").
_HEADS = (
    "dog cat fox owl bird car truck plane boat flower tree leaf rock bridge tower church field "
    "forest lake river beach desert road house kitchen bedroom guitar piano violin camera phone "
    "laptop chair table lamp clock shoe hat shirt jacket bag bottle cup plate pizza burger salad "
    "soup cake bread"
).split()
_MODIFIERS = (
    "red golden black white small large wild sea snow mountain desert city old new wooden electric "
    "spotted striped tabby grey brown green blue pink orange yellow"
).split()


def class_names(n: int) -> list[str]:
    """``n`` distinct, deterministic class names of one to three words."""
    names = list(_HEADS)
    names += [f"{m} {h}" for m, h in itertools.product(_MODIFIERS, _HEADS)]
    names += [f"{a} {b} {h}" for a, b, h in itertools.product(_MODIFIERS, _MODIFIERS[::-1], _HEADS) if a != b]
    return names[:: max(1, len(names) // n)][:n]


def timed(fn, repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """Best wall time of ``repeats`` calls after one warm-up call, and the last output."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=4)
    parser.add_argument("--text-chunk", type=int, default=250, help="prompts per text-tower call")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default: 1 on CPU, 10 on GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    args = parser.parse_args()

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    repeats = args.repeats or (10 if device.type == "cuda" else 1)
    torch.manual_seed(0)
    clip = build_clip(args.arch, device=device, dtype=dtype)
    model = clip.model
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.arch} (random weights), {args.dtype}, {name}, torch {torch.__version__}, best of {repeats}")

    ids = clip.tokenize([f"a photo of a {n}." for n in class_names(args.num_classes)])
    chunks = ids.to(device).split(args.text_chunk)
    longest = int(ids.argmax(-1).max()) + 1

    def open_clip_text():
        return torch.cat([model.encode_text(c) for c in chunks])

    def vlprompt_text():
        return torch.cat([clip.encode_text(c) for c in chunks])

    images = torch.randn(args.batch_size, 3, clip.image_size, clip.image_size, device=device, dtype=dtype)
    n = args.prompt_tokens
    prompts = ImagePrompts(
        tokens=torch.randn(n, clip.vision_width, device=device, dtype=dtype),
        deep={i: torch.randn(n, clip.vision_width, device=device, dtype=dtype) for i in range(1, clip.vision_layers)},
    )

    with torch.no_grad():
        t_ref, text_ref = timed(open_clip_text, repeats, device)
        t_ours, text_ours = timed(vlprompt_text, repeats, device)
        i_ref, image_ref = timed(lambda: model.encode_image(images), repeats, device)
        i_plain, image_ours = timed(lambda: clip.encode_image(images), repeats, device)
        i_deep, _ = timed(lambda: clip.encode_image(images, prompts), repeats, device)
    diff = (text_ref.float() - text_ours.float()).abs().max().item()
    i_diff = (image_ref.float() - image_ours.float()).abs().max().item()

    rows = [
        (f"text, {len(ids)} class prompts", "open_clip encode_text (ctx 77)", t_ref, 1.0),
        ("", f"vlprompt truncated (ctx {longest})", t_ours, t_ref / t_ours),
        (f"image, batch {args.batch_size}", "open_clip encode_image", i_ref, 1.0),
        ("", "vlprompt, no prompts", i_plain, i_ref / i_plain),
        ("", f"vlprompt, {n} deep prompts/layer", i_deep, i_ref / i_deep),
    ]
    print("\n| workload | path | seconds | speed vs open_clip |\n|---|---|---|---|")
    for workload, path, seconds, ratio in rows:
        print(f"| {workload} | {path} | {seconds:.4f} | {ratio:.2f}x |")
    print(f"\ntext features max abs diff vs open_clip: {diff:.2e}; image: {i_diff:.2e}")


if __name__ == "__main__":
    main()
