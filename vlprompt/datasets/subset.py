"""A dataset restricted to chosen indices: the labelled part of an active-learning pool.

``dict(type=LabelledSubset, dataset=dict(type=build_dataset, name="dtd", split="train"), indices=[...])``
in a config trains on the listed images of the inner dataset, with its classes and labels
unchanged; ``indices=None`` keeps every image (a fully labelled pool: the supervised reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import Dataset

from ..errors import ConfigError
from ..registry import DATASETS, on_mmengine
from .builder import build_dataset_from_cfg

__all__ = ['LabelledSubset']


class LabelledSubset(Dataset):
    """The images ``indices`` (in that order) of the dataset built from ``dataset``.

    ``data_root`` and ``image_size`` are handed to the inner dataset when its dict does not set them
    (``build_runner`` fills them in on the outer dict). Indices out of range or repeated are an error
    naming the first offender, raised when the dataset is built, before any training.
    """

    def __init__(self, dataset: Mapping[str, Any] | Dataset, indices: Sequence[int] | None = None,
                 data_root: str | None = None, image_size: int | None = None, **kwargs: Any) -> None:
        if isinstance(dataset, Mapping):
            inner = dict(dataset)
            if data_root is not None:
                inner.setdefault('data_root', data_root)
            if image_size is not None:
                inner.setdefault('image_size', image_size)
            inner.update({k: v for k, v in kwargs.items() if k not in inner})
            dataset = build_dataset_from_cfg(inner)
        self.dataset = dataset
        size = len(dataset)
        if indices is None:
            self.indices = list(range(size))
        else:
            self.indices = [int(i) for i in indices]
            bad = next((i for i in self.indices if not 0 <= i < size), None)
            if bad is not None:
                raise ConfigError(f'LabelledSubset: index {bad} is outside the {size} images of {dataset!r}')
            if len(set(self.indices)) != len(self.indices):
                seen: set[int] = set()
                dup = next(i for i in self.indices if i in seen or seen.add(i))
                raise ConfigError(f'LabelledSubset: index {dup} is listed twice')
        self.classnames = list(dataset.classnames)
        self.name = getattr(dataset, 'name', type(dataset).__name__)
        self.split = getattr(dataset, 'split', None)
        self.shots = None  # not a K-shot sample: the active-learning state records the class counts

    @property
    def metainfo(self) -> dict[str, Any]:
        """The inner dataset's metadata, with the subset's size (mmengine's visualizer reads it)."""
        meta = dict(getattr(self.dataset, 'metainfo', None) or {'classes': tuple(self.classnames)})
        return {**meta, 'subset_of': len(self.dataset), 'images': len(self)}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[self.indices[index]]
        return {**item, 'index': self.indices[index]} if isinstance(item, dict) else item

    @property
    def labels(self) -> list[int]:
        """The label of every image of the subset (without decoding them)."""
        items = getattr(self.dataset, 'items', None)
        if items is None:
            return [int(self.dataset[i]['label']) for i in self.indices]
        return [int(items[i].label) for i in self.indices]

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.name!r}, {len(self)} of {len(self.dataset)} images)'


def _register_in_mmengine() -> None:
    from mmengine.registry import DATASETS as MMENGINE_DATASETS

    MMENGINE_DATASETS.register_module(name='LabelledSubset', module=LabelledSubset, force=True)


DATASETS.register_module(name='LabelledSubset', module=LabelledSubset, force=True)
on_mmengine(_register_in_mmengine)  # and in mmengine's root, when vlprompt's registries join mmengine's
