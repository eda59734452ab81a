"""Silent wrong data setups are errors (or recorded warnings) before training, and verify reports them all.

Each test builds its own fake tree (tests/fake_data.py) and damages it in one precise way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fake_data import break_dataset, edit_split_file, make_fake_root
from helpers import ROOT

from vlprompt.datasets import (
    DatasetError,
    FewShotWarning,
    build_dataset,
    check_images,
    check_loader_settings,
    get_protocol,
    sample_few_shot,
)
from vlprompt.datasets.verify import Problem, format_reports, verify_dataset

TOOL = ROOT / 'tools' / 'prepare_data.py'
CONFIG = ROOT / 'configs' / 'coop' / 'toy_shapes.py'


def build(name, root, **kw):
    kw.setdefault('progress', False)
    return build_dataset(name, data_root=root, **kw)


@pytest.fixture
def dtd_root(tmp_path):
    make_fake_root(tmp_path, ['dtd'])
    return tmp_path


# ----------------------------------------------------------------------------- class names

def test_two_labels_sharing_a_class_name_in_a_split_file(dtd_root):
    def rename(data):  # label 1 ('blotchy') renamed to label 0's name everywhere
        for rows in data.values():
            for row in rows:
                if row[1] == 1:
                    row[2] = 'banded'

    path = edit_split_file(dtd_root, 'dtd', rename)
    with pytest.raises(DatasetError, match=r"labels 0 and 1 share the class name 'banded'") as exc:
        build('dtd', dtd_root, split='test')
    assert exc.value.path == str(path)


def test_class_names_differing_only_in_case_and_spaces_count_as_shared(dtd_root):
    def rename(data):
        for rows in data.values():
            for row in rows:
                if row[1] == 2:
                    row[2] = ' Banded'

    edit_split_file(dtd_root, 'dtd', rename)
    with pytest.raises(DatasetError, match=r"labels 0 and 2 share the class name 'banded' / ' Banded'"):
        build('dtd', dtd_root, split='test')


def test_two_labels_sharing_a_class_name_in_a_class_list(tmp_path):
    make_fake_root(tmp_path, ['fgvc-aircraft'])
    variants = tmp_path / 'fgvc_aircraft' / 'variants.txt'
    names = variants.read_text().splitlines()
    names[7] = names[3]  # 'Variant 002' becomes a second 'A300B4'
    variants.write_text('\n'.join(names) + '\n')
    with pytest.raises(DatasetError, match=r"labels 3 and 7 share the class name 'A300B4'") as exc:
        build('fgvc-aircraft', tmp_path, split='test')
    assert exc.value.path == str(variants)


def test_shared_class_name_in_imagenet_classnames_points_at_classnames_txt(tmp_path):
    make_fake_root(tmp_path, ['imagenet-a'])
    path = tmp_path / 'imagenet-adversarial' / 'classnames.txt'
    lines = path.read_text().splitlines()
    lines[5] = lines[5].split(' ')[0] + ' tench'  # wnid 5 (the second class of imagenet-a) is 'tench' too
    path.write_text('\n'.join(lines) + '\n')
    with pytest.raises(DatasetError, match=r"labels 0 and 1 share the class name 'tench'") as exc:
        build('imagenet-a', tmp_path)
    assert exc.value.path == str(path)


# ----------------------------------------------------------------------------- num_shots

@pytest.mark.parametrize('bad', [0, -1, 2.5, True, '4'])
def test_num_shots_below_one_or_not_a_whole_number_is_an_error(dtd_root, bad):
    with pytest.raises(ValueError, match=r'dtd: num_shots must be a whole number >= 1 \(K images per class\) or '
                                         r'None \(all images\), got ' + re.escape(repr(bad))):
        build('dtd', dtd_root, split='train', num_shots=bad, seed=1)


def test_num_shots_none_is_all_images(dtd_root):
    ds = build('dtd', dtd_root, split='train', num_shots=None, transform=None)
    assert len(ds) == len(ds.full_split('train')) and ds.shots is None and ds.image_cache is None
    assert build_dataset('dtd', data_root=dtd_root, split='train', progress=False).num_shots is None  # the default


def test_protocol_functions_say_all_images_with_none():
    assert get_protocol('day-night').num_shots is None
    with pytest.raises(ValueError, match='num_shots must be a whole number >= 1'):
        sample_few_shot([], 0, None)


def test_num_shots_above_a_class_size_warns_and_records_the_real_counts(dtd_root):
    # fake dtd has 2 + label % 5 training images per class: labels 0, 5, 10, ... have 2, 1, 6, 11, ... have 3
    with pytest.warns(FewShotWarning, match=r"\[dtd\] num_shots=4, but 20 of 47 classes have fewer training "
                                            r"images \('banded' 2, 'blotchy' 3, 'texture2' 2, "):
        ds = build('dtd', dtd_root, split='train', num_shots=4, seed=1, transform=None)
    shots = ds.shots
    assert shots['requested'] == 4 and shots['min'] == 2 and shots['max'] == 4
    expected = {name: 2 + label % 5 for label, name in enumerate(ds.classnames) if label % 5 < 2}
    assert shots['short'] == expected
    assert ds.shot_counts['banded'] == 2 and ds.shot_counts['braided'] == 4


def test_shots_reach_results_json_through_build_runner(dtd_root, tmp_path):
    from vlprompt.engine.results import run_description, write_results
    from vlprompt.engine.runner import build_runner

    def rename(data):  # a quote in a class name, as ImageNet's "jack-o'-lantern": the config dump must cope
        for rows in data.values():
            for row in rows:
                if row[1] == 0:
                    row[2] = "jack-o'-lantern"

    edit_split_file(dtd_root, 'dtd', rename)
    cfg = _dtd_config(dtd_root, tmp_path / 'work')
    with pytest.warns(FewShotWarning, match='num_shots=4'):
        build_runner(cfg)  # the Runner dumps the config into the work dir
    run = run_description(cfg)
    assert run['num_shots'] == 4
    assert run['shots']['requested'] == 4 and run['shots']['min'] == 2 and run['shots']['max'] == 4
    assert run['shots']['short']["jack-o'-lantern"] == 2 and run['shots']['short']['blotchy'] == 3  # base classes
    assert 'braided' not in run['shots']['short']  # 4 images: met
    out = write_results(tmp_path / 'results.json', {'accuracy/top1': 1.0}, cfg)
    assert json.loads(out.read_text())['run']['shots'] == run['shots']


# ----------------------------------------------------------------------------- split-file rows

@pytest.mark.parametrize('label, why', [(3.7, 'label 3.7 is not an integer'), (True, 'label True is not an integer'),
                                        ('3', "label '3' is not an integer"), (-1, 'label -1 is negative')])
def test_bad_label_in_a_split_file_names_file_split_and_row(dtd_root, label, why):
    def spoil(data):
        data['val'][2][1] = label

    path = edit_split_file(dtd_root, 'dtd', spoil)
    with pytest.raises(DatasetError, match=rf"split 'val' row 2: {why}") as exc:
        build('dtd', dtd_root, split='test')
    assert exc.value.path == str(path)


def test_every_bad_row_is_counted(dtd_root):
    def spoil(data):
        data['train'][0][1] = 1.0
        data['test'][4][1] = '0'

    edit_split_file(dtd_root, 'dtd', spoil)
    with pytest.raises(DatasetError, match=r"2 bad row\(s\) in the split file: split 'train' row 0: .*; "
                                           r"split 'test' row 4: "):
        build('dtd', dtd_root, split='test')


def test_duplicated_split_row_names_file_split_row_and_path(dtd_root):
    rel = {}

    def repeat(data):
        rel['path'] = data['test'][1][0]
        data['test'].append(list(data['test'][1]))

    path = edit_split_file(dtd_root, 'dtd', repeat)
    n = json.loads(path.read_text())['test'].__len__() - 1
    with pytest.raises(DatasetError, match=rf"split 'test' row {n}: repeats the image '{rel['path']}' of row 1") as exc:
        build('dtd', dtd_root, split='train', transform=None)
    assert exc.value.path == str(path)


def test_duplicated_image_in_a_list_file_reader(tmp_path):
    make_fake_root(tmp_path, ['fgvc-aircraft'])
    path = tmp_path / 'fgvc_aircraft' / 'images_variant_test.txt'
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(''.join(lines + [lines[0]]))
    image = tmp_path / 'fgvc_aircraft' / 'images' / (lines[0].split(' ')[0] + '.jpg')
    with pytest.raises(DatasetError, match=rf"split 'test' of .* lists the same image twice \(entries 0 and "
                                           rf"{len(lines)}\)") as exc:
        build('fgvc-aircraft', tmp_path, split='test')
    assert exc.value.path == str(image)


# ----------------------------------------------------------------------------- images checked before training

def test_check_images_lists_the_bad_files(dtd_root):
    ds = build('dtd', dtd_root, split='test', transform=None)
    check_images(ds)  # a sound split passes
    bad = [Path(ds.items[i].impath) for i in (3, 9, 20, 30, 40)]
    for p in bad:
        p.write_bytes(b'not an image')
    with pytest.raises(DatasetError, match=r"cannot read image \(UnidentifiedImageError.*\); 5 of \d+ images of "
                                           r"split 'test' are unreadable, also .* and 1 more; first") as exc:
        check_images(ds)
    assert exc.value.path == str(bad[0])
    for p in bad[1:4]:
        assert repr(str(p)) in str(exc.value)


def test_check_images_catches_a_truncated_png_with_header_checks_only(dtd_root, tmp_path):
    from PIL import Image

    ds = build('dtd', dtd_root, split='test', transform=None)
    target = Path(ds.items[0].impath)
    png = tmp_path / 'x.png'
    Image.new('RGB', (64, 64), (10, 200, 30)).save(png)
    target.write_bytes(png.read_bytes()[:-30])  # truncated: header fine, end missing
    with pytest.raises(DatasetError, match='cannot read image'):
        check_images(ds, full_decode_max=0)  # header + verify only
    with pytest.raises(DatasetError, match='cannot read image'):
        check_images(ds)


def test_check_images_on_a_generated_toy_dataset_is_cheap():
    ds = build_dataset('toy-shapes', split='test', transform=None, progress=False)
    done: set[str] = set()
    check_images(ds, done=done)
    assert len(done) == len(ds) > 0
    check_images(ds, done=done)  # nothing left to open


def _dtd_config(root, work_dir):
    """The toy CoOp config on fake dtd with the random tiny backbone: builds a runner in seconds."""
    from vlprompt.engine.config import load_config

    cfg = load_config(CONFIG, str(work_dir))
    cfg.model.backbone.name, cfg.model.backbone.pretrained = 'test-tiny', None
    cfg.data_root = str(root)
    for key in ('train_dataloader', 'test_dataloader'):
        cfg[key].dataset.name = 'dtd'
        cfg[key].dataset.progress = False
    cfg.train_dataloader.dataset.num_shots = 4
    return cfg


def test_build_runner_checks_test_images_before_training(dtd_root, tmp_path):
    from vlprompt.engine.runner import build_runner

    path = break_dataset(dtd_root, 'dtd', 'corrupt-image')  # a test image
    cfg = _dtd_config(dtd_root, tmp_path / 'work')
    with pytest.warns(FewShotWarning), pytest.raises(DatasetError, match='cannot read image') as exc:
        build_runner(cfg)
    assert exc.value.path == str(path)


@pytest.mark.parametrize('key, value, message', [
    ('batch_size', 0, 'test_dataloader.batch_size must be a whole number >= 1, got 0'),
    ('num_workers', -1, 'test_dataloader.num_workers must be a whole number >= 0, got -1'),
])
def test_build_runner_refuses_test_loader_settings_that_fail_at_test_time(dtd_root, tmp_path, key, value, message):
    from vlprompt.engine.runner import build_runner

    cfg = _dtd_config(dtd_root, tmp_path / 'work')
    cfg.test_dataloader[key] = value
    with pytest.raises(ValueError, match=message):
        build_runner(cfg)


def test_loader_settings_that_need_workers():
    check_loader_settings('test_dataloader', {'batch_size': 8, 'num_workers': 2, 'persistent_workers': True})
    with pytest.raises(ValueError, match=r'test_dataloader\.persistent_workers=True needs '
                                         r'test_dataloader\.num_workers > 0'):
        check_loader_settings('test_dataloader', {'batch_size': 8, 'num_workers': 0, 'persistent_workers': True})
    with pytest.raises(ValueError, match=r'val_dataloader\.prefetch_factor=2 needs'):
        check_loader_settings('val_dataloader', {'batch_size': 8, 'prefetch_factor': 2})
    with pytest.raises(ValueError, match=r"test_dataloader\.batch_size must be a whole number >= 1, got '8'"):
        check_loader_settings('test_dataloader', {'batch_size': '8'})


# ----------------------------------------------------------------------------- verify

def test_verify_reports_every_problem_not_only_the_class_count(dtd_root):
    def drop_last_class(data):
        for key in data:
            data[key] = [row for row in data[key] if row[1] != 46]

    edit_split_file(dtd_root, 'dtd', drop_last_class)
    missing = break_dataset(dtd_root, 'dtd', 'missing-image')
    report = verify_dataset('dtd', dtd_root)
    messages = [f'{p.message}: {p.path}' for p in report.problems]
    assert report.status == 'broken' and report.num_classes == 46
    assert any('found 46 classes, expected 47' in m for m in messages), messages
    assert any('missing' in m and str(missing) in m for m in messages), messages
    assert report.counts  # the splits were still counted


def test_verify_reports_a_shared_class_name_and_bad_rows(dtd_root):
    def rename(data):
        for rows in data.values():
            for row in rows:
                if row[1] == 1:
                    row[2] = 'banded'

    edit_split_file(dtd_root, 'dtd', rename)
    report = verify_dataset('dtd', dtd_root)
    assert report.status == 'broken'
    assert any('labels 0 and 1 share the class name' in p.message for p in report.problems)


def test_verify_prints_non_utf8_names_on_a_strict_ascii_terminal(tmp_path):
    root = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b'/data\xff'))
    make_fake_root(root, ['dtd'])
    gone = break_dataset(root, 'dtd', 'missing-image')
    env = dict(os.environ, PYTHONIOENCODING='ascii:strict', LANG='C', LC_ALL='C')
    proc = subprocess.run([sys.executable, str(TOOL), 'verify', '--data-root', os.fsencode(str(root)),
                           '--datasets', 'dtd', '--no-progress'], capture_output=True, env=env, timeout=120)
    out, err = proc.stdout.decode('ascii'), proc.stderr.decode('ascii', 'replace')
    assert proc.returncode == 1, err
    assert 'Traceback' not in err
    escaped = str(gone).replace('\udcff', '\\xff')
    assert f'missing, first: {escaped}' in out
    assert f'Data root: {tmp_path}/data\\xff' in out


def test_format_reports_escapes_undecodable_bytes(dtd_root):
    report = verify_dataset('dtd', dtd_root)
    report.problems.append(Problem('broken', 'unreadable image', '/a/\udcffb.jpg'))
    text = format_reports([report], dtd_root)
    assert 'broken: unreadable image: /a/\\xffb.jpg' in text
    text.encode('utf-8')  # no lone surrogate left
