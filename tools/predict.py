"""Classify your own images with a trained prompt (or zero-shot CLIP): the most probable classes of each image.

    python tools/predict.py work_dirs/coop/toy_shapes photos/                  # the work dir's learned.safetensors
    python tools/predict.py work_dirs/coop/dtd/learned.safetensors a.jpg b.png --top-k 3
    python tools/predict.py learned.safetensors images.txt --classes "red circle,blue star" --output out.csv
    python tools/predict.py toy photos/ --classes classes.txt --output predictions.json    # zero-shot, tiny CLIP

CHECKPOINT is a learned.safetensors (or an epoch_N.pth), a work dir holding a learned.safetensors, or a CLIP
architecture (toy, ViT-B-16, ...: zero-shot CLIP, which needs --classes; --pretrained picks its weights).

IMAGES are image files, folders (searched recursively for image files, in sorted order) or lists of paths: a
.txt file with one path a line, or a .csv file with the paths in its first column (a first row whose first cell
is path, image or file is a header); a relative path in a list is read from the list's folder. A CSV's second
column, when it has one, is each image's class: the top-1 accuracy against it is printed.

The classes are the checkpoint's own (those it was trained with) unless --classes names others: a file with one
name a line, names separated by commas, or a folder of class folders (their names, "_" read as a space). A
learner whose learned parameters belong to its classes (CoOp with class-specific contexts: one context per
trained class) classifies only those, and other names are refused.

--output out.csv writes one row per image and rank (image,rank,class,probability); --output out.json a list of
{"image": path, "top": [[class, probability], ...]} per image. Without --output a table of each image's most
probable class is printed. Images are read batch by batch; an unreadable one stops the run, naming the file.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from vlprompt.cli import HelpFormatter, UsageError, add_debug_argument, device_argument, run_tool  # noqa: E402

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt")
"""The checkpoint files :func:`vlprompt.load_prompted_clip` reads (by suffix)."""
LEARNED_FILE = "learned.safetensors"
"""What a training run's work dir holds for inference."""
LIST_SUFFIXES = (".txt", ".csv")
"""An IMAGES argument with one of these suffixes is a list of image paths."""
HEADER_CELLS = ("path", "image", "file")
"""A CSV list's first row is a header when its first cell is one of these (any case)."""
OUTPUT_SUFFIXES = (".csv", ".json")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not >= 1")
    return value


def resolve_checkpoint(value: str) -> tuple[str, bool]:
    """``(checkpoint file, True)`` for a checkpoint or a work dir holding ``learned.safetensors``, ``(value,
    False)`` for what can only be an architecture name; a :class:`UsageError` for a missing file or folder."""
    path = Path(value).expanduser()
    if path.is_dir():
        learned = path / LEARNED_FILE
        if not learned.is_file():
            raise UsageError(f"checkpoint folder {value} holds no {LEARNED_FILE} (give a training run's work dir, "
                             f"or the checkpoint file itself)")
        return str(learned), True
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise UsageError(f"checkpoint {value} is not a {LEARNED_FILE} or epoch_N.pth (a "
                             f"{', '.join(CHECKPOINT_SUFFIXES)} file)")
        return str(path), True
    if path.suffix in CHECKPOINT_SUFFIXES or "/" in value or os.sep in value:
        raise UsageError(f"checkpoint not found: {value}")
    return value, False


def _class_key(name: str) -> str:
    """How a prompt reads a class name: case, underscores and runs of spaces do not tell two classes apart."""
    return " ".join(name.replace("_", " ").lower().split())


def read_classes(value: str) -> list[str]:
    """The class names ``--classes`` gives: a file's non-blank lines, or the names between commas; a
    :class:`UsageError` naming the file (or the value) when it lists none, or one class twice."""
    path = Path(value).expanduser()
    where = f"--classes {value}"
    if path.is_dir():  # a folder of class folders (your own images): their names, "_" read as a space
        entries = [(f"folder {e.name}", " ".join(e.name.replace("_", " ").split())) for e in sorted(
            os.scandir(path), key=lambda e: e.name) if e.is_dir() and not e.name.startswith(".")]
        if not entries:
            raise UsageError(f"{where}: the folder holds no class folders (give a folder of class folders, a file "
                             "of class names, or names separated by commas)")
    elif path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"{where}: cannot read the file ({err.__class__.__name__}: {err})") from None
        entries = [(f"line {n}", line.strip()) for n, line in enumerate(lines, 1) if line.strip()]
        if not entries:
            raise UsageError(f"{where}: the file lists no class names (one name a line)")
    else:
        if "," not in value and (Path(value).suffix.lower() in (".txt", ".csv", ".json") or "/" in value):
            raise UsageError(f"{where}: no such file (give a file with one class name a line, or names separated "
                             f"by commas)")
        entries = [(f"name {n}", name.strip()) for n, name in enumerate(value.split(","), 1) if name.strip()]
        if not entries:
            raise UsageError(f"{where}: no class names (give names separated by commas, or a file of names)")
    seen: dict[str, tuple[str, str]] = {}
    for at, name in entries:
        key = _class_key(name)
        if key in seen:
            first_at, first = seen[key]
            same = "is listed twice" if first == name else f"and {first!r} ({first_at}) are the same class to a prompt"
            raise UsageError(f"{where}: {name!r} ({at}) {same}")
        seen[key] = (at, name)
    return [name for _, name in entries]


def images_under(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """The image files (by extension) in ``folder`` and below, hidden files and folders skipped, sorted by path."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(root, f) for f in files
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions]
    return sorted(found, key=lambda p: Path(p).parts)


def read_image_list(path: Path, shown: str, image_exists: Callable[[str], bool] = os.path.isfile,
                    labels: dict[str, str] | None = None) -> list[str]:
    """The image paths a ``.txt`` (one a line) or ``.csv`` (first column, optional header) list gives, each
    relative one read from the list's folder; a :class:`UsageError` naming the list and the line of an image
    that does not exist, or when it lists none. A CSV's second column, when it has one, is the image's class:
    added to ``labels`` (path -> class name, ``_`` read as a space)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{shown}: cannot read the list ({err.__class__.__name__}: {err})") from None
    classes: dict[int, str] = {}
    if path.suffix.lower() == ".csv":
        cells = [(n, row) for n, row in enumerate(csv.reader(text.splitlines()), 1) if row and row[0].strip()]
        if cells and cells[0][0] == 1 and cells[0][1][0].strip().lower() in HEADER_CELLS:
            cells = cells[1:]
        rows = [(n, row[0].strip()) for n, row in cells]
        classes = {n: " ".join(row[1].replace("_", " ").split()) for n, row in cells if len(row) > 1 and row[1].strip()}
    else:
        rows = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        raise UsageError(f"{shown}: the list names no images")
    out = []
    for n, entry in rows:
        image = os.path.join(os.path.dirname(shown), os.path.expanduser(entry))
        if not image_exists(image):
            raise UsageError(f"{shown} line {n}: no such image {entry!r} ({image})")
        out.append(image)
        if labels is not None and n in classes:
            labels[os.path.normpath(image)] = classes[n]
    return out


def collect_images(sources: list[str], extensions: tuple[str, ...],
                   image_exists: Callable[[str], bool] = os.path.isfile, labels: dict[str, str] | None = None
                   ) -> list[str]:
    """Every image the IMAGES arguments name, in order, each once; a :class:`UsageError` naming the argument
    that is missing, a folder without images or a list without (existing) images. ``image_exists`` says
    whether a path is an image file (:func:`vlprompt.datasets.loading.image_exists`: zip members too)."""
    out: list[str] = []
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            found = images_under(path, extensions)
            if not found:
                raise UsageError(f"no images ({', '.join(extensions)}) in folder {source} or below it")
            out += found
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            out += read_image_list(path, str(path), image_exists, labels)
        elif path.is_file() or image_exists(source):
            out.append(source if not path.is_file() else str(path))
        else:
            raise UsageError(f"no such image, folder or list: {source}")
    return list(dict.fromkeys(os.path.normpath(p) for p in out))


def output_argument(value: str | None) -> Path | None:
    """``--output`` as a path whose suffix says the format (.csv, .json)."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output {value}: the suffix says the format: .csv or .json")
    if path.is_dir():
        raise UsageError(f"--output {value} is a folder")
    return path


def csv_rows(results: list[dict]) -> list[list]:
    """``image, rank, class, probability`` rows: one per image and rank, rank 1 the most probable."""
    return [[r["image"], rank, name, f"{p:.6g}"] for r in results for rank, (name, p) in enumerate(r["top"], 1)]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="learned.safetensors, a work dir holding one, or a CLIP architecture (zero-shot)")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files, folders, or .txt/.csv lists")
    parser.add_argument("--classes", default=None, metavar="NAMES",
                        help="a file with one class name a line, or names separated by commas (the checkpoint's "
                             "own classes when left out; required for zero-shot)")
    parser.add_argument("--top-k", type=_positive, default=5, help="classes shown per image")
    parser.add_argument("--batch-size", type=_positive, default=64, help="images read and classified at a time")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="write the predictions to FILE.csv or FILE.json (atomically); else print a table")
    parser.add_argument("--pretrained", default=None,
                        help="weights under the prompts: an open_clip tag (openai) or a weight file (the "
                             "checkpoint's recorded ones, or an architecture's packaged ones, when left out)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (when left out: cuda if there is one)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    device = device_argument(args.device)  # a device this machine lacks: one line, before any work
    checkpoint, is_file = resolve_checkpoint(args.checkpoint)
    if not is_file:
        from vlprompt.backbones import get_arch

        try:
            get_arch(checkpoint)
        except KeyError as err:
            raise UsageError(f"checkpoint {checkpoint}: no such file or folder, and not a CLIP architecture: "
                             f"{err.args[0]}") from None
    classes = read_classes(args.classes) if args.classes is not None else None
    if not is_file and classes is None:
        raise UsageError(f"zero-shot CLIP ({args.checkpoint}) has no classes of its own: give --classes")
    output = output_argument(args.output)

    from vlprompt.datasets.loading import IMG_EXTENSIONS, image_exists

    labels: dict[str, str] = {}  # the classes a CSV list gives: the top-1 accuracy is reported against them
    images = collect_images(args.images, IMG_EXTENSIONS, image_exists, labels)
    import torch

    from vlprompt.io import atomic_write_json, atomic_write_text
    from vlprompt.tables import csv_text, markdown_table
    from vlprompt.zeroshot import FixedClassesError, load_prompted_clip

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = {"pretrained": args.pretrained} if args.pretrained else {}
    classifier = load_prompted_clip(checkpoint, device=device, **overrides)
    if classes is not None:
        try:
            classifier.check_classes(classes)
        except FixedClassesError as err:
            raise UsageError(f"--classes {args.classes}: {err.learner} cannot classify other classes than its "
                             f"trained ones: {err.problem}; leave --classes out to classify with them") from None
    results = classifier.predict(images, classes, top_k=args.top_k, batch_size=args.batch_size, progress=True)
    n_classes = len(classes if classes is not None else classifier.own_class_names)
    scored = [r for r in results if os.path.normpath(str(r["image"])) in labels]
    if scored:
        right = sum(r["top"][0][0] == labels[os.path.normpath(str(r["image"]))] for r in scored)
        print(f"top-1 {100 * right / len(scored):.2f} % on the {len(scored)} images whose class the list gives")
    if output is None:
        rows = [[r["image"], r["top"][0][0], f"{r['top'][0][1]:.3f}"] for r in results]
        print(markdown_table(["image", "class", "probability"], rows), end="")
        return results
    if output.suffix.lower() == ".json":
        atomic_write_json(output, results, indent=1)
    else:
        atomic_write_text(output, csv_text(["image", "rank", "class", "probability"], csv_rows(results)))
    k = min(args.top_k, n_classes)
    print(f"{len(results)} images, the top {k} of {n_classes} classes each: {output}")
    return results


if __name__ == "__main__":
    run_tool(main)
