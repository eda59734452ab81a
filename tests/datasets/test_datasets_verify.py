"""``tools/prepare_data.py verify``: output and exit codes on complete, broken and missing trees."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from fake_data import break_dataset, make_fake_root, shared_tree
from helpers import ROOT

from vlprompt.datasets.verify import verify_dataset

TOOL = ROOT / 'tools' / 'prepare_data.py'


@pytest.fixture(scope='session')
def tree(tmp_path_factory):
    return shared_tree(tmp_path_factory)


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('prepare_data', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def broken_root(tmp_path):
    make_fake_root(tmp_path, ['dtd', 'oxford-pets', 'eurosat', 'ucf101', 'imagenet-a'])
    paths = {
        'dtd': break_dataset(tmp_path, 'dtd', 'missing-image'),
        'oxford-pets': break_dataset(tmp_path, 'oxford-pets', 'missing-split-file'),
        'ucf101': break_dataset(tmp_path, 'ucf101', 'missing-folder'),
        'eurosat': break_dataset(tmp_path, 'eurosat', 'corrupt-image'),
    }
    return tmp_path, paths


def test_verify_subprocess_on_a_broken_tree(broken_root):
    root, paths = broken_root
    proc = run_tool('verify', '--data-root', str(root), '--datasets', 'dtd', 'oxford-pets', 'ucf101', 'eurosat',
                    'imagenet-a', '--check-images')
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()
            if line and line.split()[0] in {'dtd', 'oxford-pets', 'ucf101', 'eurosat', 'imagenet-a'}}
    assert rows == {'dtd': 'broken', 'oxford-pets': 'missing', 'ucf101': 'missing', 'eurosat': 'broken',
                    'imagenet-a': 'found'}
    assert f'missing, first: {paths["dtd"]}' in out
    assert f'missing: {paths["oxford-pets"]}' in out and 'drive.google.com' in out
    assert f'missing: dataset folder not found: {paths["ucf101"]}' in out and 'UCF-101-midframes.zip' in out
    assert 'unreadable image' in out and str(paths['eurosat']) in out
    assert 'test 1,69' not in out and 'train 185/2,820*' in out  # counts against the published ones
    assert 'Incomplete: dtd, oxford-pets, ucf101, eurosat' in out


def test_verify_exit_codes_in_process(tool, tree, broken_root, capsys):
    root, _ = tree
    assert tool.main(['verify', '--data-root', str(root), '--no-progress']) == 0
    out = capsys.readouterr().out
    assert out.count(' found ') == 16 and 'All requested datasets are complete.' in out
    assert 'imagenet         found    1,000/1,000   train 2,500/1,281,167*' in out
    assert tool.main(['verify', '--data-root', str(root), '--datasets', 'dtd', '--strict', '--no-progress']) == 1
    assert 'counts' in capsys.readouterr().out
    broken, _ = broken_root
    # The corrupt EuroSAT image is only seen when images are decoded.
    assert tool.main(['verify', '--data-root', str(broken), '--datasets', 'eurosat', '--no-progress']) == 0
    assert tool.main(['verify', '--data-root', str(broken), '--datasets', 'EuroSAT', '--check-images',
                      '--no-progress']) == 1
    capsys.readouterr()
    assert tool.main(['verify', '--data-root', str(broken), '--datasets', 'mnist']) == 2
    assert 'unknown dataset' in capsys.readouterr().err


def test_verify_needs_a_data_root(tool, monkeypatch, capsys):
    monkeypatch.delenv('VLPROMPT_DATA', raising=False)
    assert tool.main(['verify']) == 2
    assert 'VLPROMPT_DATA' in capsys.readouterr().err


def test_verify_reports_class_count_and_empty_classes(tmp_path):
    make_fake_root(tmp_path, ['imagenet-r'])
    folder = tmp_path / 'imagenet-rendition' / 'imagenet-r'
    victim = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    for f in victim.iterdir():
        f.unlink()
    report = verify_dataset('imagenet-r', tmp_path)
    assert report.status == 'broken' and 'has no images' in report.problems[0].message
    victim.rmdir()
    report = verify_dataset('imagenet-r', tmp_path)
    assert report.status == 'broken' and 'found 199 classes, expected 200' in report.problems[0].message


def test_published_counts_cover_every_benchmark():
    from vlprompt.datasets import BENCHMARKS, get_dataset_class

    published = {name: get_dataset_class(name).published for name in BENCHMARKS}
    for name, counts in published.items():
        assert counts['classes'] == get_dataset_class(name).num_classes, name
    assert published['imagenet']['test'] == 50_000 and published['dtd']['train'] == 2_820
