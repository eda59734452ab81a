"""The evaluation protocol: few-shot picks as CoOp makes them, their cache, base/novel, named
protocols, templates and transforms."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
from fake_data import make_fake_root, shared_tree
from PIL import Image
from torchvision import transforms as T

from vlprompt.datasets import (
    BASE2NOVEL_DATASETS,
    BENCHMARKS,
    CLIP_IMAGENET_TEMPLATES,
    CLIP_MEAN,
    CLIP_STD,
    COOP_TEMPLATES,
    IMAGENET_TEMPLATES,
    IMAGENET_TEMPLATES_SELECT,
    KGCOOP_TEMPLATES,
    PROTOCOLS,
    DatasetError,
    build_dataset,
    build_test_transform,
    build_train_transform,
    get_protocol,
    get_template,
    sample_few_shot_splits,
    select_classes,
    subsample_classes,
)
from vlprompt.datasets import base as base_mod
from vlprompt.datasets import protocol as protocol_mod


@pytest.fixture(scope='session')
def tree(tmp_path_factory):
    return shared_tree(tmp_path_factory)


def build(name, root, **kw):
    kw.setdefault('progress', False)
    kw.setdefault('transform', None)
    return build_dataset(name, data_root=root, **kw)


def published_rule(train, val, num_shots, seed):
    """CoOp/Dassl, written plainly: seed the global random, then per class (first-appearance order)
    random.sample K items (all when fewer), train first, then val with min(K, 4)."""
    random.seed(seed)

    def fewshot(items, k):
        by_label = {}
        for item in items:
            if item.label not in by_label:
                by_label[item.label] = []
            by_label[item.label].append(item)
        out = []
        for label in by_label:
            group = by_label[label]
            if len(group) >= k:
                out.extend(random.sample(group, k))
            else:
                out.extend(group)
        return out

    picked_train = fewshot(train, num_shots)
    picked_val = fewshot(val, min(num_shots, 4)) if val is not None else None
    return picked_train, picked_val


# ----------------------------------------------------------------------------- few-shot picks


@pytest.mark.parametrize('seed', [1, 2, 3])
@pytest.mark.parametrize('num_shots', [1, 2, 4, 16])
@pytest.mark.parametrize('name', ['dtd', 'oxford-flowers', 'fgvc-aircraft'])
def test_few_shot_picks_equal_the_published_rule(tree, name, num_shots, seed):
    root, _ = tree
    full = build(name, root, split='test')
    train, val = full.full_split('train'), full.full_split('val')
    assert len({it.label for it in train[:10]}) > 1 or name == 'fgvc-aircraft'  # shuffled lists for some
    ref_train, ref_val = published_rule(train, val, num_shots, seed)
    ours_train, ours_val = sample_few_shot_splits(train, val, num_shots, seed)
    assert ours_train == ref_train and ours_val == ref_val
    # Through the reader (and its cache), for all classes.
    ds = build(name, root, split='train', num_shots=num_shots, seed=seed)
    assert ds.items == ref_train and ds.val == ref_val
    per_class = {label: sum(it.label == label for it in ds.items) for label in range(len(ds.classnames))}
    assert all(n == min(num_shots, 2 + label % 5) for label, n in per_class.items())


def test_picks_differ_across_seeds_and_leave_global_random_alone(tree):
    root, _ = tree
    train = build('dtd', root, split='test').full_split('train')
    random.seed(123)
    expected_next = random.random()
    random.seed(123)
    a, _ = sample_few_shot_splits(train, None, 4, seed=1)
    assert random.random() == expected_next  # a private Random(seed) was used
    b, _ = sample_few_shot_splits(train, None, 4, seed=2)
    assert a != b and sample_few_shot_splits(train, None, 4, seed=1)[0] == a


def test_imagenet_samples_train_only_and_validates_on_test(tree):
    root, _ = tree
    ds = build('imagenet', root, split='train', num_shots=2, seed=1)
    train = ds.full_split('train')
    assert ds.items == published_rule(train, None, 2, 1)[0]
    assert ds.val == ds.test == ds.full_split('test')
    cached = json.loads(ds.fewshot_file.read_text())
    assert cached['val'] is None and len(cached['train']) == 2000


# ----------------------------------------------------------------------------- few-shot cache


@pytest.fixture
def dtd_root(tmp_path):
    make_fake_root(tmp_path, ['dtd'])
    return tmp_path


def test_few_shot_cache_is_written_next_to_the_data_and_reused(dtd_root, monkeypatch):
    ds = build('dtd', dtd_root, split='train', num_shots=4, seed=3)
    path = dtd_root / 'dtd' / 'split_fewshot' / 'shot_4-seed_3.json'
    assert ds.fewshot_file == path and ds.metainfo['fewshot_file'] == str(path)
    data = json.loads(path.read_text())
    assert data['num_shots'] == 4 and data['seed'] == 3
    assert data['train'][0][0] == str(Path(ds.items[0].impath).relative_to(dtd_root / 'dtd' / 'images'))
    assert [p.name for p in path.parent.iterdir()] == ['shot_4-seed_3.json']  # no temporary file left

    def no_sampling(*args, **kwargs):
        raise AssertionError('the cached picks should have been used')

    monkeypatch.setattr(base_mod, 'sample_few_shot_splits', no_sampling)
    again = build('dtd', dtd_root, split='train', num_shots=4, seed=3)
    assert again.items == ds.items and again.val == ds.val
    with pytest.raises(AssertionError, match='cached picks'):
        build('dtd', dtd_root, split='train', num_shots=4, seed=1)


def test_few_shot_cache_from_another_dataset_is_refused(dtd_root):
    build('dtd', dtd_root, split='train', num_shots=2, seed=1)
    path = dtd_root / 'dtd' / 'split_fewshot' / 'shot_2-seed_1.json'
    data = json.loads(path.read_text())
    data['train'][0][2] = 'not a dtd class'
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match='few-shot cache does not match') as exc:
        build('dtd', dtd_root, split='train', num_shots=2, seed=1)
    assert exc.value.path == str(path)


def test_few_shot_cache_falls_back_to_user_cache_when_data_is_read_only(dtd_root, tmp_path, monkeypatch):
    monkeypatch.setenv('VLPROMPT_CACHE', str(tmp_path / 'user_cache'))
    data_dir = dtd_root / 'dtd'
    real_write = protocol_mod.atomic_write_json

    def read_only_data(path, obj):
        if Path(path).is_relative_to(data_dir):
            raise PermissionError(13, 'Read-only file system', str(path))
        real_write(path, obj)

    monkeypatch.setattr(protocol_mod, 'atomic_write_json', read_only_data)
    ds = build('dtd', dtd_root, split='train', num_shots=2, seed=1)
    assert ds.fewshot_file.is_relative_to(tmp_path / 'user_cache' / 'split_fewshot')
    assert ds.fewshot_file.parent.name.startswith('dtd-')
    assert not (data_dir / 'split_fewshot' / 'shot_2-seed_1.json').exists()
    again = build('dtd', dtd_root, split='train', num_shots=2, seed=1)
    assert again.fewshot_file == ds.fewshot_file and again.items == ds.items


@pytest.mark.skipif(os.geteuid() == 0, reason='root ignores file permissions')
def test_few_shot_cache_with_a_real_read_only_folder(dtd_root, tmp_path, monkeypatch):
    monkeypatch.setenv('VLPROMPT_CACHE', str(tmp_path / 'user_cache'))
    (dtd_root / 'dtd').chmod(0o555)
    try:
        ds = build('dtd', dtd_root, split='train', num_shots=2, seed=1)
    finally:
        (dtd_root / 'dtd').chmod(0o755)
    assert ds.fewshot_file.is_relative_to(tmp_path / 'user_cache')


# ----------------------------------------------------------------------------- base / novel


@pytest.mark.parametrize('n, base', [(47, 24), (37, 19), (10, 5), (1, 1), (397, 199)])
def test_select_classes_gives_base_the_extra_class(n, base):
    assert select_classes(range(n), 'base') == list(range(base))
    assert select_classes(range(n), 'novel') == list(range(base, n))
    assert select_classes(range(n), 'new') == select_classes(range(n), 'novel')
    assert select_classes(reversed(range(n)), 'all') == list(range(n))
    assert len(select_classes(range(n), 'base')) == math.ceil(n / 2)


def test_unknown_subsample_is_refused():
    with pytest.raises(ValueError, match='subsample'):
        select_classes(range(4), 'half')


def test_subsample_classes_labels_come_from_the_train_list():
    from vlprompt.datasets import Datum

    train = [Datum(f'{i}.jpg', label, f'c{label}') for i, label in enumerate([4, 1, 9, 1, 7])]
    test = [Datum(f't{label}.jpg', label, f'c{label}') for label in range(10)]
    base_train, base_test = subsample_classes(train, test, subsample='base')  # labels {1, 4, 7, 9}
    assert [it.label for it in base_train] == [1, 0, 0] and [it.classname for it in base_test] == ['c1', 'c4']
    novel_train, novel_test = subsample_classes(train, test, subsample='novel')
    assert [(it.label, it.classname) for it in novel_test] == [(0, 'c7'), (1, 'c9')]
    assert train[0].label == 4  # inputs untouched


def test_base_novel_on_odd_class_count_relabels_and_reuses_the_all_class_picks(tree):
    root, infos = tree
    names = infos['dtd'].classnames  # 47 classes -> 24 base, 23 novel
    every = build('dtd', root, split='train', num_shots=4, seed=2)
    base = build('dtd', root, split='train', num_shots=4, seed=2, subsample='base')
    novel = build('dtd', root, split='test', num_shots=4, seed=2, subsample='new')
    assert base.classnames == names[:24] and novel.classnames == names[24:]
    assert {it.label for it in base.items} == set(range(24))
    assert {it.label for it in novel.items} == set(range(23))
    assert all(it.classname == novel.classnames[it.label] for it in novel.items)
    # Few-shot first on all classes, then the subset (CoOp's order).
    assert [it.impath for it in base.items] == [it.impath for it in every.items if it.label < 24]
    assert [it.impath for it in base.val] == [it.impath for it in every.val if it.label < 24]
    pets = build('oxford-pets', root, split='test', subsample='base')
    assert len(pets.classnames) == 19 and len(pets.with_split('test').classnames) == 19
    assert len(build('oxford-pets', root, split='test', subsample='novel').classnames) == 18


# ----------------------------------------------------------------------------- named protocols


def test_cross_dataset_and_domain_generalization_protocols():
    xd = PROTOCOLS['cross-dataset']
    assert xd.source.dataset == 'imagenet' and xd.source.subsample == 'all' and xd.num_shots == 16
    assert [t.dataset for t in xd.targets][1:] == list(BASE2NOVEL_DATASETS[1:]) == list(xd.average)
    assert all(t.subsample == 'all' and t.split == 'test' for t in xd.targets)
    dg = get_protocol('dg')
    assert dg.average == ('imagenet-v2', 'imagenet-sketch', 'imagenet-a', 'imagenet-r') and dg.seeds == (1, 2, 3)
    b2n = get_protocol('base2novel', dataset='eurosat')
    assert (b2n.source.subsample, b2n.source.split) == ('base', 'train')
    assert [(t.subsample, t.split) for t in b2n.targets] == [('base', 'test'), ('novel', 'test')]
    assert get_protocol('few-shot', dataset='dtd', num_shots=2).num_shots == 2
    assert {t.split for t in get_protocol('day-night').targets} == {'test', 'test_night'}
    with pytest.raises(ValueError, match='unknown protocol'):
        get_protocol('zero-shot-everything')
    with pytest.raises(ValueError, match='needs a dataset'):
        get_protocol('base2novel')


# ----------------------------------------------------------------------------- templates


def _digest(templates):
    return hashlib.sha256('\n'.join(templates).encode()).hexdigest()


def test_template_lists_are_the_published_strings():
    # Digests of the lists in CoOp's and PromptSRC's trainers/imagenet_templates.py.
    assert len(CLIP_IMAGENET_TEMPLATES) == 80 and len(set(CLIP_IMAGENET_TEMPLATES)) == 80
    assert _digest(CLIP_IMAGENET_TEMPLATES) == '4f976686fb651bb5803d4689dcd849f75efe0ef19a3c801355bc9a6f03c8a5af'
    assert len(IMAGENET_TEMPLATES) == 60 and IMAGENET_TEMPLATES[0] == 'a photo of a {}.'
    assert _digest(IMAGENET_TEMPLATES) == 'dc3398ed3ffc7c259342582bc0f36d7ac66c4dee17981a37b77b0fc9c23d4f72'
    assert IMAGENET_TEMPLATES[-1] == 'itap of the {}.'
    assert IMAGENET_TEMPLATES_SELECT == ('itap of a {}.', 'a bad photo of the {}.', 'a origami {}.',
                                         'a photo of the large {}.', 'a {} in a video game.', 'art of the {}.',
                                         'a photo of the small {}.')
    for t in CLIP_IMAGENET_TEMPLATES + IMAGENET_TEMPLATES:
        assert t.count('{}') == 1


def test_dataset_templates():
    assert set(COOP_TEMPLATES) == set(BENCHMARKS) - {'codan'}
    assert COOP_TEMPLATES['dtd'] == '{} texture.'
    assert KGCOOP_TEMPLATES['dtd'] == 'a photo of a {}, a type of texture.'
    assert {k for k in COOP_TEMPLATES if COOP_TEMPLATES[k] != KGCOOP_TEMPLATES[k]} == {'dtd'}
    assert get_template('eurosat') == 'a centered satellite photo of {}.'
    assert get_template('ucf101').format('Biking') == 'a photo of a person doing Biking.'
    assert get_template('food101', 'kgcoop') == 'a photo of {}, a type of food.'
    assert get_template('codan') == get_template('toy-shapes') == 'a photo of a {}.'


# ----------------------------------------------------------------------------- transforms


def test_transforms_follow_the_published_pipeline():
    train = build_train_transform(224).transforms
    crop = train[0]
    assert isinstance(crop, T.RandomResizedCrop) and crop.size == (224, 224) and crop.scale == (0.08, 1.0)
    assert crop.interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(train[1], T.RandomHorizontalFlip) and isinstance(train[2], T.ToTensor)
    assert tuple(train[3].mean) == CLIP_MEAN and tuple(train[3].std) == CLIP_STD
    test = build_test_transform(224).transforms
    assert isinstance(test[0], T.Resize) and test[0].size == 224  # shorter side
    assert test[0].interpolation == T.InterpolationMode.BICUBIC
    assert isinstance(test[1], T.CenterCrop) and test[1].size == (224, 224)
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073) and CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_test_transform_resizes_the_shorter_side_then_crops():
    img = Image.new('RGB', (300, 200), (255, 255, 255))
    out = build_test_transform(224)(img)
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out[:, 0, 0], (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD), atol=1e-5)
    torch.manual_seed(0)
    assert build_train_transform(32)(img).shape == (3, 32, 32)
