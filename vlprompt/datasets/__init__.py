"""Benchmark datasets and the evaluation protocol of the published prompt-learning tables.

* Readers for the 11 base-to-novel benchmarks, ImageNet-V2/-Sketch/-A/-R, CODaN and any CoOp-style
  split folder (the toy world), all registered in :data:`vlprompt.registry.DATASETS`
  (:mod:`.benchmarks`, :mod:`.splitfile`).
* One shared dataset class with the protocol and the checks (:mod:`.base`), the protocol functions
  (few-shot picks, base/novel, named protocols; :mod:`.protocol`), templates (:mod:`.templates`),
  transforms (:mod:`.transforms`) and the in-memory image cache (:mod:`.loading`).
* ELEVATER's image-classification tasks in its toolkit's layout, ``elevater-<task>``
  (:mod:`.elevater`), and several datasets joined into one label space with a task id per sample
  (MVLPT's multitask training; :mod:`.multitask`).

Entry points: :func:`build_dataset`, :func:`list_datasets`, :func:`get_protocol`.
"""

from .base import DATA_ENV, BenchmarkDataset, register_dataset, resolve_data_root
from .benchmarks import (
                         DTD,
                         SUN397,
                         UCF101,
                         Caltech101,
                         CODaN,
                         EuroSAT,
                         FGVCAircraft,
                         Food101,
                         ImageNet,
                         ImageNetA,
                         ImageNetR,
                         ImageNetSketch,
                         ImageNetV2,
                         OxfordFlowers,
                         OxfordPets,
                         StanfordCars,
)
from .builder import BENCHMARKS, build_dataset, canonical_name, dataset_facts, get_dataset_class, list_datasets
from .checks import check_images, check_loader_settings
from .elevater import ELEVATER_NAMES, ELEVATER_TASKS, ElevaterDataset, ElevaterTask, register_elevater_task
from .items import DatasetError, Datum, FewShotWarning
from .loading import DEFAULT_CACHE_BYTES, ImageCache, load_image
from .multitask import ClassNameClashWarning, MultitaskDataset, TaskBalancedSampler
from .protocol import (
                         BASE2NOVEL_DATASETS,
                         PROTOCOLS,
                         DataSpec,
                         EvalProtocol,
                         base_to_novel,
                         few_shot,
                         get_protocol,
                         sample_few_shot,
                         sample_few_shot_splits,
                         select_classes,
                         subsample_classes,
)
from .splitfile import SplitFileDataset, SplitFolderDataset, ToyDataset, register_toy_datasets
from .subset import LabelledSubset
from .templates import (
                         CLIP_IMAGENET_TEMPLATES,
                         COOP_TEMPLATES,
                         IMAGENET_TEMPLATES,
                         IMAGENET_TEMPLATES_SELECT,
                         KGCOOP_TEMPLATES,
                         TEMPLATE_SETS,
                         get_template,
                         resolve_templates,
)
from .transforms import CLIP_MEAN, CLIP_STD, build_test_transform, build_train_transform, build_transform
from .user import UserDataset, UserDatasetWarning

__all__ = [
    'BASE2NOVEL_DATASETS', 'BENCHMARKS', 'CLIP_IMAGENET_TEMPLATES', 'ELEVATER_NAMES', 'ELEVATER_TASKS',
    'ClassNameClashWarning', 'ElevaterDataset', 'ElevaterTask', 'LabelledSubset', 'MultitaskDataset',
    'TaskBalancedSampler',
    'register_elevater_task', 'CLIP_MEAN', 'CLIP_STD', 'COOP_TEMPLATES',
    'DATA_ENV', 'DEFAULT_CACHE_BYTES', 'IMAGENET_TEMPLATES', 'IMAGENET_TEMPLATES_SELECT', 'KGCOOP_TEMPLATES',
    'TEMPLATE_SETS',
    'PROTOCOLS', 'BenchmarkDataset', 'CODaN', 'Caltech101', 'DTD', 'DataSpec', 'DatasetError', 'Datum',
    'EuroSAT', 'EvalProtocol', 'FGVCAircraft', 'Food101', 'ImageCache', 'ImageNet', 'ImageNetA', 'ImageNetR',
    'ImageNetSketch', 'ImageNetV2', 'OxfordFlowers', 'OxfordPets', 'SUN397', 'SplitFileDataset',
    'SplitFolderDataset', 'StanfordCars', 'ToyDataset', 'UCF101', 'FewShotWarning',
    'UserDataset', 'UserDatasetWarning', 'base_to_novel', 'build_dataset',
    'build_test_transform', 'build_train_transform', 'build_transform', 'canonical_name', 'check_images',
    'check_loader_settings', 'few_shot',
    'dataset_facts', 'get_dataset_class', 'get_protocol', 'get_template', 'list_datasets', 'load_image',
    'resolve_templates',
    'register_dataset',
    'register_toy_datasets', 'resolve_data_root', 'sample_few_shot', 'sample_few_shot_splits',
    'select_classes', 'subsample_classes',
]

# Last, so that a toy-world module importing from this package finds it complete.
register_toy_datasets()
