"""Readers of every benchmark on fake trees in their exact layouts, the checks, and the image cache."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import mmengine.registry
import pytest
import torch
from fake_data import ALL, break_dataset, make_fake_root, shared_tree
from PIL import Image

from vlprompt.datasets import (
    BENCHMARKS,
    DTD,
    DatasetError,
    ImageNet,
    build_dataset,
    canonical_name,
    get_dataset_class,
    list_datasets,
)
from vlprompt.datasets import loading as loading_mod
from vlprompt.registry import DATASETS


@pytest.fixture(scope='session')
def tree(tmp_path_factory):
    return shared_tree(tmp_path_factory)


def build(name, root, **kw):
    kw.setdefault('progress', False)
    return build_dataset(name, data_root=root, **kw)


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_benchmark():
    assert list_datasets(toy=False) == list(BENCHMARKS) == list(ALL)
    assert set(ALL) <= set(list_datasets())
    assert 'split-folder' not in list_datasets()
    assert DATASETS.get('oxford-pets').name == 'oxford-pets'
    # A child of mmengine's root registry, reachable with the vlprompt scope.
    assert mmengine.registry.DATASETS.get('vlprompt.dtd') is DTD


def test_names_accept_dassl_and_folder_spellings():
    assert canonical_name('OxfordPets') == 'oxford-pets'
    assert canonical_name('DescribableTextures') == 'dtd'
    assert canonical_name('fgvc_aircraft') == 'fgvc-aircraft'
    assert canonical_name('imagenetv2') == 'imagenet-v2'
    assert canonical_name('imagenet-adversarial') == 'imagenet-a'
    assert canonical_name('flowers102') == 'oxford-flowers'
    assert canonical_name('Caltech-101') == 'caltech101'
    with pytest.raises(KeyError, match='unknown dataset'):
        get_dataset_class('mnist')


def test_mmengine_builds_a_split_from_a_config_dict(tree):
    root, info = tree
    ds = DATASETS.build(dict(type='eurosat', data_root=str(root), split='test', progress=False))
    assert len(ds) == info['eurosat'].counts['test']
    assert ds.metainfo['classes'] == tuple(info['eurosat'].classnames)


# ----------------------------------------------------------------------------- every reader


@pytest.mark.parametrize('name', ALL)
def test_reader_counts_labels_and_classnames(tree, name):
    root, infos = tree
    info = infos[name]
    for split, count in info.counts.items():
        ds = build(name, root, split=split, transform=None)
        assert ds.split == split
        assert len(ds) == count, split
        assert ds.classnames == info.classnames
        assert len(ds.classnames) == get_dataset_class(name).num_classes
        assert {it.label for it in ds.items} == set(range(len(info.classnames)))
        for it in ds.items:
            assert it.classname == ds.classnames[it.label]
            assert Path(it.impath).is_file()
            assert Path(it.impath).is_relative_to(info.path)
    if 'train' not in info.counts:  # test-only
        assert build(name, root).split == 'test'
        with pytest.raises(DatasetError, match='test-only'):
            build(name, root, split='train')


def test_split_file_classnames_are_taken_verbatim(tree):
    root, _ = tree
    assert build('stanford-cars', root, split='test').classnames[0] == '2012 Tesla Model S'
    assert build('eurosat', root, split='test').classnames[0] == 'Annual Crop Land'
    assert build('ucf101', root, split='test').classnames[0] == 'Apply_Eye_Makeup'
    cars = build('stanford-cars', root, split='train', transform=None)
    assert all('/stanford_cars/cars_train/' in it.impath for it in cars.items)  # paths from the dataset folder
    assert all('/cars_test/' in it.impath for it in cars.test)


def test_imagenet_lists_sorted_and_uses_test_as_val(tree):
    root, info = tree
    ds = build('imagenet', root, split='train', transform=None)
    for label in (0, 1, 999):
        paths = [it.impath for it in ds.items if it.label == label]
        assert paths == sorted(paths) and len(paths) == 2 + label % 2
    wnids = sorted(p.name for p in (info['imagenet'].path / 'images' / 'train').iterdir())
    assert Path(ds.items[0].impath).parent.name == wnids[0]
    assert ds.val == ds.test and len(ds.val) == 1000
    assert ds.classnames[:4] == ['tench', 'goldfish', 'great white shark', "jack-o'-lantern"]


def test_imagenet_variants_scoring_classes(tree):
    root, info = tree
    a = build('imagenet-a', root)
    wnids_a = sorted(p.name for p in (info['imagenet-a'].path / 'imagenet-a').iterdir() if p.is_dir())
    assert len(a.classnames) == 200 and len(wnids_a) == 200  # README.txt is not a class
    assert [Path(it.impath).parent.name for it in a.items] == wnids_a
    assert a.classnames[0] == 'tench' and a.classnames[1] == 'imagenet class 5'
    r = build('imagenet-r', root)
    assert r.classnames[0] == 'great white shark' and len(r.classnames) == 200
    v2 = build('imagenet-v2', root)
    by_folder = {Path(it.impath).parent.name: it.label for it in v2.items}
    assert by_folder['5'] == 5 and by_folder['999'] == 999 and by_folder['10'] == 10  # not lexicographic
    assert v2.classnames == info['imagenet'].classnames


def test_imagenet_variant_needs_known_wnids_and_falls_back_to_imagenet_classnames(tmp_path, tree):
    make_fake_root(tmp_path, ['imagenet-a'])
    (tmp_path / 'imagenet-adversarial' / 'classnames.txt').unlink()
    with pytest.raises(DatasetError, match='classnames.txt'):
        build('imagenet-a', tmp_path)
    (tmp_path / 'imagenet').mkdir()
    shutil.copy(tree[1]['imagenet'].path / 'classnames.txt', tmp_path / 'imagenet' / 'classnames.txt')
    assert len(build('imagenet-a', tmp_path).classnames) == 200  # uses imagenet/classnames.txt
    folder = tmp_path / 'imagenet-adversarial' / 'imagenet-a'
    first = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    first.rename(folder / 'n99999999')
    with pytest.raises(DatasetError, match='n99999999'):
        build('imagenet-a', tmp_path)


def test_aircraft_classes_from_variants_txt(tree):
    root, info = tree
    ds = build('fgvc-aircraft', root, split='val', transform=None)
    assert ds.classnames[:5] == ['707-320', 'Cessna 172', 'F-16A/B', 'A300B4', 'DHC-1']
    first = (info['fgvc-aircraft'].path / 'images_variant_val.txt').read_text().splitlines()[0]
    assert Path(ds.items[0].impath).name == first.split(' ')[0] + '.jpg'


def test_codan_day_and_night(tree):
    root, _ = tree
    day = build('codan', root, split='test_day', transform=None)
    night = day.with_split('test_night', transform=None)
    assert day.split == 'test' and len(day) == 20 and len(night) == 20
    assert day.classnames == ['bicycle', 'car', 'motorbike', 'bus', 'boat', 'cat', 'dog', 'bottle', 'cup', 'chair']
    assert {it.domain for it in day.items} == {0} and {it.domain for it in night.items} == {1}
    assert any(it.impath.endswith('.JPEG') for it in night.items)
    assert night[0]['domain'] == 1
    with pytest.raises(ValueError, match='no split'):
        build('codan', root, split='test_dusk')


def test_generic_split_folder_reader(tmp_path):
    folder = tmp_path / 'mine'
    rows = []
    for label, cls in enumerate(['red circle', 'blue square', 'green star']):
        for j in range(2):
            rel = f'{cls.replace(" ", "_")}/{j}.png'
            (folder / 'images' / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new('RGB', (6, 6), (label * 80, 0, 0)).save(folder / 'images' / rel)
            rows.append([rel, label, cls])
    (folder / 'split_mine.json').write_text(json.dumps({'train': [], 'val': [], 'test': rows}))
    ds = build('split-folder', tmp_path, folder='mine', image_size=16)
    assert ds.split == 'test' and ds.is_test_only and len(ds) == 6
    assert ds.classnames == ['red circle', 'blue square', 'green star']
    assert ds[5]['img'].shape == (3, 16, 16) and ds[5]['label'] == 2
    novel = build('split-folder', tmp_path, folder='mine', subsample='novel', transform=None)
    assert novel.classnames == ['green star'] and {it.label for it in novel.items} == {0}


def test_toy_datasets_are_registered_and_built_lazily():
    toyworld = pytest.importorskip('vlprompt.datasets.toyworld')
    names = list(toyworld.TOY_DATASETS)
    assert set(names) <= set(list_datasets())
    name = names[0]
    train = build_dataset(name, split='train', num_shots=2, seed=1, subsample='base', image_size=32,
                          progress=False)
    n = len(toyworld.toy_classnames(name))
    assert get_dataset_class(name).num_classes == n
    assert len(train.classnames) == (n + 1) // 2 and len(train) == 2 * len(train.classnames)
    assert train[0]['img'].shape == (3, 32, 32)
    assert train.dataset_path.name == name and (train.dataset_path / f'split_{name}.json').is_file()


def test_toy_reader_calls_the_generator_on_first_use(tmp_path, monkeypatch):
    from vlprompt.datasets import splitfile

    calls = []

    def ensure_toy_dataset(name, root=None):
        calls.append((name, root))
        folder = Path(root or tmp_path / 'cache') / name
        rows = []
        for label in range(3):
            rel = f'c{label}.png'
            (folder / 'images').mkdir(parents=True, exist_ok=True)
            Image.new('RGB', (4, 4)).save(folder / 'images' / rel)
            rows.append([rel, label, f'class {label}'])
        (folder / f'split_{name}.json').write_text(json.dumps({'train': [], 'val': [], 'test': rows}))
        return folder

    stub = type('Stub', (), {'TOY_DATASETS': ('toy-stub',), 'ensure_toy_dataset': staticmethod(ensure_toy_dataset),
                             'toy_classnames': staticmethod(lambda name: ['a', 'b', 'c'])})
    monkeypatch.setattr(splitfile, 'toyworld_module', lambda: stub)
    monkeypatch.setenv('VLPROMPT_DATA', str(tmp_path / 'real_data'))
    try:
        assert splitfile.register_toy_datasets() == ('toy-stub',) and calls == []  # nothing generated yet
        ds = build_dataset('toy-stub', progress=False, transform=None)
        assert calls == [('toy-stub', None)]  # $VLPROMPT_DATA is not used for toy datasets
        assert ds.is_test_only and ds.split == 'test' and ds.classnames == ['class 0', 'class 1', 'class 2']
        build_dataset('toy-stub', data_root=tmp_path / 'explicit', progress=False, transform=None)
        assert calls[-1] == ('toy-stub', tmp_path / 'explicit')
    finally:
        DATASETS.module_dict.pop('toy-stub', None)


# ----------------------------------------------------------------------------- data root


def test_data_root_from_argument_env_or_error(tree, monkeypatch):
    root, _ = tree
    monkeypatch.setenv('VLPROMPT_DATA', str(root))
    assert build_dataset('dtd', split='test', progress=False).dataset_path == root / 'dtd'
    monkeypatch.setenv('VLPROMPT_DATA', str(root / 'elsewhere'))
    assert build('dtd', root, split='test').dataset_path == root / 'dtd'  # the argument wins
    monkeypatch.delenv('VLPROMPT_DATA')
    with pytest.raises(DatasetError, match='VLPROMPT_DATA'):
        build_dataset('dtd', split='test')


# ----------------------------------------------------------------------------- broken input


@pytest.fixture
def dtd_root(tmp_path):
    make_fake_root(tmp_path, ['dtd'])
    return tmp_path


def _edit_split(root: Path, fn) -> Path:
    path = root / 'dtd' / 'split_zhou_DescribableTextures.json'
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


def test_error_missing_split_file_names_file_dataset_and_source(dtd_root):
    path = break_dataset(dtd_root, 'dtd', 'missing-split-file')
    with pytest.raises(DatasetError) as exc:
        build('dtd', dtd_root, split='test')
    assert isinstance(exc.value, ValueError)
    assert exc.value.dataset == 'dtd' and exc.value.path == str(path)
    assert '[dtd]' in str(exc.value) and str(path) in str(exc.value) and 'drive.google.com' in str(exc.value)


def test_error_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match='dataset folder not found') as exc:
        build('oxford-pets', tmp_path)
    assert exc.value.path == str(tmp_path / 'oxford_pets') and 'robots.ox.ac.uk' in str(exc.value)


def test_error_missing_image_of_the_selected_split(dtd_root):
    path = break_dataset(dtd_root, 'dtd', 'missing-image')  # a test image
    with pytest.raises(DatasetError, match='missing') as exc:
        build('dtd', dtd_root, split='test')
    assert exc.value.path == str(path)
    build('dtd', dtd_root, split='train', transform=None)  # other splits are not affected


def test_error_unreadable_image(dtd_root):
    path = break_dataset(dtd_root, 'dtd', 'corrupt-image')
    ds = build('dtd', dtd_root, split='test', transform=None)  # existence only by default
    index = next(i for i, it in enumerate(ds.items) if it.impath == str(path))
    with pytest.raises(DatasetError, match='cannot read image'):
        ds[index]
    with pytest.raises(DatasetError, match='cannot read image') as exc:
        build('dtd', dtd_root, split='test', check_images=True)
    assert exc.value.path == str(path)


def test_error_unreadable_training_image_stops_the_build(dtd_root):
    ds = build('dtd', dtd_root, split='train', num_shots=2, seed=1)
    Path(ds.items[3].impath).write_bytes(b'broken')
    with pytest.raises(DatasetError, match='cannot read image'):
        build('dtd', dtd_root, split='train', num_shots=2, seed=1)  # decoded (and cached) at build time


def test_error_class_count(dtd_root):
    _edit_split(dtd_root, lambda d: [d.update({k: [r for r in d[k] if r[1] != 46]}) for k in d])
    with pytest.raises(DatasetError, match='found 46 classes, expected 47'):
        build('dtd', dtd_root, split='test')


def test_error_label_gap_and_empty_class(dtd_root):
    path = _edit_split(dtd_root, lambda d: d.update(train=[r for r in d['train'] if r[1] != 5]))
    with pytest.raises(DatasetError, match="class 'texture2' has no train images") as exc:
        build('dtd', dtd_root, split='test')
    assert exc.value.path == str(path)
    _edit_split(dtd_root, lambda d: [d.update({k: [r for r in d[k] if r[1] != 7]}) for k in d])
    with pytest.raises(DatasetError, match='labels must be 0..n-1'):
        build('dtd', dtd_root, split='test')


def test_error_malformed_split_file(dtd_root):
    path = dtd_root / 'dtd' / 'split_zhou_DescribableTextures.json'
    path.write_text('{"train": [')
    with pytest.raises(DatasetError, match='cannot parse split file'):
        build('dtd', dtd_root, split='test')
    path.write_text(json.dumps({'train': [['a.jpg', 0]], 'val': [], 'test': []}))
    with pytest.raises(DatasetError, match="split 'train' row 0"):
        build('dtd', dtd_root, split='test')
    path.write_text(json.dumps({'train': [['a.jpg', 0, 'x'], ['b.jpg', 0, 'y']], 'val': [], 'test': []}))
    with pytest.raises(DatasetError, match='named both'):
        build('dtd', dtd_root, split='test')


def test_error_empty_imagenet_class_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageNet, 'num_classes', 3)  # a 3-class ImageNet keeps the test small
    base = tmp_path / 'imagenet'
    wnids = ['n01440764', 'n01443537', 'n01484850']
    for w in wnids:
        for split in ('train', 'val'):
            (base / 'images' / split / w).mkdir(parents=True)
            Image.new('RGB', (4, 4)).save(base / 'images' / split / w / f'{w}_0.JPEG')
    (base / 'classnames.txt').write_text('n01440764 tench\nn01443537 goldfish\nn01484850 great white shark\n')
    assert build('imagenet', tmp_path, split='test', transform=None).classnames[2] == 'great white shark'
    (base / 'images' / 'val' / wnids[1] / f'{wnids[1]}_0.JPEG').unlink()
    build('imagenet', tmp_path, split='train', transform=None)
    with pytest.raises(DatasetError, match="class 'goldfish' has no images") as exc:
        build('imagenet', tmp_path, split='test')
    assert exc.value.path == str(base / 'images' / 'val' / wnids[1])
    monkeypatch.setattr(ImageNet, 'num_classes', 1000)
    with pytest.raises(DatasetError, match='found 3 classes, expected 1000'):
        build('imagenet', tmp_path, split='train')


def test_dataset_error_pickles():
    err = DatasetError('dtd', 'split file not found', '/x/split.json', 'get it')
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.path == '/x/split.json'


# ----------------------------------------------------------------------------- torch side and image cache


def test_items_are_dicts_with_tensors(tree):
    root, _ = tree
    ds = build('dtd', root, split='train', num_shots=2, seed=1, image_size=32)
    sample = ds[0]
    assert set(sample) == {'img', 'label', 'domain', 'impath', 'index'}
    assert sample['img'].shape == (3, 32, 32) and sample['img'].dtype == torch.float32
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch['img'].shape == (4, 3, 32, 32) and batch['label'].shape == (4,)
    assert ds.with_split('test', transform=None)[0]['img'].mode == 'RGB'


@pytest.fixture
def count_opens(monkeypatch):
    calls = []
    original = Image.open

    def counting_open(fp, *args, **kwargs):
        calls.append(str(fp))
        return original(fp, *args, **kwargs)

    monkeypatch.setattr(loading_mod.Image, 'open', counting_open)
    return calls


def test_second_epoch_opens_no_file(dtd_root, count_opens):
    ds = build('dtd', dtd_root, split='train', num_shots=4, seed=1, image_size=16)
    assert ds.image_cache is not None and len(ds.image_cache) == len(ds)
    assert len(count_opens) == len(ds)  # decoded once, at build time
    for _epoch in range(2):
        for batch in torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True):
            assert batch['img'].shape[1:] == (3, 16, 16)
    assert len(count_opens) == len(ds)  # later epochs: no file opened

    count_opens.clear()
    plain = build('dtd', dtd_root, split='train', num_shots=4, seed=1, image_size=16, cache_images=False)
    for _epoch in range(2):
        for i in range(len(plain)):
            plain[i]
    assert len(count_opens) == 2 * len(plain)


def test_image_cache_budget_keeps_the_first_images(dtd_root, count_opens):
    one = 8 * 8 * 3  # the fake images are 8x8 .. 12x8
    ds = build('dtd', dtd_root, split='train', num_shots=2, seed=1, cache_bytes=4 * one, transform=None, workers=1)
    cache = ds.image_cache
    assert 1 <= len(cache) <= 4 and cache.nbytes <= 4 * one and cache.full
    assert all(ds.items[i].impath in cache for i in range(len(cache)))  # first come, first kept
    count_opens.clear()
    for i in range(len(ds)):
        ds[i]
    assert len(count_opens) == len(ds) - len(cache)


def test_image_cache_can_shrink_images(dtd_root):
    ds = build('dtd', dtd_root, split='train', num_shots=1, seed=1, cache_short_side=4, transform=None)
    img = ds.image_cache.get(ds.items[0].impath)
    assert min(img.size) == 4
    assert ds[0]['img'] is not img  # a copy is handed out when there is no transform


def test_with_split_shares_classes_and_picks(tree):
    root, _ = tree
    train = build('dtd', root, split='train', num_shots=4, seed=2, subsample='base')
    test = train.with_split('test')
    assert test.classnames == train.classnames and len(train.classnames) == 24
    assert test.train is train.train and test.split == 'test' and test.image_cache is None
    assert test.metainfo['subsample'] == 'base' and test.metainfo['num_shots'] == 4
    assert 'RandomResizedCrop' in repr(train.transform) and 'CenterCrop' in repr(test.transform)
