"""Data files are read within stated bounds, inside the data root, and reused only while their content is the same.

Issue 30, items 7, 8, 9 (the data readers), 10 (truncated shards) and 2 (the GRAM pair-feature cache): every
file here is a tiny fake written by the test; limits are monkeypatched small so that nothing large is allocated.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from vlprompt.datasets import DatasetError, build_dataset, loading
from vlprompt.datasets.elevater import ELEVATER_TASKS
from vlprompt.datasets.knowledge import KnowledgeError, load_descriptions
from vlprompt.datasets.loading import MemberTooLargeError, load_image
from vlprompt.datasets.pairs import PairReadError, PairReadWarning, PairSource, write_webdataset
from vlprompt.errors import UserError

DEEP = '[' * 100_000 + ']' * 100_000  # JSON nested far deeper than Python's recursion limit


def _png(i: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new('RGB', (size, size), (25 * i % 256, 80, 10)).save(buf, format='PNG')
    return buf.getvalue()


def _tar(path: Path, members: list[tuple[str, bytes]], gz: bool = False) -> Path:
    with tarfile.open(path, 'w:gz' if gz else 'w') as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _pairs(n: int) -> list[tuple[str, bytes]]:
    members = []
    for i in range(n):
        members += [(f'{i:06d}.png', _png(i)), (f'{i:06d}.txt', f'shape {i}'.encode())]
    return members


# ------------------------------------------------------------------------------ item 7: decompression bombs

def test_webdataset_member_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, 'MAX_MEMBER_BYTES', 64 << 10)
    bomb = [('000000.png', _png(0)), ('000000.txt', b'fine'), ('000001.png', _png(1)),
            ('000001.txt', b'a' * (1 << 20))]  # a 1 MiB caption that gzip packs into about a kilobyte
    shard = _tar(tmp_path / 'bomb.tar.gz', bomb, gz=True)
    assert shard.stat().st_size < 8 << 10
    with pytest.raises(MemberTooLargeError, match=r"bomb.tar.gz: member '000001.txt' is 1048576 bytes, more than "
                                                  r"the 65536 bytes allowed") as exc:
        list(PairSource('webdataset', str(shard)))
    assert isinstance(exc.value, UserError)


def test_webdataset_header_claiming_3_gib_is_refused_without_reading(tmp_path):
    info = tarfile.TarInfo('000000.txt')
    info.size = 3 << 30
    (tmp_path / 'huge.tar').write_bytes(info.tobuf(tarfile.GNU_FORMAT) + b'x' * 512)
    with pytest.raises(MemberTooLargeError, match=r"huge.tar: member '000000.txt' is 3221225472 bytes"):
        list(PairSource('webdataset', str(tmp_path / 'huge.tar')))


def test_webdataset_long_name_header_claiming_3_gib_is_refused(tmp_path):
    info = tarfile.TarInfo('././@LongLink')
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, 3 << 30
    (tmp_path / 'longname.tar').write_bytes(info.tobuf(tarfile.GNU_FORMAT) + b'x' * 4096)
    with pytest.raises(MemberTooLargeError, match=r"longname.tar: member '././@LongLink' is 3221225472 bytes"):
        list(PairSource('webdataset', str(tmp_path / 'longname.tar')))


def test_zip_member_over_the_limit_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, 'MAX_MEMBER_BYTES', 64 << 10)
    archive = tmp_path / 'train.zip'
    with zipfile.ZipFile(archive, 'w', zipfile.ZIP_DEFLATED) as zf:
        zf.writestr('images/ok.png', _png(1))
        zf.writestr('images/bomb.png', b'\0' * (1 << 20))
    assert load_image(f'{archive}@images/ok.png').size == (8, 8)
    with pytest.raises(MemberTooLargeError, match=re.escape(f"{archive}: member 'images/bomb.png' is 1048576 bytes")):
        load_image(f'{archive}@images/bomb.png')


# ------------------------------------------------------------------------------ item 8: paths outside the root

CIFAR = ELEVATER_TASKS['cifar-10']


def _cifar(root: Path) -> Path:
    """ELEVATER's cifar-10 folder: one image per class in train.zip, and one in val.zip for the test index."""
    base = root / CIFAR.root_folder
    base.mkdir(parents=True)
    (base / 'labels.txt').write_text('\n'.join(f'class {i}' for i in range(10)) + '\n')
    for split, archive in (('train', 'train.zip'), ('test', 'val.zip')):
        with zipfile.ZipFile(base / archive, 'w') as zf:
            for label in range(10):
                zf.writestr(f'{split}/{label}.png', _png(label))
        (base / f'{split}.txt').write_text(''.join(f'{archive}@{split}/{label}.png {label}\n' for label in range(10)))
    return base


def _replace_line(base: Path, lineno: int, text: str) -> None:
    lines = (base / 'test.txt').read_text().splitlines()
    lines[lineno - 1] = text
    (base / 'test.txt').write_text('\n'.join(lines) + '\n')


def _build(root: Path):
    return build_dataset('elevater-cifar-10', data_root=root, split='test', transform=None, progress=False)


def _outside(tmp_path: Path) -> Path:
    """An image and a zip outside the data root, that a hostile index line could name."""
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'secret.png').write_bytes(_png(3))
    with zipfile.ZipFile(outside / 'other.zip', 'w') as zf:
        zf.writestr('test/3.png', _png(3))
    return outside


def test_elevater_reads_a_clean_tree(tmp_path):
    _cifar(tmp_path / 'root')
    assert len(_build(tmp_path / 'root')) == 10


def test_elevater_zip_bomb_member_is_refused_naming_archive_and_member(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, 'MAX_MEMBER_BYTES', 64 << 10)
    base = _cifar(tmp_path / 'root')
    with zipfile.ZipFile(base / 'val.zip', 'a', zipfile.ZIP_DEFLATED) as zf:
        zf.writestr('test/big.png', b'\0' * (1 << 20))
    _replace_line(base, 4, 'val.zip@test/big.png 3')
    ds = _build(tmp_path / 'root')
    with pytest.raises(DatasetError, match=r"MemberTooLargeError: .*val.zip: member 'test/big.png' is 1048576 bytes"):
        ds[3]


@pytest.mark.parametrize('line, problem', [
    ('{outside}/secret.png 3', 'is absolute'),
    ('../../../outside/secret.png 3', "climbs out of the task folder with '..'"),
    ('../../../outside/other.zip@test/3.png 3', "climbs out of the task folder with '..'"),
    ('{outside}/other.zip@test/3.png 3', 'is absolute'),
    ('train.zip@train/3.png 3', "names archive 'train.zip', not one of this split's archives \\(val.zip\\)"),
])
def test_elevater_index_line_outside_the_root_is_refused(tmp_path, line, problem):
    outside = _outside(tmp_path)
    base = _cifar(tmp_path / 'root')
    _replace_line(base, 4, line.format(outside=outside))
    with pytest.raises(DatasetError, match=rf'1 bad line\(s\) in index file test.txt: line 4: image path .*{problem}'
                       ) as exc:
        _build(tmp_path / 'root')
    assert exc.value.path == str(base / 'test.txt')


def test_elevater_symbolic_links_made_inside_the_root_are_followed(tmp_path):
    outside = _outside(tmp_path)
    base = _cifar(tmp_path / 'root')
    os.symlink(outside, base / 'extra')  # the user's link: a folder kept elsewhere
    _replace_line(base, 4, 'extra/secret.png 3')
    moved = tmp_path / 'elsewhere.zip'
    (base / 'val.zip').rename(moved)
    os.symlink(moved, base / 'val.zip')  # the archive itself kept on another disk
    ds = _build(tmp_path / 'root')
    assert len(ds) == 10 and ds.items[3].impath.endswith('extra/secret.png')


def test_elevater_coco_index_outside_the_root_is_refused(tmp_path):
    task = ELEVATER_TASKS['hateful-memes']
    base = tmp_path / 'root' / task.root_folder
    base.mkdir(parents=True)
    outside = _outside(tmp_path)
    with zipfile.ZipFile(base / 'img.zip', 'w') as zf:
        for k in range(2):
            zf.writestr(f'img/{k}.png', _png(k))
    images = [{'id': 0, 'file_name': 'img/0.png', 'zip_file': 'img.zip'},
              {'id': 1, 'file_name': 'test/3.png', 'zip_file': str(outside / 'other.zip')}]
    anns = [{'id': k, 'image_id': k, 'category_id': k} for k in range(2)]
    cats = [{'id': 0, 'name': 'not hateful'}, {'id': 1, 'name': 'hateful'}]
    for split in ('train', 'test'):
        (base / f'{split}_meta.json').write_text(json.dumps({'images': images, 'annotations': anns,
                                                             'categories': cats}))
    with pytest.raises(DatasetError, match=r'problem\(s\) in COCO index train_meta.json: image id 1: image path '
                                           r'.*other.zip@test/3.png.* is absolute'):
        build_dataset('elevater-hateful-memes', data_root=tmp_path / 'root', transform=None, progress=False)


# ------------------------------------------------------------------------------ item 9: messages, not tracebacks

def _images(tmp_path: Path, n: int = 3) -> None:
    (tmp_path / 'img').mkdir(exist_ok=True)
    for i in range(n):
        (tmp_path / 'img' / f'{i}.png').write_bytes(_png(i))


def test_non_utf8_tsv_rows_are_skipped_and_counted(tmp_path):
    _images(tmp_path)
    tsv = tmp_path / 'pairs.tsv'
    tsv.write_bytes(b'img/0.png\tfirst\nimg/1.png\tcaf\xe9 latin-1\nimg/2.png\tthird\n')
    source = PairSource('tsv', str(tsv), max_failure_fraction=0.5)
    assert [p.caption for p in source] == ['first', 'third']
    assert dict(source.stats.skipped) == {'row not UTF-8': 1}
    assert source.stats.examples == [f'{tsv}:2: row not UTF-8']


def test_non_utf8_jsonl_rows_are_skipped_and_counted(tmp_path):
    _images(tmp_path)
    jsonl = tmp_path / 'pairs.jsonl'
    jsonl.write_bytes(b'{"image": "img/0.png", "caption": "one"}\n{"image": "img/1.png", "caption": "\xff\xfe"}\n'
                      b'{"image": "img/2.png", "caption": "three"}\n')
    source = PairSource('jsonl', str(jsonl), max_failure_fraction=0.5)
    assert [p.caption for p in source] == ['one', 'three']
    assert dict(source.stats.skipped) == {'row not UTF-8': 1}


def test_deeply_nested_jsonl_row_is_skipped_and_named(tmp_path):
    _images(tmp_path)
    jsonl = tmp_path / 'pairs.jsonl'
    jsonl.write_text(json.dumps({'image': 'img/0.png', 'caption': 'one'}) + '\n' + DEEP + '\n')
    source = PairSource('jsonl', str(jsonl), max_failure_fraction=0.5)
    assert [p.caption for p in source] == ['one']
    assert dict(source.stats.skipped) == {'unreadable row': 1}
    where = re.escape(str(jsonl))
    with pytest.raises(PairReadError, match=rf'{where}: 1 pairs read, 1 skipped .*{where}:2: unreadable row '
                                            r'\(JSON nested too deeply\)'):
        list(PairSource('jsonl', str(jsonl), max_failure_fraction=0.1))


def test_deeply_nested_json_member_of_a_shard_is_a_missing_caption(tmp_path):
    shard = _tar(tmp_path / '000.tar', [('000000.png', _png(0)), ('000000.txt', b'ok'), ('000001.png', _png(1)),
                                         ('000001.json', DEEP.encode())])
    source = PairSource('webdataset', str(shard), max_failure_fraction=0.5)
    assert [p.caption for p in source] == ['ok']
    assert dict(source.stats.skipped) == {'missing caption': 1}


def test_non_utf8_caption_member_is_skipped_and_counted(tmp_path):
    shard = _tar(tmp_path / '000.tar', [('000000.png', _png(0)), ('000000.txt', b'ok'), ('000001.png', _png(1)),
                                         ('000001.txt', b'caf\xe9')])
    source = PairSource('webdataset', str(shard), max_failure_fraction=0.5)
    assert [p.caption for p in source] == ['ok']
    assert dict(source.stats.skipped) == {'caption not UTF-8': 1}


def test_deeply_nested_knowledge_file_is_one_error_naming_it(tmp_path):
    path = tmp_path / 'knowledge.json'
    path.write_text('{"cat": ' + DEEP + '}')
    with pytest.raises(KnowledgeError, match=rf'{re.escape(str(path))}: JSON nested too deeply'):
        load_descriptions(path)


# ------------------------------------------------------------------------------ item 10: truncated shards

def _cut_after(shard: Path, members: int) -> bytes:
    """The shard's bytes up to the end of its first ``members`` members (a cut at a member boundary)."""
    with tarfile.open(shard) as tar:
        last = tar.getmembers()[members - 1]
    end = last.offset_data + -(-last.size // 512) * 512
    return shard.read_bytes()[:end]


@pytest.mark.parametrize('gz', [False, True])
def test_truncated_shard_names_the_shard_and_what_was_lost(tmp_path, gz):
    whole = _tar(tmp_path / 'whole.tar', _pairs(4))
    cut = _cut_after(whole, 5)  # pairs 0 and 1, and the image of pair 2 without its caption
    shard = tmp_path / ('cut.tar.gz' if gz else 'cut.tar')
    shard.write_bytes(gzip.compress(cut) if gz else cut)
    source = PairSource('webdataset', str(shard), max_failure_fraction=0.5)
    with pytest.warns(PairReadWarning, match=re.escape(str(shard)) + r': the archive ends early.*after 5 members read '
                                             r'\(2 pairs read\).*pair 000002 and all that followed it are lost'):
        pairs = list(source)
    assert [p.caption for p in pairs] == ['shape 0', 'shape 1']
    assert dict(source.stats.skipped) == {'unreadable shard': 1}  # not "1 missing caption"
    [damaged] = source.stats.to_dict()['damaged_shards']
    assert damaged['shard'] == str(shard) and damaged['members_read'] == 5 and damaged['pairs_read'] == 2
    assert 'damaged: ' in source.stats.summary() and str(shard) in source.stats.summary()


def test_shard_cut_mid_member_is_named_too(tmp_path):
    whole = _tar(tmp_path / 'whole.tar', _pairs(3))
    (tmp_path / 'cut.tar').write_bytes(_cut_after(whole, 3)[:-200])
    source = PairSource('webdataset', str(tmp_path / 'cut.tar'), max_failure_fraction=0.5)
    with pytest.warns(PairReadWarning, match=r'cut.tar: .*\(1 pairs read\).*pair 000001 and all that followed'):
        assert [p.caption for p in source] == ['shape 0']
    assert dict(source.stats.skipped) == {'unreadable shard': 1}


def test_shard_with_a_damaged_header_is_named(tmp_path):
    whole = _tar(tmp_path / 'whole.tar', _pairs(3))
    data = bytearray(whole.read_bytes())
    at = len(_cut_after(whole, 4))
    data[at:at + 512] = b'\xff' * 512  # pair 2's first header: garbage, which tarfile takes for the end
    (tmp_path / 'bad.tar').write_bytes(bytes(data))
    source = PairSource('webdataset', str(tmp_path / 'bad.tar'), max_failure_fraction=0.5)
    with pytest.warns(PairReadWarning, match=r'bad.tar: the archive is damaged .*after 4 members read \(1 pairs read\)'
                                             r': the pair 000001 and all that followed it are lost'):
        assert [p.caption for p in source] == ['shape 0']


def test_complete_shards_report_nothing_lost(tmp_path):
    write_webdataset([(_png(i), f'shape {i}') for i in range(3)], tmp_path / '000.tar')
    _tar(tmp_path / '001.tar.gz', _pairs(2), gz=True)
    source = PairSource('webdataset', [str(tmp_path / '000.tar'), str(tmp_path / '001.tar.gz')])
    assert len(list(source)) == 5
    assert source.stats.failed == 0 and source.stats.to_dict()['damaged_shards'] == []


# ------------------------------------------------------------------------------ item 2: the pair-feature cache

def _encode(source: PairSource, clip, cache: Path):
    from vlprompt.meta.features import encode_pairs

    return encode_pairs(source, clip, cache, batch_size=8)


def _tsv(tmp_path: Path) -> Path:
    _images(tmp_path, 4)
    tsv = tmp_path / 'pairs.tsv'
    tsv.write_text(''.join(f'img/{i}.png\tshape {i}\n' for i in range(4)))
    return tsv


def test_pair_cache_is_reused_while_nothing_changed(tmp_path, clip):
    tsv = _tsv(tmp_path)
    first = _encode(PairSource('tsv', str(tsv)), clip, tmp_path / 'cache')
    os.utime(tsv)  # touched, same content: still reused
    again = _encode(PairSource('tsv', str(tsv)), clip, tmp_path / 'cache')
    assert again.captions == first.captions
    assert (again.image == first.image).all()
    stamp = (tmp_path / 'cache' / 'pair_features.safetensors').stat().st_mtime_ns
    _encode(PairSource('tsv', str(tsv)), clip, tmp_path / 'cache')
    assert (tmp_path / 'cache' / 'pair_features.safetensors').stat().st_mtime_ns == stamp  # not rewritten


def test_pair_cache_sees_a_same_size_caption_edit_within_the_second(tmp_path, clip):
    tsv = _tsv(tmp_path)
    _encode(PairSource('tsv', str(tsv)), clip, tmp_path / 'cache')
    before = os.stat(tsv)
    tsv.write_text(tsv.read_text().replace('shape 2', 'shape X'))
    second = before.st_mtime_ns // 10**9 * 10**9
    os.utime(tsv, ns=(before.st_atime_ns, second + (2 if before.st_mtime_ns == second + 1 else 1)))  # same second
    assert os.path.getsize(tsv) == before.st_size and int(os.path.getmtime(tsv)) == int(before.st_mtime)
    assert _encode(PairSource('tsv', str(tsv)), clip, tmp_path / 'cache').captions[2] == 'shape X'


def test_pair_cache_sees_inverted_images(tmp_path, clip):
    tsv = _tsv(tmp_path)
    first = _encode(PairSource('tsv', str(tsv)), clip, tmp_path / 'cache')
    for i in range(4):
        path = tmp_path / 'img' / f'{i}.png'
        with Image.open(path) as img:
            inverted = Image.eval(img, lambda v: 255 - v)
        inverted.save(path)  # in place: same inode, and the same size
    again = _encode(PairSource('tsv', str(tsv)), clip, tmp_path / 'cache')
    assert not (again.image == first.image).all()


def test_pair_cache_sees_an_edited_shard(tmp_path, clip):
    shard = _tar(tmp_path / '000.tar', _pairs(3))
    _encode(PairSource('webdataset', str(shard)), clip, tmp_path / 'cache')
    edited = _pairs(3)
    edited[3] = ('000001.txt', b'shape Y')  # same size
    _tar(shard, edited)
    assert _encode(PairSource('webdataset', str(shard)), clip, tmp_path / 'cache').captions[1] == 'shape Y'
