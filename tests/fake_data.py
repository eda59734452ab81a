"""Tiny fake copies of every benchmark, each in its exact on-disk layout, for tests and demos.

Every dataset has its real number of classes (so the class-count checks run as on real data) and
a few 8-pixel JPEGs per class; split-file datasets get a split file in CoOp's format, with the
train list in shuffled order for some of them so the "first appearance" rule of few-shot sampling
is exercised. ``make_fake_root`` returns, per dataset, the class names and split sizes the readers
must find.

Run as a script to make a tree (optionally with one dataset broken)::

    python tests/fake_data.py /tmp/fake_data --break dtd:missing-image
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

ALL = ('imagenet', 'caltech101', 'oxford-pets', 'stanford-cars', 'oxford-flowers', 'food101',
       'fgvc-aircraft', 'sun397', 'dtd', 'eurosat', 'ucf101', 'imagenet-v2', 'imagenet-sketch',
       'imagenet-a', 'imagenet-r', 'codan')

EUROSAT_NAMES = ('Annual Crop Land', 'Forest', 'Herbaceous Vegetation Land', 'Highway or Road',
                 'Industrial Buildings', 'Pasture Land', 'Permanent Crop Land', 'Residential Buildings',
                 'River', 'Sea or Lake')
CODAN_CLASSES = ('Bicycle', 'Car', 'Motorbike', 'Bus', 'Boat', 'Cat', 'Dog', 'Bottle', 'Cup', 'Chair')
AIRCRAFT_SPECIAL = ('707-320', 'Cessna 172', 'F-16A/B', 'A300B4', 'DHC-1')


@dataclass
class FakeInfo:
    """What the readers must find in one fake dataset."""

    name: str
    path: Path
    classnames: list[str]
    counts: dict[str, int] = field(default_factory=dict)


def _jpeg(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new('RGB', size, color).save(buf, format='JPEG')
    return buf.getvalue()


_IMAGES = [_jpeg(c, s) for c, s in [((200, 30, 30), (8, 8)), ((30, 200, 30), (12, 8)),
                                    ((30, 30, 200), (8, 10)), ((220, 220, 40), (9, 9))]]
_counter = 0


def _write_image(path: Path) -> None:
    global _counter
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_IMAGES[_counter % len(_IMAGES)])
    _counter += 1


def _per_class(label: int) -> dict[str, int]:
    """Varied split sizes per class: train 2..6 (some below K=4), val 1..2, test 1..3."""
    return {'train': 2 + label % 5, 'val': 1 + label % 2, 'test': 1 + label % 3}


def _split_dataset(root: Path, name: str, folder: str, image_dir: str, split_file: str,
                   classnames: list[str], relpath, shuffle: bool = False) -> FakeInfo:
    """Write images and a CoOp split file; ``relpath(label, classname, split, j, serial)``."""
    base = root / folder
    img_root = base / image_dir if image_dir else base
    split: dict[str, list] = {'train': [], 'val': [], 'test': []}
    serial = 0
    for label, cname in enumerate(classnames):
        for s, n in _per_class(label).items():
            for j in range(n):
                serial += 1
                rel = relpath(label, cname, s, j, serial)
                _write_image(img_root / rel)
                split[s].append([rel, label, cname])
    if shuffle:
        random.Random(0).shuffle(split['train'])
        random.Random(1).shuffle(split['val'])
    base.mkdir(parents=True, exist_ok=True)
    (base / split_file).write_text(json.dumps(split))
    img_root.mkdir(parents=True, exist_ok=True)
    return FakeInfo(name, base, list(classnames), {k: len(v) for k, v in split.items()})


def _folder_name(cname: str) -> str:
    return cname.replace(' ', '_').replace('/', '_')


def _wnids(n: int = 1000) -> list[str]:
    return [f'n{1440764 + 7 * i:08d}' for i in range(n)]


def _imagenet_names(wnids: list[str]) -> dict[str, str]:
    special = {0: 'tench', 1: 'goldfish', 2: 'great white shark', 3: "jack-o'-lantern"}
    return {w: special.get(i, f'imagenet class {i}') for i, w in enumerate(wnids)}


def _write_classnames(path: Path, names: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(f'{w} {n}\n' for w, n in names.items()))


def make_imagenet(root: Path) -> FakeInfo:
    wnids = _wnids()
    names = _imagenet_names(wnids)
    base = root / 'imagenet'
    n_train = n_test = 0
    for i, w in enumerate(wnids):
        for j in reversed(range(2 + i % 2)):  # written in reverse name order; the reader sorts
            _write_image(base / 'images' / 'train' / w / f'{w}_{j}.JPEG')
            n_train += 1
        _write_image(base / 'images' / 'val' / w / f'ILSVRC2012_val_{i:08d}.JPEG')
        n_test += 1
    _write_classnames(base / 'classnames.txt', names)
    return FakeInfo('imagenet', base, [names[w] for w in wnids], {'train': n_train, 'test': n_test})


def _variant(root: Path, name: str, folder: str, image_dir: str, wnids: list[str], ext: str) -> FakeInfo:
    all_names = _imagenet_names(_wnids())
    base = root / folder
    for w in wnids:
        _write_image(base / image_dir / w / f'{w}_0{ext}')
    _write_classnames(base / 'classnames.txt', all_names)
    return FakeInfo(name, base, [all_names[w] for w in sorted(wnids)], {'test': len(wnids)})


def make_imagenet_v2(root: Path) -> FakeInfo:
    names = _imagenet_names(_wnids())
    base = root / 'imagenetv2'
    for i in range(1000):
        for j in range(1 + i % 2):
            _write_image(base / 'imagenetv2-matched-frequency-format-val' / str(i) / f'{i:04x}{j}.jpeg')
    _write_classnames(base / 'classnames.txt', names)
    return FakeInfo('imagenet-v2', base, list(names.values()), {'test': sum(1 + i % 2 for i in range(1000))})


def make_imagenet_a(root: Path) -> FakeInfo:
    info = _variant(root, 'imagenet-a', 'imagenet-adversarial', 'imagenet-a', _wnids()[::5], '.jpg')
    (info.path / 'imagenet-a' / 'README.txt').write_text('fake')
    return info


def make_imagenet_r(root: Path) -> FakeInfo:
    info = _variant(root, 'imagenet-r', 'imagenet-rendition', 'imagenet-r', _wnids()[2::5], '.jpg')
    (info.path / 'imagenet-r' / 'README.txt').write_text('fake')
    return info


def make_imagenet_sketch(root: Path) -> FakeInfo:
    return _variant(root, 'imagenet-sketch', 'imagenet-sketch', 'images', _wnids(), '.JPEG')


def make_caltech101(root: Path) -> FakeInfo:
    names = ['face', 'leopard', 'motorbike', 'airplane'] + [f'object_{i}' for i in range(96)]
    return _split_dataset(root, 'caltech101', 'caltech-101', '101_ObjectCategories', 'split_zhou_Caltech101.json',
                          names, lambda lb, c, s, j, n: f'{_folder_name(c)}/image_{n:04d}.jpg')


def make_oxford_pets(root: Path) -> FakeInfo:
    names = ['abyssinian', 'american_bulldog'] + [f'breed_{i}' for i in range(35)]
    info = _split_dataset(root, 'oxford-pets', 'oxford_pets', 'images', 'split_zhou_OxfordPets.json', names,
                          lambda lb, c, s, j, n: f'{c.capitalize()}_{n}.jpg')
    (info.path / 'annotations').mkdir(exist_ok=True)
    return info


def make_stanford_cars(root: Path) -> FakeInfo:
    names = ['2012 Tesla Model S'] + [f'{2000 + i % 13} Make{i} Model {i}' for i in range(1, 196)]
    info = _split_dataset(root, 'stanford-cars', 'stanford_cars', '', 'split_zhou_StanfordCars.json', names,
                          lambda lb, c, s, j, n: f'{"cars_test" if s == "test" else "cars_train"}/{n:05d}.jpg')
    (info.path / 'devkit').mkdir(exist_ok=True)
    return info


def make_oxford_flowers(root: Path) -> FakeInfo:
    names = ['pink primrose', 'hard-leaved pocket orchid'] + [f'flower {i}' for i in range(100)]
    info = _split_dataset(root, 'oxford-flowers', 'oxford_flowers', 'jpg', 'split_zhou_OxfordFlowers.json',
                          names, lambda lb, c, s, j, n: f'image_{n:05d}.jpg', shuffle=True)
    (info.path / 'cat_to_name.json').write_text(json.dumps({str(i + 1): c for i, c in enumerate(names)}))
    return info


def make_food101(root: Path) -> FakeInfo:
    names = ['apple_pie', 'baby_back_ribs'] + [f'dish_{i}' for i in range(99)]
    return _split_dataset(root, 'food101', 'food-101', 'images', 'split_zhou_Food101.json', names,
                          lambda lb, c, s, j, n: f'{c}/{100000 + n}.jpg')


def make_sun397(root: Path) -> FakeInfo:
    names = ['abbey', 'indoor apartment building'] + [f'scene {i}' for i in range(395)]
    return _split_dataset(root, 'sun397', 'sun397', 'SUN397', 'split_zhou_SUN397.json', names,
                          lambda lb, c, s, j, n: f'{c[0]}/{_folder_name(c)}/sun_{n:06d}.jpg', shuffle=True)


def make_dtd(root: Path) -> FakeInfo:
    names = ['banded', 'blotchy', 'braided'] + [f'texture{i}' for i in range(44)]
    return _split_dataset(root, 'dtd', 'dtd', 'images', 'split_zhou_DescribableTextures.json', names,
                          lambda lb, c, s, j, n: f'{c}/{c}_{n:04d}.jpg', shuffle=True)


def make_eurosat(root: Path) -> FakeInfo:
    return _split_dataset(root, 'eurosat', 'eurosat', '2750', 'split_zhou_EuroSAT.json', list(EUROSAT_NAMES),
                          lambda lb, c, s, j, n: f'{c.split()[0]}{lb}/{c.split()[0]}{lb}_{n}.jpg')


def make_ucf101(root: Path) -> FakeInfo:
    names = ['Apply_Eye_Makeup', 'Apply_Lipstick'] + [f'Action_{i}' for i in range(99)]
    return _split_dataset(root, 'ucf101', 'ucf101', 'UCF-101-midframes', 'split_zhou_UCF101.json', names,
                          lambda lb, c, s, j, n: f'{c}/v_{c.replace("_", "")}_g{n:03d}_c01.jpg')


def make_fgvc_aircraft(root: Path) -> FakeInfo:
    names = list(AIRCRAFT_SPECIAL) + [f'Variant {i:03d}' for i in range(95)]
    base = root / 'fgvc_aircraft'
    counts = {}
    serial = 1000000
    lines: dict[str, list[str]] = {'train': [], 'val': [], 'test': []}
    for label, cname in enumerate(names):
        for s, n in _per_class(label).items():
            for _ in range(n):
                serial += 1
                _write_image(base / 'images' / f'{serial:07d}.jpg')
                lines[s].append(f'{serial:07d} {cname}\n')
    for s, rows in lines.items():
        (base / f'images_variant_{s}.txt').write_text(''.join(rows))
        counts[s] = len(rows)
    (base / 'variants.txt').write_text(''.join(f'{n}\n' for n in names))
    return FakeInfo('fgvc-aircraft', base, names, counts)


def make_codan(root: Path) -> FakeInfo:
    base = root / 'codan' / 'data'
    sizes = {'train': 3, 'val': 1, 'test_day': 2, 'test_night': 2}
    for split, n in sizes.items():
        for cls in CODAN_CLASSES:
            for j in range(n):
                ext = '.JPEG' if (j + len(cls)) % 3 == 0 else '.jpg'
                _write_image(base / split / cls / f'{cls.lower()}_{split}_{j}{ext}')
    counts = {'train': 30, 'val': 10, 'test': 20, 'test_night': 20}
    return FakeInfo('codan', root / 'codan', [c.lower() for c in CODAN_CLASSES], counts)


MAKERS = {
    'imagenet': make_imagenet, 'caltech101': make_caltech101, 'oxford-pets': make_oxford_pets,
    'stanford-cars': make_stanford_cars, 'oxford-flowers': make_oxford_flowers, 'food101': make_food101,
    'fgvc-aircraft': make_fgvc_aircraft, 'sun397': make_sun397, 'dtd': make_dtd, 'eurosat': make_eurosat,
    'ucf101': make_ucf101, 'imagenet-v2': make_imagenet_v2, 'imagenet-sketch': make_imagenet_sketch,
    'imagenet-a': make_imagenet_a, 'imagenet-r': make_imagenet_r, 'codan': make_codan,
}


def make_fake_root(root: str | Path, datasets: Iterable[str] | None = None) -> dict[str, FakeInfo]:
    """Write fake datasets under ``root`` (all of them by default); returns what each holds."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return {name: MAKERS[name](root) for name in (datasets or ALL)}


BREAKS = ('missing-image', 'corrupt-image', 'missing-split-file', 'missing-folder')


def break_dataset(root: str | Path, name: str, how: str = 'missing-image') -> Path:
    """Damage one fake dataset; returns the path that was removed or spoiled."""
    from vlprompt.datasets import get_dataset_class

    reader = get_dataset_class(name).inspect(root)
    if how == 'missing-folder':
        shutil.rmtree(reader.dataset_path)
        return reader.dataset_path
    if how == 'missing-split-file':
        path = reader.dataset_path / reader.split_file  # type: ignore[attr-defined]
        path.unlink()
        return path
    items = reader.full_split('test')
    path = Path(items[len(items) // 2].impath)
    if how == 'missing-image':
        path.unlink()
    elif how == 'corrupt-image':
        path.write_bytes(b'this is not a JPEG file')
    else:
        raise ValueError(f'how must be one of {BREAKS}')
    return path


def edit_split_file(root: str | Path, name: str, edit) -> Path:
    """Rewrite the split file of fake dataset ``name``: ``edit(data)`` changes the parsed JSON in place."""
    from vlprompt.datasets import get_dataset_class

    path = get_dataset_class(name).inspect(root).split_path  # type: ignore[attr-defined]
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


_SHARED: dict[str, tuple[Path, dict[str, FakeInfo]]] = {}


def shared_tree(tmp_path_factory) -> tuple[Path, dict[str, FakeInfo]]:
    """One complete fake data root per test session (tests must not damage it)."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _SHARED:
        root = tmp_path_factory.mktemp('fake_data')
        _SHARED[key] = (root, make_fake_root(root))
    return _SHARED[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root')
    parser.add_argument('--datasets', nargs='*', default=None)
    parser.add_argument('--break', dest='broken', action='append', default=[], metavar='NAME[:HOW]',
                        help=f'damage a dataset; HOW in {", ".join(BREAKS)} (default missing-image)')
    args = parser.parse_args()
    infos = make_fake_root(args.root, args.datasets)
    for spec in args.broken:
        name, _, how = spec.partition(':')
        print(f'broke {name} ({how or "missing-image"}): {break_dataset(args.root, name, how or "missing-image")}')
    print(f'wrote {len(infos)} fake datasets under {args.root}')


if __name__ == '__main__':
    main()

