"""The published benchmarks, each in its usual CoOp/Dassl layout under one data root.

Each reader states only what is its own: its folder, its files and where they come from, and how
its lists are read. The protocol (few-shot picks, base/novel, checks) is in :mod:`.base` and
:mod:`.protocol`; how to lay the files out is in ``datasets/README.md``.

=================  ======================  ====================================================
registry name      folder under the root   lists come from
=================  ======================  ====================================================
imagenet           imagenet/               images/{train,val}/<wnid>/ + classnames.txt
caltech101         caltech-101/            split_zhou_Caltech101.json
oxford-pets        oxford_pets/            split_zhou_OxfordPets.json
stanford-cars      stanford_cars/          split_zhou_StanfordCars.json (paths from the folder)
oxford-flowers     oxford_flowers/         split_zhou_OxfordFlowers.json
food101            food-101/               split_zhou_Food101.json
fgvc-aircraft      fgvc_aircraft/          images_variant_{train,val,test}.txt + variants.txt
sun397             sun397/                 split_zhou_SUN397.json
dtd                dtd/                    split_zhou_DescribableTextures.json
eurosat            eurosat/                split_zhou_EuroSAT.json
ucf101             ucf101/                 split_zhou_UCF101.json
imagenet-v2        imagenetv2/             folders 0..999 + classnames.txt (test only)
imagenet-sketch    imagenet-sketch/        images/<wnid>/ + classnames.txt (test only)
imagenet-a         imagenet-adversarial/   imagenet-a/<wnid>/, 200 classes (test only)
imagenet-r         imagenet-rendition/     imagenet-r/<wnid>/, 200 classes (test only)
codan              codan/                  data/{train,val,test_day,test_night}/<Class>/
=================  ======================  ====================================================

Deviation from Dassl: folder-listed datasets (ImageNet, its variants, CODaN) list files in
sorted order. Dassl lists ImageNet with an unsorted ``os.listdir``, whose order depends on the
file system, so its ImageNet few-shot picks are only reproducible through its shared pickle; ours
are the same on every machine but not the same as that pickle.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import ClassVar

from .base import BenchmarkDataset, register_dataset
from .items import DatasetError, Datum
from .readers import list_class_folders, list_images, read_wnid_classnames
from .splitfile import SplitFileDataset

__all__ = [
    'CODaN', 'DTD', 'FGVCAircraft', 'Food101', 'ImageNet', 'ImageNetA', 'ImageNetR', 'ImageNetSketch',
    'ImageNetV2', 'OxfordFlowers', 'OxfordPets', 'StanfordCars', 'SUN397', 'Caltech101', 'EuroSAT', 'UCF101',
]

_COOP = 'https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md'


def _split_hint(drive_id: str) -> str:
    return (f"CoOp's fixed split, https://drive.google.com/file/d/{drive_id}/view "
            f'(linked from {_COOP})')


# ---------------------------------------------------------------------------- split-file benchmarks

@register_dataset('caltech101')
class Caltech101(SplitFileDataset):
    """Caltech101, 100 classes (BACKGROUND_Google and Faces_easy dropped by the split)."""
    template = 'a photo of a {}.'
    published = {'classes': 100, 'train': 4_128, 'val': 1_649, 'test': 2_465}
    knowledge = dict(file='caltech-101/knowledge.tsv', field='def_wiki')

    dataset_dir = 'caltech-101'
    image_dir = '101_ObjectCategories'
    split_file = 'split_zhou_Caltech101.json'
    num_classes = 100
    aliases = ('Caltech101', 'caltech-101')
    files = {
        '101_ObjectCategories/': 'extract 101_ObjectCategories.tar.gz (Caltech101, '
                                 'https://data.caltech.edu/records/mzrjq-6wc02) into caltech-101/',
        'split_zhou_Caltech101.json': _split_hint('1hyarUivQE36mY6jSomru6Fjd-JzwcCzN'),
    }


@register_dataset('oxford-pets')
class OxfordPets(SplitFileDataset):
    """Oxford-IIIT Pets, 37 breeds."""
    template = 'a photo of a {}, a type of pet.'
    published = {'classes': 37, 'train': 2_944, 'val': 736, 'test': 3_669}
    knowledge = dict(file='oxford_pets/knowledge.tsv', field='def_wiki')

    dataset_dir = 'oxford_pets'
    image_dir = 'images'
    split_file = 'split_zhou_OxfordPets.json'
    num_classes = 37
    aliases = ('OxfordPets', 'oxford_pets', 'pets')
    files = {
        'images/': 'extract images.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/pets/ into oxford_pets/',
        'split_zhou_OxfordPets.json': _split_hint('1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs'),
    }


@register_dataset('stanford-cars')
class StanfordCars(SplitFileDataset):
    """Stanford Cars, 196 models; split paths start with cars_train/ or cars_test/."""
    template = 'a photo of a {}.'
    published = {'classes': 196, 'train': 6_509, 'val': 1_635, 'test': 8_041}
    knowledge = dict(file='stanford_cars/knowledge.tsv', field='def_wiki')

    dataset_dir = 'stanford_cars'
    split_file = 'split_zhou_StanfordCars.json'
    num_classes = 196
    aliases = ('StanfordCars', 'stanford_cars', 'cars')
    files = {
        'cars_train/': 'cars_train.tgz of Stanford Cars (the Stanford links are dead; use a mirror, '
                       'e.g. the Kaggle copy) extracted into stanford_cars/',
        'cars_test/': 'cars_test.tgz of Stanford Cars (mirror, see cars_train) extracted into stanford_cars/',
        'split_zhou_StanfordCars.json': _split_hint('1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT'),
    }


@register_dataset('oxford-flowers')
class OxfordFlowers(SplitFileDataset):
    """Oxford Flowers-102."""
    template = 'a photo of a {}, a type of flower.'
    published = {'classes': 102, 'train': 4_093, 'val': 1_633, 'test': 2_463}
    knowledge = dict(file='oxford_flowers/knowledge.tsv', field='def_wiki')

    dataset_dir = 'oxford_flowers'
    image_dir = 'jpg'
    split_file = 'split_zhou_OxfordFlowers.json'
    num_classes = 102
    aliases = ('OxfordFlowers', 'oxford_flowers', 'flowers102', 'flowers')
    files = {
        'jpg/': 'extract 102flowers.tgz from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ into oxford_flowers/',
        'split_zhou_OxfordFlowers.json': _split_hint('1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT'),
    }


@register_dataset('food101')
class Food101(SplitFileDataset):
    """Food-101."""
    template = 'a photo of {}, a type of food.'
    published = {'classes': 101, 'train': 50_500, 'val': 20_200, 'test': 30_300}
    knowledge = dict(file='food-101/knowledge.tsv', field='def_wiki')

    dataset_dir = 'food-101'
    image_dir = 'images'
    split_file = 'split_zhou_Food101.json'
    num_classes = 101
    aliases = ('Food101', 'food-101')
    files = {
        'images/': 'extract food-101.tar.gz from https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/ '
                   'into the data root (it makes food-101/)',
        'split_zhou_Food101.json': _split_hint('1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl'),
    }


@register_dataset('sun397')
class SUN397(SplitFileDataset):
    """SUN397 scenes."""
    template = 'a photo of a {}.'
    published = {'classes': 397, 'train': 15_880, 'val': 3_970, 'test': 19_850}
    knowledge = dict(file='sun397/knowledge.json')

    dataset_dir = 'sun397'
    image_dir = 'SUN397'
    split_file = 'split_zhou_SUN397.json'
    num_classes = 397
    aliases = ('SUN397',)
    files = {
        'SUN397/': 'extract SUN397.tar.gz from https://vision.princeton.edu/projects/2010/SUN/ into sun397/',
        'split_zhou_SUN397.json': _split_hint('1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq'),
    }


@register_dataset('dtd')
class DTD(SplitFileDataset):
    """Describable Textures, 47 classes."""
    template = '{} texture.'
    published = {'classes': 47, 'train': 2_820, 'val': 1_128, 'test': 1_692}
    knowledge = dict(file='dtd/knowledge.tsv', field='def_wiki')

    dataset_dir = 'dtd'
    image_dir = 'images'
    split_file = 'split_zhou_DescribableTextures.json'
    num_classes = 47
    aliases = ('DescribableTextures', 'DTD')
    files = {
        'images/': 'extract dtd-r1.0.1.tar.gz from https://www.robots.ox.ac.uk/~vgg/data/dtd/ into the data root '
                   '(it makes dtd/)',
        'split_zhou_DescribableTextures.json': _split_hint('1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x'),
    }


@register_dataset('eurosat')
class EuroSAT(SplitFileDataset):
    """EuroSAT RGB, 10 land-use classes with CoOp's long names ("Annual Crop Land", ...)."""
    template = 'a centered satellite photo of {}.'
    published = {'classes': 10, 'train': 13_500, 'val': 5_400, 'test': 8_100}
    knowledge = dict(file='eurosat/knowledge.tsv', field='def_wiki')

    dataset_dir = 'eurosat'
    image_dir = '2750'
    split_file = 'split_zhou_EuroSAT.json'
    num_classes = 10
    aliases = ('EuroSAT',)
    files = {
        '2750/': 'extract EuroSAT.zip (the RGB version, https://github.com/phelber/EuroSAT) into eurosat/; '
                 'it holds the 2750/ folder',
        'split_zhou_EuroSAT.json': _split_hint('1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o'),
    }


@register_dataset('ucf101')
class UCF101(SplitFileDataset):
    """UCF101 actions, one middle frame per video."""
    template = 'a photo of a person doing {}.'
    published = {'classes': 101, 'train': 7_639, 'val': 1_898, 'test': 3_783}
    knowledge = dict(file='ucf101/knowledge.json')

    dataset_dir = 'ucf101'
    image_dir = 'UCF-101-midframes'
    split_file = 'split_zhou_UCF101.json'
    num_classes = 101
    aliases = ('UCF101',)
    files = {
        'UCF-101-midframes/': 'extract UCF-101-midframes.zip (middle frames made by the CoOp authors, '
                              'https://drive.google.com/file/d/10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O/view) '
                              'into ucf101/',
        'split_zhou_UCF101.json': _split_hint('1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y'),
    }


# ---------------------------------------------------------------------------- FGVC Aircraft

_AIRCRAFT_HINT = ('extract fgvc-aircraft-2013b.tar.gz (https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/), '
                  'keep only its data/ folder and rename it to fgvc_aircraft/')

@register_dataset('fgvc-aircraft')
class FGVCAircraft(BenchmarkDataset):
    """FGVC-Aircraft 2013b at the variant level (100 classes), from the official list files."""
    template = 'a photo of a {}, a type of aircraft.'
    published = {'classes': 100, 'train': 3_334, 'val': 3_333, 'test': 3_333}
    knowledge = dict(file='fgvc_aircraft/knowledge.tsv', field='def_wiki')

    dataset_dir = 'fgvc_aircraft'
    image_dir = 'images'
    num_classes = 100
    aliases = ('FGVCAircraft', 'fgvc_aircraft', 'aircraft')
    files = {'images/': _AIRCRAFT_HINT, 'variants.txt': _AIRCRAFT_HINT, 'images_variant_train.txt': _AIRCRAFT_HINT,
             'images_variant_val.txt': _AIRCRAFT_HINT, 'images_variant_test.txt': _AIRCRAFT_HINT}

    @property
    def source_path(self) -> Path:
        return self.dataset_path / 'variants.txt'

    def read_classnames(self) -> list[str]:
        with open(self.source_path, encoding='utf-8') as f:
            return [line.strip() for line in f if line.strip()]

    def read_split(self, split: str) -> list[Datum]:
        path = self.dataset_path / f'images_variant_{split}.txt'
        label_of = {name: i for i, name in enumerate(self.all_classnames)}
        items = []
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                parts = line.strip().split(' ')
                if not parts[0]:
                    continue
                classname = ' '.join(parts[1:])
                if classname not in label_of:
                    raise DatasetError(self.name, f'line {lineno}: variant {classname!r} is not in variants.txt',
                                       path)
                items.append(Datum(os.path.join(self.image_root, parts[0] + '.jpg'), label_of[classname],
                                   classname))
        return items


# ---------------------------------------------------------------------------- ImageNet and its variants

_IMAGENET_CLASSNAMES = ('classnames.txt from https://drive.google.com/file/d/1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF/view '
                        f"(CLIP's ImageNet class names, linked from {_COOP})")


class _WnidFolders(BenchmarkDataset):
    """Shared by ImageNet and its variants: wnid-named class folders and ``classnames.txt``."""

    classnames_file: ClassVar[str] = 'classnames.txt'

    @property
    def classnames_path(self) -> Path:
        """This dataset's ``classnames.txt``; the variants fall back to ImageNet's copy."""
        own = self.dataset_path / self.classnames_file
        if own.is_file() or not self.test_only:
            return own
        shared = self.data_root / 'imagenet' / 'classnames.txt'
        return shared if shared.is_file() else own

    @property
    def classnames_source(self) -> Path:
        return self.classnames_path

    def missing_files(self) -> list[tuple[str, str]]:
        own = str(self.dataset_path / self.classnames_file)
        missing = [(p, h) for p, h in super().missing_files() if p != own]
        if self.classnames_file in self.files and not self.classnames_path.is_file():
            missing.append((own, self.files[self.classnames_file]))
        return missing

    @functools.cached_property
    def wnid_names(self) -> dict[str, str]:
        """wnid -> class name, in the order of ``classnames.txt``."""
        return read_wnid_classnames(self.classnames_path)

    def _class_folders(self, folder: Path) -> list[str]:
        if not folder.is_dir():
            raise DatasetError(self.name, 'image folder not found', folder, self.image_hint())
        return list_class_folders(folder)

    def _names_of(self, wnids: list[str], folder: Path) -> list[str]:
        unknown = [w for w in wnids if w not in self.wnid_names]
        if unknown:
            raise DatasetError(self.name, f'class folder {unknown[0]!r} is not an ImageNet class of '
                                          f'{self.classnames_path}', folder / unknown[0])
        return [self.wnid_names[w] for w in wnids]

    def _read_folders(self, folder: Path, class_dirs: list[str], domain: int = 0) -> list[Datum]:
        names = self.all_classnames
        items = []
        for label, class_dir in enumerate(class_dirs):
            path = folder / class_dir
            if not path.is_dir():
                raise DatasetError(self.name, 'class folder not found', path, self.image_hint())
            files = list_images(path)
            if not files:
                raise DatasetError(self.name, f'class {names[label]!r} has no images', path)
            items.extend(Datum(os.path.join(path, f), label, names[label], domain) for f in files)
        return items


@register_dataset('imagenet')
class ImageNet(_WnidFolders):
    """ImageNet-1k (ILSVRC-2012); the official val set is the test set (and the val set)."""
    published = {'classes': 1000, 'train': 1_281_167, 'test': 50_000}
    knowledge = dict(file='imagenet/knowledge.tsv', field='def_wiki')

    dataset_dir = 'imagenet'
    image_dir = 'images'
    num_classes = 1000
    has_val = False
    aliases = ('ImageNet',)
    files = {
        'images/train/': 'the ILSVRC-2012 training images (https://image-net.org), one folder per wnid',
        'images/val/': 'the ILSVRC-2012 validation images sorted into one folder per wnid',
        'classnames.txt': _IMAGENET_CLASSNAMES,
    }

    @functools.cached_property
    def wnids(self) -> list[str]:
        """Class folders of ``images/train`` in sorted order (label = position)."""
        return self._class_folders(self.image_root / 'train')

    def read_classnames(self) -> list[str]:
        return self._names_of(self.wnids, self.image_root / 'train')

    def read_split(self, split: str) -> list[Datum]:
        folder = self.image_root / ('train' if split == 'train' else 'val')
        if split == 'test':
            extra = sorted(set(self._class_folders(folder)) - set(self.wnids))
            if extra:
                raise DatasetError(self.name, f'val folder {extra[0]!r} has no training folder', folder / extra[0])
        return self._read_folders(folder, self.wnids)


class _ImageNetVariant(_WnidFolders):
    """A test-only ImageNet variant with wnid class folders (labels by sorted folder)."""

    test_only = True

    @functools.cached_property
    def class_dirs(self) -> list[str]:
        """Class folders in sorted order (label = position)."""
        return self._class_folders(self.image_root)

    def read_classnames(self) -> list[str]:
        return self._names_of(self.class_dirs, self.image_root)

    def read_split(self, split: str) -> list[Datum]:
        return self._read_folders(self.image_root, self.class_dirs)


@register_dataset('imagenet-sketch')
class ImageNetSketch(_ImageNetVariant):
    """ImageNet-Sketch, 1000 classes, test only."""
    published = {'classes': 1000, 'test': 50_889}

    dataset_dir = 'imagenet-sketch'
    image_dir = 'images'
    num_classes = 1000
    aliases = ('ImageNetSketch',)
    files = {
        'images/': 'ImageNet-Sketch (https://github.com/HaohanWang/ImageNet-Sketch); put its 1000 wnid '
                   'folders in imagenet-sketch/images/',
        'classnames.txt': 'copy imagenet/classnames.txt here (' + _IMAGENET_CLASSNAMES + ')',
    }


@register_dataset('imagenet-a')
class ImageNetA(_ImageNetVariant):
    """ImageNet-A (natural adversarial examples), scored over its 200 classes only."""
    published = {'classes': 200, 'test': 7_500}

    dataset_dir = 'imagenet-adversarial'
    image_dir = 'imagenet-a'
    num_classes = 200
    aliases = ('ImageNetA', 'imagenet-adversarial')
    files = {
        'imagenet-a/': 'extract imagenet-a.tar (https://github.com/hendrycks/natural-adv-examples) into '
                       'imagenet-adversarial/',
        'classnames.txt': 'copy imagenet/classnames.txt here (' + _IMAGENET_CLASSNAMES + ')',
    }


@register_dataset('imagenet-r')
class ImageNetR(_ImageNetVariant):
    """ImageNet-R (renditions), scored over its 200 classes only."""
    published = {'classes': 200, 'test': 30_000}

    dataset_dir = 'imagenet-rendition'
    image_dir = 'imagenet-r'
    num_classes = 200
    aliases = ('ImageNetR', 'imagenet-rendition')
    files = {
        'imagenet-r/': 'extract imagenet-r.tar (https://github.com/hendrycks/imagenet-r) into imagenet-rendition/',
        'classnames.txt': 'copy imagenet/classnames.txt here (' + _IMAGENET_CLASSNAMES + ')',
    }


@register_dataset('imagenet-v2')
class ImageNetV2(_WnidFolders):
    """ImageNetV2 matched-frequency; folder ``k`` holds class k of ``classnames.txt``."""
    published = {'classes': 1000, 'test': 10_000}

    dataset_dir = 'imagenetv2'
    image_dir = 'imagenetv2-matched-frequency-format-val'
    num_classes = 1000
    test_only = True
    aliases = ('ImageNetV2', 'imagenetv2')
    files = {
        'imagenetv2-matched-frequency-format-val/': 'extract imagenetv2-matched-frequency.tar.gz '
                                                    '(https://github.com/modestyachts/ImageNetV2) into imagenetv2/',
        'classnames.txt': 'copy imagenet/classnames.txt here (' + _IMAGENET_CLASSNAMES + ')',
    }

    def read_classnames(self) -> list[str]:
        return list(self.wnid_names.values())

    def read_split(self, split: str) -> list[Datum]:
        return self._read_folders(self.image_root, [str(i) for i in range(len(self.all_classnames))])


# ---------------------------------------------------------------------------- CODaN

_CODAN_HINT = ('clone https://github.com/Attila94/CODaN into codan/, join codan_train.tar.bz2.part0..2 into '
               'codan_train.tar.bz2 and extract every codan_*.tar.bz2 inside codan/data/')

@register_dataset('codan')
class CODaN(BenchmarkDataset):
    """Common Objects Day and Night: 10 classes; day train/val/test and a night test set.

    ``split='test'`` (alias ``'test_day'``) is the daytime test set, ``split='test_night'`` the
    night one (items have ``domain=1``). Labels follow CODaN's own class order.
    """
    published = {'classes': 10, 'train': 10_000, 'val': 500, 'test': 2_500, 'test_night': 2_500}

    dataset_dir = 'codan'
    image_dir = 'data'
    num_classes = 10
    extra_splits = ('test_night',)
    split_aliases = {'test_day': 'test'}
    aliases = ('CODaN',)
    CLASSES: ClassVar[tuple[str, ...]] = ('Bicycle', 'Car', 'Motorbike', 'Bus', 'Boat', 'Cat', 'Dog',
                                          'Bottle', 'Cup', 'Chair')
    _FOLDERS: ClassVar[dict[str, str]] = {'train': 'train', 'val': 'val', 'test': 'test_day',
                                          'test_night': 'test_night'}
    files = {f'data/{folder}/': _CODAN_HINT for folder in ('train', 'val', 'test_day', 'test_night')}

    def read_classnames(self) -> list[str]:
        return [c.lower() for c in self.CLASSES]

    def read_split(self, split: str) -> list[Datum]:
        names = self.all_classnames
        folder = self.image_root / self._FOLDERS[split]
        domain = 1 if split == 'test_night' else 0
        items = []
        for label, cls in enumerate(self.CLASSES):
            path = folder / cls
            if not path.is_dir():
                raise DatasetError(self.name, 'class folder not found', path, _CODAN_HINT)
            items.extend(Datum(os.path.join(path, f), label, names[label], domain) for f in list_images(path))
        return items
