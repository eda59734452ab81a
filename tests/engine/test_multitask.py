"""Multitask data (MVLPT): the union label space, the balanced sampler, task masks, per-task accuracy,
the multitask model, and the ELEVATER reader on fake trees.

Everything runs on tiny split-folder datasets and fake ELEVATER folders written here (8-pixel PNGs,
zip archives), and on the random-init ``test-tiny`` CLIP; the one runner test trains 2 steps.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT
from mmengine.dataset import default_collate
from mmengine.optim import OptimWrapper
from PIL import Image
from tool_loader import load_tool

from vlprompt.datasets import (
    ELEVATER_NAMES,
    ClassNameClashWarning,
    DatasetError,
    MultitaskDataset,
    TaskBalancedSampler,
    build_dataset,
)
from vlprompt.datasets.elevater import ELEVATER_TASKS
from vlprompt.datasets.loading import image_exists, load_image, split_zip_path
from vlprompt.datasets.verify import verify_dataset
from vlprompt.errors import ConfigError
from vlprompt.learners.mvlpt.model import MultitaskAccuracyMetric, MultitaskModel, apply_task_mask

AA = ['cat', 'dog', 'cow']    # task 0
BB = ['car', 'Dog']           # task 1: 'Dog' clashes with AA's 'dog' (compared case-insensitively)


def _png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new('RGB', (size, size), colour).save(buf, format='PNG')
    return buf.getvalue()


def _split_folder(root: Path, name: str, classes: list[str], train: int = 3) -> None:
    """A CoOp split folder: ``train`` train, 1 val and 2 test images per class."""
    base = root / name
    (base / 'images').mkdir(parents=True)
    split: dict[str, list] = {'train': [], 'val': [], 'test': []}
    for label, cname in enumerate(classes):
        for s, n in (('train', train), ('val', 1), ('test', 2)):
            for j in range(n):
                rel = f'{label}_{s}_{j}.png'
                (base / 'images' / rel).write_bytes(_png((40 * label, 60 * j, 100)))
                split[s].append([rel, label, cname])
    (base / f'split_{name}.json').write_text(json.dumps(split))


CIFAR = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def _zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, 'w') as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _fake_cifar10(root: Path) -> Path:
    """ELEVATER's cifar-10 folder (iris format): 3 train, 2 test images per class, the test index
    pointing into val.zip as the real one does, one image path with a space."""
    base = root / ELEVATER_TASKS['cifar-10'].root_folder
    base.mkdir(parents=True)
    (base / 'labels.txt').write_text('\n'.join(CIFAR) + '\n\n')  # trailing blank lines are fine
    for split, archive, n in (('train', 'train.zip', 3), ('test', 'val.zip', 2)):
        members, lines = {}, []
        for label in range(len(CIFAR)):
            for j in range(n):
                member = f'{split}/img {label}_{j}.png' if (label, j) == (0, 0) else f'{split}/{label}_{j}.png'
                members[member] = _png((25 * label, 80 * j, 10))
                lines.append(f'{archive}@{member} {label}')
        _zip(base / archive, members)
        (base / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return base


def _fake_hateful_memes(root: Path) -> Path:
    """ELEVATER's hateful-memes folder (COCO format, category ids 7 and 3: labels follow id order)."""
    base = root / ELEVATER_TASKS['hateful-memes'].root_folder
    base.mkdir(parents=True)
    members = {}
    for split, n in (('train', 3), ('test', 2)):
        images, anns = [], []
        for k in range(2 * n):
            image_id = 100 * (split == 'test') + k
            members[f'img/{image_id}.png'] = _png((k * 30, 0, 200))
            images.append({'id': image_id, 'file_name': f'img/{image_id}.png', 'zip_file': 'img.zip'})
            anns.append({'id': k, 'image_id': image_id, 'category_id': 7 if k % 2 else 3})
        cats = [{'id': 7, 'name': 'hateful'}, {'id': 3, 'name': 'not hateful'}]
        (base / f'{split}_meta.json').write_text(json.dumps({'images': images, 'annotations': anns,
                                                             'categories': cats}))
    _zip(base / 'img.zip', members)
    return base


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('multitask_data')
    _split_folder(root, 'aa', AA)
    _split_folder(root, 'bb', BB)
    _fake_cifar10(root)
    _fake_hateful_memes(root)
    return root


def _tasks(**extra):
    return [dict(name='split-folder', folder='aa', num_shots=2, **extra),
            dict(name='split-folder', folder='bb', **extra)]


@pytest.fixture(scope='module')
def union(root) -> MultitaskDataset:
    with pytest.warns(ClassNameClashWarning):
        return MultitaskDataset(_tasks(), data_root=str(root), seed=1, transform=None, progress=False)


# ----------------------------------------------------------------------------- the union label space

def test_union_offsets_task_ids_and_class_keys(root, union):
    aa = build_dataset('split-folder', folder='aa', data_root=root, num_shots=2, seed=1, transform=None,
                       progress=False)
    bb = build_dataset('split-folder', folder='bb', data_root=root, transform=None, progress=False)
    assert union.task_names == ['aa', 'bb']
    assert union.task_ranges == [(0, 3), (3, 5)] and union.num_classes == 5
    assert union.sample_ranges == [(0, 6), (6, 12)] and len(union) == 12  # 2 shots x 3 + all 3 x 2
    assert union.classnames == AA + BB  # the plain names: what the learner prompts with
    assert union.class_keys == ['aa/cat', 'aa/dog', 'aa/cow', 'bb/car', 'bb/Dog']
    assert union.sample_tasks() == [0] * 6 + [1] * 6
    for i in range(len(union)):
        item = union[i]
        task, local = (0, i) if i < 6 else (1, i - 6)
        own = (aa, bb)[task][local]
        assert item['task'] == task and item['index'] == i
        assert item['label'] == own['label'] + (0, 3)[task]
        assert item['impath'] == own['impath'] and item['img'].size == own['img'].size
        assert union.classnames[item['label']] == (aa, bb)[task].classnames[own['label']]
    assert union[-1]['impath'] == union[11]['impath']
    with pytest.raises(IndexError):
        union[12]
    meta = union.metainfo
    assert meta['task_ranges'] == ((0, 3), (3, 5)) and meta['task_names'] == ('aa', 'bb')
    assert meta['classes'] == tuple(AA + BB)


def test_with_split_keeps_classes_and_offsets(union):
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no second clash warning for a derived split
        test = union.with_split('test', transform=None)
    assert test.split == 'test' and len(test) == 2 * 5
    assert test.task_ranges == union.task_ranges and test.classnames == union.classnames
    labels = [test[i]['label'] for i in range(len(test))]
    assert labels == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [test[i]['task'] for i in range(len(test))] == [0] * 6 + [1] * 4


def test_shots_are_merged_per_task(union):
    shots = union.shots
    assert shots['requested'] == 2 and shots['min'] == 2 and shots['max'] == 2 and shots['short'] == {}
    assert shots['per_task'] == {'aa': {'requested': 2, 'min': 2, 'max': 2}, 'bb': None}


def test_clashing_names_stay_apart_with_one_warning(root):
    with pytest.warns(ClassNameClashWarning) as record:
        ds = MultitaskDataset(_tasks(), data_root=str(root), transform=None, progress=False)
    clash = [w for w in record if issubclass(w.category, ClassNameClashWarning)]
    assert len(clash) == 1
    text = str(clash[0].message)
    assert "'aa' (tasks[0]) and 'bb' (tasks[1])" in text and "'Dog'" in text
    assert ds.classnames.index('dog') != ds.classnames.index('Dog')  # two labels
    assert len(set(ds.class_keys)) == ds.num_classes


def test_same_dataset_twice_needs_a_task_name(root):
    spec = dict(name='split-folder', folder='bb')
    with pytest.raises(ConfigError, match=r"tasks\[0\] and tasks\[1\] are both named 'bb'.*task_name"):
        MultitaskDataset([spec, spec], data_root=str(root), transform=None, progress=False)
    with pytest.warns(ClassNameClashWarning, match="'bb' .* and 'bb2'"):
        ds = MultitaskDataset([spec, {**spec, 'task_name': 'bb2'}], data_root=str(root), transform=None,
                              progress=False)
    assert ds.task_names == ['bb', 'bb2'] and ds.task_ranges == [(0, 2), (2, 4)]


@pytest.mark.parametrize('tasks, match', [
    ([], 'tasks must be a non-empty list'),
    ([dict(name='split-folder', folder='aa'), dict(folder='bb')], r"tasks\[1\] has no 'name' key"),
    ([dict(name='split-folder', folder='aa'), dict(name='no-such-set')], r"tasks\[1\]\.name: unknown dataset "
                                                                         r"'no-such-set'"),
    (['split-folder', 3], r'tasks\[1\] must be a dict'),
])
def test_bad_task_lists_name_the_index_and_key(root, tasks, match):
    with pytest.raises(ConfigError, match=match):
        MultitaskDataset(tasks, data_root=str(root))


def test_a_config_names_the_dataset_by_string(root):
    from vlprompt.datasets.builder import build_dataset_from_cfg

    for kind in ('multitask', 'MultitaskDataset', MultitaskDataset):
        with pytest.warns(ClassNameClashWarning):
            ds = build_dataset_from_cfg(dict(type=kind, tasks=_tasks(progress=False), data_root=str(root)))
        assert isinstance(ds, MultitaskDataset) and ds.task_ranges == [(0, 3), (3, 5)]


def test_defaults_reach_every_task_and_seed_follows_the_run(root):
    with pytest.warns(ClassNameClashWarning):
        ds = MultitaskDataset([dict(name='split-folder', folder='aa'),
                               dict(name='split-folder', folder='bb', num_shots=3, seed=5)],
                              data_root=str(root), num_shots=1, seed=7, split='val', transform=None, progress=False)
    assert [d.split for d in ds.datasets] == ['val', 'val']
    assert [d.num_shots for d in ds.datasets] == [1, 3] and [d.seed for d in ds.datasets] == [7, 5]
    assert ds.task_specs[0]['data_root'] == str(root)


# ----------------------------------------------------------------------------- the balanced sampler

class _Sized:
    """Three tasks of 2, 5 and 11 samples (global indices 0-1, 2-6, 7-17)."""

    sample_ranges = [(0, 2), (2, 7), (7, 18)]

    def __len__(self) -> int:
        return 18


def _task(index: int) -> int:
    return 0 if index < 2 else 1 if index < 7 else 2


def test_round_robin_balances_every_window_and_the_epoch():
    sampler = TaskBalancedSampler(_Sized(), seed=3)
    order = list(sampler)
    assert len(order) == len(sampler) == 18
    tasks = [_task(i) for i in order]
    assert [tasks.count(t) for t in range(3)] == [6, 6, 6]  # 18 slots / 3 tasks
    for start in range(0, 18, 3):
        assert sorted(tasks[start:start + 3]) == [0, 1, 2]  # every cycle holds every task once
    for start in range(0, 18, 6):  # batches of 6: 2 per task
        assert [tasks[start:start + 6].count(t) for t in range(3)] == [2, 2, 2]
    small = [i for i in order if _task(i) == 0]  # task 0 repeats, one full pass at a time
    assert all(sorted(small[k:k + 2]) == [0, 1] for k in range(0, 6, 2))
    big = [i for i in order if _task(i) == 2]  # task 2 is subsampled without repeats
    assert len(set(big)) == 6


def test_sampler_is_deterministic_per_seed_and_epoch():
    a, b = TaskBalancedSampler(_Sized(), seed=3), TaskBalancedSampler(_Sized(), seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first  # a new draw per epoch ...
    b.set_epoch(1)
    assert list(a) == list(b)  # ... the same on every rank
    assert list(TaskBalancedSampler(_Sized(), seed=4)) != first
    fixed = TaskBalancedSampler(_Sized(), shuffle=False)
    assert list(fixed)[:6] == [0, 2, 7, 1, 3, 8]  # tasks in order, samples in index order


def test_uniform_mode_and_epoch_length():
    sampler = TaskBalancedSampler(_Sized(), seed=0, mode='uniform', epoch_length=300)
    tasks = [_task(i) for i in sampler]
    assert len(tasks) == 300 and all(60 < tasks.count(t) < 140 for t in range(3))
    assert list(sampler) == list(TaskBalancedSampler(_Sized(), seed=0, mode='uniform', epoch_length=300))
    with pytest.raises(ConfigError, match='mode must be one of'):
        TaskBalancedSampler(_Sized(), mode='greedy')


def test_sampler_ranks_split_the_global_stream(monkeypatch):
    import vlprompt.datasets.multitask as mt

    full = TaskBalancedSampler(_Sized(), seed=2, epoch_length=17).global_indices()
    shares = []
    for rank in range(2):
        monkeypatch.setattr(mt, 'get_dist_info', lambda r=rank: (r, 2))
        sampler = TaskBalancedSampler(_Sized(), seed=2, epoch_length=17)
        shares.append(list(sampler))
        assert len(sampler) == 9
    padded = full + full[:1]  # round_up to 18 = 2 x 9
    assert shares[0] == padded[0::2] and shares[1] == padded[1::2]


def test_sampler_on_a_multitask_dataset(union):
    tasks = [union.locate(i)[0] for i in TaskBalancedSampler(union, seed=1)]
    assert tasks.count(0) == tasks.count(1) == 6


# ----------------------------------------------------------------------------- masks and per-task accuracy

RANGES = torch.tensor([[0, 3], [3, 5]])


def _official_mask(logits: torch.Tensor, task: torch.Tensor, ranges: list[tuple[int, int]]) -> torch.Tensor:
    """MVLPT's CustomCLIP.forward with MULTITASK_LABEL_PERTASK (trainers/mvlpt.py @ 6fa518b), restated."""
    n = logits.shape[1]
    start, end = torch.arange(n), torch.arange(n)
    for i, (s, e) in enumerate(ranges):
        start[i], end[i] = s, e
    index = torch.arange(n).unsqueeze(0)
    select = index.repeat(logits.shape[0], 1)
    select = (select >= start[task].unsqueeze(-1)).float() * (select < end[task].unsqueeze(-1)).float()
    return logits * select


def test_zero_mask_multiplies_by_zero_as_official():
    torch.manual_seed(0)
    logits = torch.randn(4, 5) * 10
    task = torch.tensor([0, 1, 1, 0])
    masked = apply_task_mask(logits, task, RANGES, 'zero')
    assert torch.equal(masked, _official_mask(logits, task, [(0, 3), (3, 5)]))
    assert torch.equal(masked[0, 3:], torch.zeros(2)) and torch.equal(masked[1, :3], torch.zeros(3))  # 0, not -inf
    assert torch.isfinite(masked).all()
    assert torch.equal(masked[0, :3], logits[0, :3]) and torch.equal(masked[1, 3:], logits[1, 3:])
    labels = torch.tensor([1, 4, 3, 0])
    # the zeros stay in the softmax: the loss differs from the in-task CE and from the union CE
    in_task = torch.stack([F.cross_entropy(masked[i:i + 1, s:e], labels[i:i + 1] - s)
                           for i, (s, e) in enumerate(RANGES[task].tolist())]).mean()
    assert not torch.isclose(F.cross_entropy(masked, labels), in_task)


def test_inf_mask_is_the_in_task_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(4, 5, requires_grad=True)
    task, labels = torch.tensor([0, 1, 1, 0]), torch.tensor([1, 4, 3, 0])
    masked = apply_task_mask(logits, task, RANGES, '-inf')
    assert torch.isinf(masked[0, 3:]).all() and (masked[0, 3:] < 0).all() and torch.isinf(masked[1, :3]).all()
    loss = F.cross_entropy(masked, labels)
    in_task = torch.stack([F.cross_entropy(logits[i:i + 1, s:e], labels[i:i + 1] - s)
                           for i, (s, e) in enumerate(RANGES[task].tolist())]).mean()
    assert torch.allclose(loss, in_task)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 3:].abs().sum() == 0
    assert apply_task_mask(logits, task, RANGES, 'none') is logits


def _metric(ranges=((0, 3), (3, 5)), names=('aa', 'bb'), meta: bool = True) -> MultitaskAccuracyMetric:
    metric = MultitaskAccuracyMetric() if meta else MultitaskAccuracyMetric(task_names=names, task_ranges=ranges)
    if meta:
        metric.dataset_meta = {'task_names': names, 'task_ranges': ranges}
    return metric


@pytest.mark.parametrize('meta', [True, False])
def test_accuracy_is_restricted_to_each_task(meta):
    samples = [  # union argmax in the other task; in-task argmax right
        {'logits': torch.tensor([0., 2., 1., 9., 0.]), 'label': 1, 'task': 0},
        {'logits': torch.tensor([8., 0., 0., 1., 2.]), 'label': 4, 'task': 1},
        {'logits': torch.tensor([0., 0., 0., 1., 2.]), 'label': 3, 'task': 1},  # in-task wrong
    ]
    union_top1 = sum(int(s['logits'].argmax()) == s['label'] for s in samples)
    assert union_top1 == 0
    metric = _metric(meta=meta)
    metric.process({}, samples)
    out = metric.evaluate(len(samples))
    assert out == {'accuracy/top1': 75.0, 'accuracy/top1/aa': 100.0, 'accuracy/top1/bb': 50.0}


def test_accuracy_refuses_labels_outside_their_task():
    metric = _metric()
    with pytest.raises(ValueError, match=r"label 4 is outside task 0's classes \[0, 3\)"):
        metric.process({}, [{'logits': torch.zeros(5), 'label': 4, 'task': 0}])
    no_task = _metric()
    with pytest.raises(ValueError, match='no task id'):
        no_task.process({}, [{'logits': torch.zeros(5), 'label': 1}])


# ----------------------------------------------------------------------------- the model

NAMES = AA + BB


@pytest.fixture(scope='module')
def models():
    """The same tiny model (same random backbone and prompt: seeded) under the three masks."""
    out = {}
    for mode in ('none', 'zero', '-inf'):
        torch.manual_seed(0)
        ranges = None if mode == 'none' else dict(task_ranges=[[0, 3], [3, 5]], task_names=['aa', 'bb'])
        out[mode] = MultitaskModel(dict(name='test-tiny', pretrained=None), dict(type='coop', n_ctx=2), NAMES,
                                   task_mask=mode, **(ranges or {}))
    return out


def _batch(n: int = 4, task: bool = True) -> dict:
    torch.manual_seed(5)
    items = [{'img': torch.randn(3, 32, 32), 'label': [1, 4, 3, 0][i % 4]} for i in range(n)]
    if task:
        for i, it in enumerate(items):
            it['task'] = [0, 1, 1, 0][i % 4]
    return default_collate(items)


def test_model_loss_under_each_mask(models):
    data = models['none'].data_preprocessor(_batch(), True)
    assert set(data['data_samples']) == {'label', 'task'}
    x, labels, task = data['inputs'], data['data_samples']['label'], data['data_samples']['task']
    models['none'].train()
    logits = models['none'].learner(x)  # training mode: the same logits the loss sees
    expect = {'none': F.cross_entropy(logits, labels),
              'zero': F.cross_entropy(_official_mask(logits, task, [(0, 3), (3, 5)]), labels),
              '-inf': F.cross_entropy(logits.masked_fill(torch.tensor(
                  [[j >= 3 for j in range(5)], [j < 3 for j in range(5)]])[task], float('-inf')), labels)}
    for mode, model in models.items():
        model.train()
        loss = model(x, data['data_samples'], mode='loss')['loss_ce']
        assert torch.allclose(loss, expect[mode], atol=1e-6), mode
    assert not torch.isclose(expect['none'], expect['zero']) and not torch.isclose(expect['zero'], expect['-inf'])


def test_model_train_step_and_predict(models):
    model = models['zero']
    before = {k: v.clone() for k, v in model.learner.learned_state_dict().items()}
    optim = OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    log = model.train_step(_batch(), optim)
    assert torch.isfinite(log['loss'])
    after = model.learner.learned_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    model.learner.load_state_dict({**model.learner.state_dict(), **before})  # shared fixture: undo the step
    model.eval()
    out = model.val_step(_batch(3))
    assert [o['task'] for o in out] == [0, 1, 1] and [int(o['label']) for o in out] == [1, 4, 3]
    assert all(o['logits'].shape == (5,) and o['logits'].dtype == torch.float32 for o in out)
    metric = _metric()
    metric.process({}, out)
    assert set(metric.evaluate(3)) == {'accuracy/top1', 'accuracy/top1/aa', 'accuracy/top1/bb'}


def test_model_on_a_plain_dataset(models):
    model = models['zero']  # no task ids: no mask, plain predictions
    data = model.data_preprocessor(_batch(task=False), True)
    assert data['data_samples']['task'] is None
    model.train()
    loss = model(data['inputs'], data['data_samples'], mode='loss')['loss_ce']
    assert torch.allclose(loss, F.cross_entropy(model.learner(data['inputs']), data['data_samples']['label']))
    model.eval()
    out = model.val_step(_batch(2, task=False))
    assert set(out[0]) == {'logits', 'label'}


def test_model_settings_are_checked(monkeypatch):
    from vlprompt.learners.coop import CoOp

    backbone, learner = dict(name='test-tiny', pretrained=None), dict(type='coop', n_ctx=2)
    with pytest.raises(ConfigError, match='task_mask must be one of'):
        MultitaskModel(backbone, learner, NAMES, task_mask='ninf')
    with pytest.raises(ConfigError, match='needs task_ranges'):
        MultitaskModel(backbone, learner, NAMES, task_mask='zero')
    with pytest.raises(ConfigError, match='covers 4 classes, but there are 5'):
        MultitaskModel(backbone, learner, NAMES, task_mask='zero', task_ranges=[[0, 3], [3, 4]])
    with pytest.raises(ConfigError, match=r'task_ranges\[1\] = \(2, 5\).*expected a start of 3'):
        MultitaskModel(backbone, learner, NAMES, task_mask='zero', task_ranges=[[0, 3], [2, 5]])
    monkeypatch.setattr(CoOp, 'loss', lambda self, images, labels: {})  # a learner with a loss of its own
    with pytest.raises(ConfigError, match="learner 'coop' computes its own loss"):
        MultitaskModel(backbone, learner, NAMES, task_mask='zero', task_ranges=[[0, 3], [3, 5]])


def test_build_runner_fills_task_ranges_and_scores_per_task(root, tmp_path):
    from vlprompt.engine import build_runner
    from vlprompt.engine.config import load_config

    # types as a pure-Python config file dumps them (dotted paths), so the config prints as one
    cfg = load_config(str(ROOT / 'configs/coop/toy_shapes.py'), str(tmp_path / 'work'))
    cfg.model = dict(type='vlprompt.learners.mvlpt.model.MultitaskModel',
                     backbone=dict(name='test-tiny', pretrained=None), learner=dict(type='coop', n_ctx=2),
                     task_mask='zero')
    cfg.data_root = str(root)
    dataset = 'vlprompt.datasets.multitask.MultitaskDataset'
    cfg.train_dataloader.dataset = dict(type=dataset, tasks=_tasks(progress=False))
    cfg.train_dataloader.sampler = dict(type='TaskBalancedSampler')
    cfg.train_dataloader.batch_size = 6
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.test_dataloader.dataset = dict(type=dataset, split='test', tasks=_tasks(progress=False))
    cfg.test_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg.test_evaluator = dict(type='vlprompt.learners.mvlpt.model.MultitaskAccuracyMetric')
    cfg.train_cfg.max_epochs = 1
    with pytest.warns(ClassNameClashWarning):
        runner = build_runner(cfg)
    model = runner.model
    assert model.task_ranges == [(0, 3), (3, 5)] and model.task_names == ['aa', 'bb']
    assert cfg.train_shots['per_task']['aa']['requested'] == 2
    runner.train()  # 12 samples, batch 6: 2 steps
    assert runner.iter == 2
    metrics = runner.test()
    assert set(metrics) == {'accuracy/top1', 'accuracy/top1/aa', 'accuracy/top1/bb'}
    assert metrics['accuracy/top1'] == pytest.approx((metrics['accuracy/top1/aa'] + metrics['accuracy/top1/bb']) / 2)
    assert model.metadata()['multitask'] == {'task_mask': 'zero', 'task_names': ['aa', 'bb'],
                                             'task_ranges': [[0, 3], [3, 5]]}


# ----------------------------------------------------------------------------- ELEVATER

def test_zip_paths_read_members(root):
    base = root / ELEVATER_TASKS['cifar-10'].root_folder
    path = f'{base}/train.zip@train/1_0.png'
    assert split_zip_path(path) == (f'{base}/train.zip', 'train/1_0.png')
    assert split_zip_path(f'{base}/labels.txt') is None
    assert image_exists(path) and not image_exists(f'{base}/train.zip@train/nope.png')
    assert not image_exists(f'{base}/none.zip@train/1_0.png')
    assert load_image(path).size == (8, 8)
    with pytest.raises(FileNotFoundError, match="no member 'train/nope.png'"):
        load_image(f'{base}/train.zip@train/nope.png')


def test_elevater_iris_reader(root):
    assert len(ELEVATER_NAMES) == 19 and 'elevater-cifar-10' in ELEVATER_NAMES
    assert 'elevater-voc-2007-classification' not in ELEVATER_NAMES  # multi-label: not registered
    ds = build_dataset('elevater-cifar-10', data_root=root, num_shots=2, seed=1, transform=None, progress=False)
    assert ds.classnames == CIFAR and len(ds) == 20
    assert ds.image_cache is not None and len(ds.image_cache) == 20  # decoded from the zip when built
    assert ds[0]['img'].size == (8, 8)
    full = ds.full_split('train')
    assert len(full) == 30 and full[0].impath.endswith('train.zip@train/img 0_0.png')  # a path with a space
    assert (ds.dataset_path / 'split_fewshot' / 'shot_2-seed_1.json').is_file()
    again = build_dataset('elevater-cifar-10', data_root=root, num_shots=2, seed=1, transform=None, progress=False)
    assert [it.impath for it in again.items] == [it.impath for it in ds.items]
    test = ds.with_split('test')
    assert len(test) == 20 and 'val.zip@' in test.items[0].impath
    assert ds.with_split('val').items == test.items  # no val index: the test set, as for ImageNet
    renamed = build_dataset('elevater-cifar-10', data_root=root, num_shots=2, seed=1, transform=None,
                            progress=False, class_names=[f'the {c}' for c in CIFAR])  # the same cached picks
    assert renamed.classnames[3] == 'the cat' and [it.impath for it in renamed.items] == [it.impath for it in ds.items]
    assert renamed.shots['requested'] == 2 and renamed.with_split('test').classnames == renamed.classnames
    with pytest.raises(DatasetError, match='class_names has 2 names, the dataset has 10'):
        build_dataset('elevater-cifar-10', data_root=root, split='test', class_names=['a', 'b'])
    with pytest.raises(DatasetError, match="class_names: labels 0 and 1 share the class name 'x'"):
        build_dataset('elevater-cifar-10', data_root=root, split='test', class_names=['x'] * 10)


def test_elevater_coco_reader(root):
    ds = build_dataset('elevater-hateful-memes', data_root=root, transform=None, progress=False)
    assert ds.classnames == ['not hateful', 'hateful']  # categories in id order (3, 7)
    assert [it.label for it in ds.items] == [0, 1, 0, 1, 0, 1]
    assert ds.items[0].impath.endswith('img.zip@img/0.png') and ds[1]['img'].size == (8, 8)
    assert len(ds.with_split('test')) == 4


def test_elevater_in_a_multitask_union(root):
    ds = MultitaskDataset(['elevater-hateful-memes', dict(name='elevater-cifar-10', num_shots=1)],
                          data_root=str(root), transform=None, progress=False)
    assert ds.task_names == ['elevater-hateful-memes', 'elevater-cifar-10']
    assert ds.task_ranges == [(0, 2), (2, 12)] and len(ds) == 6 + 10
    item = ds[6]
    assert item['task'] == 1 and 2 <= item['label'] < 12 and item['img'].size == (8, 8)


def _copy_cifar(root: Path, tmp_path: Path) -> Path:
    rel = ELEVATER_TASKS['cifar-10'].root_folder
    shutil.copytree(root / rel, tmp_path / rel)
    return tmp_path / rel


def test_elevater_label_out_of_range_names_file_and_line(root, tmp_path):
    base = _copy_cifar(root, tmp_path)
    lines = (base / 'test.txt').read_text().splitlines()
    lines[2] = lines[2].rsplit(' ', 1)[0] + ' 10'
    lines[5] = lines[5].rsplit(' ', 1)[0] + ' 1,2'
    (base / 'test.txt').write_text('\n'.join(lines) + '\n')
    with pytest.raises(DatasetError, match=r'2 bad line\(s\) in index file test.txt: line 3: label 10 is out of '
                                           r'range: the labelmap has 10 classes \(0..9\); line 6: .*multi-label') as e:
        build_dataset('elevater-cifar-10', data_root=tmp_path, split='test')
    assert e.value.path == str(base / 'test.txt')


def test_elevater_missing_image_names_index_line(root, tmp_path):
    base = _copy_cifar(root, tmp_path)
    with zipfile.ZipFile(root / ELEVATER_TASKS['cifar-10'].root_folder / 'val.zip') as src:
        kept = {n: src.read(n) for n in src.namelist() if n != 'test/4_1.png'}
    _zip(base / 'val.zip', kept)
    line = (base / 'test.txt').read_text().splitlines().index('val.zip@test/4_1.png 4') + 1
    with pytest.raises(DatasetError, match=rf'1 image\(s\) listed for split .test. are missing, first \(listed at '
                                           rf'test.txt line {line}, not in val.zip\)') as e:
        build_dataset('elevater-cifar-10', data_root=tmp_path, split='test')
    assert e.value.path == f'{base}/val.zip@test/4_1.png'
    report = verify_dataset('elevater-cifar-10', tmp_path)
    assert report.status == 'broken'
    assert any('test image(s) missing' in p.message and p.path.endswith('test/4_1.png') for p in report.problems)


def test_unreadable_zip_member_is_caught_before_training(root, tmp_path):
    from vlprompt.datasets.checks import check_images
    from vlprompt.datasets.loading import probe_image

    base = _copy_cifar(root, tmp_path)
    with zipfile.ZipFile(root / ELEVATER_TASKS['cifar-10'].root_folder / 'val.zip') as src:
        members = {n: src.read(n) for n in src.namelist()}
    members['test/7_0.png'] = b'not a PNG'
    _zip(base / 'val.zip', members)
    bad = f'{base}/val.zip@test/7_0.png'
    assert probe_image(bad, full=False) is not None and probe_image(bad, full=True) is not None
    assert probe_image(f'{base}/val.zip@test/7_1.png', full=False) is None
    ds = MultitaskDataset([dict(name='elevater-cifar-10', split='test')], data_root=str(tmp_path), progress=False)
    with pytest.raises(DatasetError, match='cannot read image') as e:
        check_images(ds, progress=False)  # what build_runner runs on a val/test set: each task's split
    assert e.value.path == bad


def test_elevater_missing_or_bad_labelmap(root, tmp_path):
    base = _copy_cifar(root, tmp_path)
    (base / 'labels.txt').write_text('\n'.join(CIFAR[:4] + [''] + CIFAR[4:]))
    with pytest.raises(DatasetError, match='labelmap line 5 is empty') as e:
        build_dataset('elevater-cifar-10', data_root=tmp_path, split='test')
    assert e.value.path == str(base / 'labels.txt')
    (base / 'labels.txt').unlink()
    with pytest.raises(DatasetError, match='required file or folder not found') as e:
        build_dataset('elevater-cifar-10', data_root=tmp_path, split='test')
    assert e.value.path == str(base / 'labels.txt') and 'cvinthewildeus' in e.value.hint


def test_verify_reports_elevater_against_the_toolkit_counts(root, capsys):
    report = verify_dataset('elevater-cifar-10', root)
    assert report.status == 'found' and report.num_classes == 10
    assert report.counts == {'train': 30, 'test': 20}
    assert report.published == {'classes': 10, 'train': 50000, 'test': 10000} and report.count_mismatch
    prepare_data = load_tool('prepare_data')  # tools/prepare_data.py, by its file
    code = prepare_data.main(['verify', '--data-root', str(root), '--datasets', 'elevater', '--no-progress'])
    out = capsys.readouterr().out
    assert code == 1  # most tasks are not in the fake root
    assert all(name in out for name in ELEVATER_NAMES)
    assert '2 found, 0 broken, 17 missing.' in out
