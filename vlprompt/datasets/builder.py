"""Finding and building datasets by name.

::

    from vlprompt.datasets import build_dataset, list_datasets

    list_datasets()            # ['imagenet', 'caltech101', ..., 'codan', 'toy-shapes', ...]
    train = build_dataset('dtd', data_root='/data', split='train', num_shots=16, seed=1,
                          subsample='base', image_size=224)
    test = train.with_split('test')            # same base classes, test transform

In an mmengine config the same arguments go in the dataset dict
(``dict(type='dtd', split='train', num_shots=16, seed=1, subsample='base')``), since every reader
is registered in :data:`vlprompt.registry.DATASETS`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from ..names import canonical_dataset
from ..registry import DATASETS
from ..user_datasets import user_dataset
from .base import BenchmarkDataset
from .protocol import BASE2NOVEL_DATASETS, DG_TARGETS, IMAGENET_FAMILY

__all__ = ['BENCHMARKS', 'build_dataset', 'build_dataset_from_cfg', 'canonical_name', 'dataset_facts',
           'dataset_spellings', 'get_dataset_class', 'list_datasets']

# The published benchmarks in table order: base-to-novel, ImageNet variants, CODaN.
BENCHMARKS: tuple[str, ...] = BASE2NOVEL_DATASETS + DG_TARGETS + ('codan',)
_GENERIC = ('split-folder', 'folder')  # readers that need a folder argument


def _readers() -> dict[str, type[BenchmarkDataset]]:
    DATASETS.import_from_location()
    return {name: cls for name, cls in DATASETS.module_dict.items()
            if isinstance(cls, type) and issubclass(cls, BenchmarkDataset)}


def list_datasets(toy: bool = True) -> list[str]:
    """Registry names of the readers: the benchmarks in table order, then the toy datasets.

    The generic ``'split-folder'`` reader is not listed (it needs a ``folder`` argument).
    """
    names = [n for n in _readers() if n not in _GENERIC]
    ordered = [n for n in BENCHMARKS if n in names] + sorted(n for n in names if n not in BENCHMARKS)
    return ordered if toy else [n for n in ordered if n in BENCHMARKS]


def dataset_spellings() -> dict[str, tuple[str, ...]]:
    """Every registered dataset (in :func:`list_datasets`'s order) and the other spellings its reader
    accepts: Dassl class names, aliases, its folder name (the table :data:`vlprompt.names.DATASET_SPELLINGS`
    copies, for the tools that check names before importing the readers)."""
    readers = _readers()
    spellings = {name: (*readers[name].aliases, readers[name].dataset_dir) for name in list_datasets()}
    return {name: tuple(dict.fromkeys(s for s in other if s and s != name)) for name, other in spellings.items()}


def canonical_name(name: str) -> str:
    """The registry name for ``name`` (the one name of a dataset); Dassl class names, aliases and folder names
    are accepted too, case and ``_``/``-`` aside. An unknown name is a ``KeyError`` naming the closest datasets
    (:func:`vlprompt.names.canonical_dataset`, with the registry's spellings)."""
    if name in _readers():
        return name
    return canonical_dataset(name, dataset_spellings())


def dataset_facts(name: str) -> dict[str, Any]:
    """What a run needs to know of dataset ``name`` (any accepted spelling), read from its reader.

    ``name`` (the one canonical name), ``aliases``, ``num_classes``, ``published`` (counts),
    ``template`` (CoOp's hand-written one), ``knowledge`` (KAPT's description source),
    ``family`` (``'imagenet'`` for ImageNet and its variants, ``'toy'`` for the generated world,
    else ``None``), ``transfer_protocol`` (the protocol a run trained on all its classes feeds:
    ``'cross-dataset'`` from ImageNet, ``'toy-domain-generalization'`` from a toy dataset) and
    ``backbone`` (the CLIP a dataset is made for: the toy CLIP for the toy world, else ``None``) and ``leaf``
    (the name as a config leaf and a run folder spell it: ``oxford_pets``; a config naming another run's
    output, ``"work_dirs/promptsrc/vit_l14/<dataset.leaf>/learned.safetensors"``).
    """
    from .splitfile import ToyDataset

    cls = get_dataset_class(name)
    spec = user_dataset(canonical_name(name))
    if spec is not None:  # your own images: the facts of a fine-grained benchmark with no published numbers
        return dict(name=canonical_name(name), aliases=(), num_classes=None, published={}, template=cls.template,
                    knowledge=dict(file=spec['descriptions']) if spec.get('descriptions') else None, family=None,
                    transfer_protocol='cross-dataset', backbone=None, leaf=canonical_name(name).replace('-', '_'))
    toy = issubclass(cls, ToyDataset)
    family = 'imagenet' if cls.name in IMAGENET_FAMILY else 'toy' if toy else None
    return dict(
        name=cls.name, aliases=tuple(cls.aliases), num_classes=cls.num_classes, published=dict(cls.published),
        template=cls.template, knowledge=dict(dataset=cls.name) if toy else cls.knowledge, family=family,
        transfer_protocol='toy-domain-generalization' if toy else 'cross-dataset',
        backbone=dict(name='toy', pretrained='toy') if toy else None, leaf=cls.name.replace('-', '_'),
    )


def get_dataset_class(name: str) -> type[BenchmarkDataset]:
    """The reader class registered under ``name`` (see :func:`canonical_name`); a user dataset's is
    :class:`~vlprompt.datasets.user.UserDataset`."""
    canonical = canonical_name(name)
    return _readers()['folder' if user_dataset(canonical) is not None else canonical]


def build_dataset(name: str, data_root: str | os.PathLike[str] | None = None, split: str | None = None,
                  num_shots: int | None = None, seed: int | None = 1, subsample: str = 'all',
                  **kwargs: Any) -> BenchmarkDataset:
    """Build the torch dataset of one split of ``name`` under the evaluation protocol.

    Args:
        name: Registry name (``list_datasets()``), a Dassl class name or a dataset folder name.
        data_root: Folder that holds the datasets; ``$VLPROMPT_DATA`` when ``None``.
        split: ``'train'``, ``'val'``, ``'test'`` or a dataset's extra split (``None``: its default).
        num_shots: K >= 1 shots per class (``None``: all images; 0 or less is an error); ``seed``
            picks them as CoOp does.
        subsample: ``'all'``, ``'base'`` or ``'novel'``.
        **kwargs: ``transform``, ``image_size``, ``cache_images``, ``cache_bytes``, ... of
            :class:`~vlprompt.datasets.base.BenchmarkDataset` (``folder`` for ``'split-folder'``).

    Raises:
        DatasetError: The data on disk is missing or broken (raised before any training).
    """
    cls = get_dataset_class(name)
    if cls.name == 'folder' and 'source' not in kwargs:
        kwargs['dataset'] = canonical_name(name)  # a user dataset, by its registered name
    return cls(data_root=data_root, split=split, num_shots=num_shots, seed=seed, subsample=subsample, **kwargs)


def build_dataset_from_cfg(cfg: Mapping[str, Any]) -> Any:
    """A dataset from a config's ``dataset`` dict: its ``type`` is the builder itself (a pure-Python
    config) or a registered name (looked up among registered datasets only)."""
    from mmengine.registry import DATASETS as MMENGINE_DATASETS

    from ..registry import registered_get, use_mmengine

    use_mmengine()  # vlprompt's readers in mmengine's tree
    cfg = copy.deepcopy(dict(cfg))
    kind = cfg.pop('type')
    if callable(kind):
        return kind(**cfg)
    registered_get(MMENGINE_DATASETS, kind)  # a name from a config: registered, or refused before mmengine imports it
    return MMENGINE_DATASETS.build(dict(type=kind, **cfg))


DATASETS.register_module(name='build_dataset', module=build_dataset, force=True)  # configs name it as their type
