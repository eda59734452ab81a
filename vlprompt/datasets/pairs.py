"""Unlabelled image-text pairs, streamed: webdataset shards, TSV / JSONL files, the toy caption pool.

The formats people keep web-scale pairs in:

* **webdataset** tar shards (what img2dataset writes for CC3M / CC12M / LAION): members
  ``<key>.jpg|png|webp`` + ``<key>.txt`` (or a ``<key>.json`` with a ``caption`` field), read
  through the ``webdataset`` package. ``shards`` is a path, a brace pattern
  (``/data/cc3m/{00000..00331}.tar``) or a list of them.
* **TSV** ``image<TAB>caption`` (an optional header row naming the columns, e.g. open_clip's
  ``filepath`` / ``title``) and **JSONL** ``{"image": ..., "caption": ...}`` (``filepath``, ``path``,
  ``text``, ``title`` are accepted too); image paths are relative to the file's folder.
* ``toy``: the toy world's ``toy-captions`` pool (generated on first use), the embedded default.

Pairs are read one at a time, never the whole corpus. A shard that cannot be read, an image that
does not decode, a pair without a caption, a row that is not UTF-8 or not parseable JSON (nested
deeper than Python parses included) is skipped and counted in :class:`ReadStats`; reading fails
(:class:`PairReadError`, naming the source, the counts and the first failures) only when the skipped
fraction exceeds ``max_failure_fraction``, checked at the end of the pass.

A shard that ends early (cut at a member boundary, mid-member, or a gzip stream cut short) is counted
once as an ``unreadable shard`` and recorded in :attr:`ReadStats.damaged` with how many members and
pairs were read before the cut; the pair being read at the cut is dropped with the rest, and a
:class:`PairReadWarning` names the shard. Shard members are bounded before they are read: a member (or a
tar metadata header) over :data:`~vlprompt.datasets.loading.MAX_MEMBER_BYTES` stops the pass with
:class:`~vlprompt.datasets.loading.MemberTooLargeError`, naming the shard and the member.

:attr:`PairSource.opened` lists the files the last pass opened (the TSV / JSONL file and every image it
named, or the shards): :mod:`vlprompt.meta.features` keys its cache on their content.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import UserError
from . import loading as _loading
from .loading import MemberTooLargeError, check_member_size, describe_error, load_image, split_zip_path

PAIR_FORMATS = ('webdataset', 'tsv', 'jsonl', 'toy')
IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'bmp')
IMAGE_KEYS = ('image', 'filepath', 'path', 'file', 'img', 'url')
CAPTION_KEYS = ('caption', 'text', 'title', 'txt')


class PairReadError(UserError, ValueError):
    """Too many pairs of a source could not be read (or the source itself is missing)."""


class PairReadWarning(UserWarning):
    """A shard ended early: the pairs after the cut are lost (named with the shard and what was read)."""


@dataclass
class ImageTextPair:
    """One decoded pair; ``key`` says where it came from (``shard.tar:key``, ``file.tsv:line``)."""

    key: str
    image: Image.Image
    caption: str


@dataclass
class ReadStats:
    """What a pass over a source read and skipped, by reason, with the first few failures."""

    read: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    damaged: list[dict[str, Any]] = field(default_factory=list)  # shards cut short: what was read, what was lost

    def skip(self, reason: str, where: str, detail: str = '') -> None:
        self.skipped[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}{f' ({detail})' if detail else ''}")

    @property
    def failed(self) -> int:
        return sum(self.skipped.values())

    @property
    def failure_fraction(self) -> float:
        total = self.read + self.failed
        return self.failed / total if total else 0.0

    def summary(self) -> str:
        parts = ', '.join(f'{n} {reason}' for reason, n in sorted(self.skipped.items()))
        damaged = '; '.join(f"{d['shard']} ({d['members_read']} members, {d['pairs_read']} pairs read)"
                            for d in self.damaged)
        return (f'{self.read} pairs read, {self.failed} skipped' + (f' ({parts})' if parts else '')
                + (f'; damaged: {damaged}' if damaged else ''))

    def to_dict(self) -> dict[str, Any]:
        return {'read': self.read, 'skipped': dict(self.skipped), 'examples': list(self.examples),
                'damaged_shards': [dict(d) for d in self.damaged]}


def _expand(paths: str | Sequence[str]) -> list[str]:
    """Shard paths: brace patterns expanded (as webdataset does), globs resolved, order kept."""
    import braceexpand

    out: list[str] = []
    for item in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        for path in braceexpand.braceexpand(os.path.expanduser(str(item))):
            found = sorted(glob.glob(path)) if any(c in path for c in '*?[') else [path]
            out.extend(found)
    return out


_SHARD_SUFFIXES = frozenset((*IMAGE_EXTENSIONS, 'txt', 'json'))  # the members a pair is made of; others are skipped
_TAR_HEADER_TYPES = frozenset((tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                               tarfile.SOLARIS_XHDTYPE))  # headers whose content tarfile reads whole into memory


class _Oversized(Exception):
    def __init__(self, member: str, size: int) -> None:
        super().__init__(member, size)
        self.member, self.size = member, size


class _ShardTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` that notes how the archive ended (on its end-of-archive marker, or cut short) and refuses
    a metadata header (long name, pax record) over :data:`~vlprompt.datasets.loading.MAX_MEMBER_BYTES` before
    ``tarfile`` reads it."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        # tarfile ends the member list quietly on each of these; only the first is the archive's own end
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:  # a zero block: the end-of-archive marker
            tar.vlprompt_end = None  # type: ignore[attr-defined]
            raise
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError):  # no (whole) header where one belongs
            tar.vlprompt_end = 'the archive ends early, without its end-of-archive marker'  # type: ignore[attr-defined]
            raise
        except tarfile.InvalidHeaderError as err:
            tar.vlprompt_end = f'the archive is damaged ({err})'  # type: ignore[attr-defined]
            raise

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:  # tarfile's documented extension point
        if self.type in _TAR_HEADER_TYPES and self.size > _loading.MAX_MEMBER_BYTES:  # read at call time
            raise _Oversized(self.name, self.size)
        return super()._proc_member(tar)


def _shard_samples(shard: str, stats: ReadStats) -> Iterator[dict[str, Any]]:
    """The samples of a webdataset shard (``.tar``, ``.tar.gz``...): ``{'__key__': key, suffix: bytes}`` of
    consecutive members sharing a key, read as a stream.

    Each member is checked against :data:`~vlprompt.datasets.loading.MAX_MEMBER_BYTES` before it is read
    (:class:`~vlprompt.datasets.loading.MemberTooLargeError`).
    A shard that ends early (a read error, or no end-of-archive marker) is counted once as an
    ``unreadable shard`` and added to ``stats.damaged``; the sample being read at the cut is dropped, since
    its other members may be lost.
    """
    from webdataset.tariterators import base_plus_ext

    members = samples = 0
    pending: dict[str, Any] | None = None
    problem: str | None = None
    oversized: _Oversized | None = None
    try:
        with open(shard, 'rb') as stream, \
                tarfile.open(fileobj=stream, mode='r|*', tarinfo=_ShardTarInfo) as tar:
            for info in tar:
                tar.members = []  # a stream of millions of members: keep none
                if not info.isreg():
                    continue
                key, suffix = base_plus_ext(info.name)
                suffix = (suffix or '').lower()
                if key is None or suffix not in _SHARD_SUFFIXES:
                    continue
                check_member_size(shard, info.name, info.size)
                data = tar.extractfile(info).read()
                members += 1
                if pending is not None and pending['__key__'] != key:
                    samples += 1
                    yield pending
                    pending = None
                if pending is None:
                    pending = {'__key__': key}
                if suffix in pending:
                    stats.skip('repeated member', f'{shard}:{info.name}')
                    continue
                pending[suffix] = data
            problem = getattr(tar, 'vlprompt_end', 'the archive ends early, without its end-of-archive marker')
    except _Oversized as err:
        oversized = err
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        problem = f'the archive ends early or is damaged ({type(err).__name__}: {err})'
    if oversized is not None:
        check_member_size(shard, oversized.member, oversized.size)  # raises, naming the shard and the member
    if problem is None:
        if pending is not None:
            yield pending
        return
    lost = f"the pair {pending['__key__']} and all that followed it are lost" if pending is not None \
        else 'all that followed is lost'
    detail = f'{problem}, after {members} members read ({samples} pairs read): {lost}'
    stats.skip('unreadable shard', shard, detail)
    stats.damaged.append({'shard': shard, 'problem': detail, 'members_read': members, 'pairs_read': samples,
                          'lost_from': pending['__key__'] if pending is not None else None})


class PairSource:
    """A re-iterable stream of :class:`ImageTextPair` from one source, with its :attr:`stats`.

    Args:
        format: ``webdataset``, ``tsv``, ``jsonl`` or ``toy``.
        path: shards (webdataset), the TSV / JSONL file, or for ``toy`` the toy-world root (None:
            the default cache).
        max_failure_fraction: the skipped fraction above which a pass fails at its end.
        limit: read at most this many pairs (None: all).
        pairs: ``toy`` only: the pool's size (2000, the generated default).
    """

    def __init__(self, format: str, path: str | Sequence[str] | None = None, max_failure_fraction: float = 0.1,
                 limit: int | None = None, pairs: int = 2000) -> None:
        if format not in PAIR_FORMATS:
            raise PairReadError(f"image-text source format {format!r} is not one of {', '.join(PAIR_FORMATS)}")
        if not 0.0 <= max_failure_fraction <= 1.0:
            raise PairReadError(f'max_failure_fraction must be in [0, 1], got {max_failure_fraction}')
        if format != 'toy' and not path:
            raise PairReadError(f'a {format} source needs a path')
        self.format, self.path, self.limit, self.pairs = format, path, limit, pairs
        self.max_failure_fraction = max_failure_fraction
        self.stats = ReadStats()
        self._opened: dict[str, tuple[int, int, int] | None] = {}
        if format == 'webdataset':
            self.files = _expand(path)
            missing = [p for p in self.files if not os.path.isfile(p)]
            if not self.files or len(missing) == len(self.files):
                raise PairReadError(f"webdataset source {path!r}: no shard found ({', '.join(missing[:3]) or 'empty'})")
        elif format in ('tsv', 'jsonl'):
            if not os.path.isfile(os.path.expanduser(str(path))):
                raise PairReadError(f'{format} source {path}: file not found')
            self.files = [os.path.expanduser(str(path))]
        else:
            self.files = []

    def describe(self) -> dict[str, Any]:
        """Which source this is (format, files, limit): the name half of a feature cache's key. The content
        half is the files a pass opened (:attr:`opened`), which the cache checks by their bytes."""
        return {'format': self.format, 'files': [os.path.abspath(p) for p in self.files], 'limit': self.limit,
                **({'pairs': self.pairs, 'root': str(self.path)} if self.format == 'toy' else {})}

    @property
    def opened(self) -> dict[str, tuple[int, int, int] | None]:
        """Every file the last pass opened or looked for, in order: the shards, or the TSV / JSONL file and
        each image (or image archive) its rows named, with its ``(size, mtime_ns, inode)`` when first opened
        (``None``: missing). A pass over the same bytes opens the same files, so their content identifies
        what the pass read."""
        return dict(self._opened)

    def _open(self, path: str) -> str:
        key = os.path.abspath(path)
        if key not in self._opened:
            try:
                st = os.stat(key)
                self._opened[key] = (st.st_size, st.st_mtime_ns, st.st_ino)
            except OSError:
                self._opened[key] = None
        return path

    def __iter__(self) -> Iterator[ImageTextPair]:
        self.stats = ReadStats()
        self._opened = {}
        reader = {'webdataset': self._webdataset, 'tsv': self._table, 'jsonl': self._table, 'toy': self._toy}
        for n, pair in enumerate(reader[self.format]()):
            if self.limit is not None and n >= self.limit:
                break
            self.stats.read += 1
            yield pair
        self.check()
        for d in self.stats.damaged:
            warnings.warn(f"{d['shard']}: {d['problem']}", PairReadWarning, stacklevel=2)

    def check(self) -> None:
        """Fail when the skipped fraction of the last pass exceeds :attr:`max_failure_fraction`."""
        stats = self.stats
        if stats.read == 0 or stats.failure_fraction > self.max_failure_fraction:
            raise PairReadError(
                f"{self.format} source {self.path}: {stats.summary()}: {100 * stats.failure_fraction:.1f}% failed, "
                f"more than max_failure_fraction={self.max_failure_fraction}; first failures: "
                f"{'; '.join(stats.examples) or 'none'}")

    # ------------------------------------------------------------------ formats
    def _decode(self, data: bytes | str, where: str) -> Image.Image | None:
        try:
            if isinstance(data, bytes):
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
                    return img.convert('RGB')
            parts = split_zip_path(data)
            self._open(data if parts is None else parts[0])
            return load_image(data)
        except FileNotFoundError:
            self.stats.skip('missing image', where)
        except MemberTooLargeError:
            raise
        except Exception as err:  # noqa: BLE001 - any decoder failure is one skipped pair
            self.stats.skip('image does not decode', where, describe_error(err).split(' <')[0])
        return None

    def _caption(self, text: Any, where: str) -> str | None:
        if isinstance(text, bytes):
            try:
                text = text.decode('utf-8')
            except UnicodeDecodeError:
                self.stats.skip('caption not UTF-8', where)
                return None
        caption = text.strip() if isinstance(text, str) else ''
        if not caption:
            self.stats.skip('missing caption', where)
            return None
        return caption

    def _webdataset(self) -> Iterator[ImageTextPair]:
        for shard in self.files:
            self._open(shard)
            if not os.path.isfile(shard):
                self.stats.skip('unreadable shard', shard, 'missing')
                continue
            yield from self._shard_pairs(shard, _shard_samples(shard, self.stats))

    def _shard_pairs(self, shard: str, groups: Iterator[dict]) -> Iterator[ImageTextPair]:
        for sample in groups:
            where = f"{shard}:{sample.get('__key__')}"
            ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
            if ext is None:
                self.stats.skip('missing image', where)
                continue
            text = sample.get('txt')
            if text is None and 'json' in sample:
                try:
                    meta = json.loads(sample['json'])
                    text = next((meta[k] for k in CAPTION_KEYS if isinstance(meta, dict) and k in meta), None)
                except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deeply
                    text = None
            caption = self._caption(text, where)
            image = self._decode(sample[ext], where) if caption is not None else None
            if image is not None and caption is not None:
                yield ImageTextPair(where, image, caption)

    def _rows(self, path: str) -> Iterator[tuple[int, Any, Any]]:
        """(line number, image, caption) of a TSV or JSONL file; a row that is not UTF-8 or not JSON is
        counted here and not given; a row without the fields gives ``None`` for them."""
        image_col: int | None = 0
        caption_col: int | None = 1
        with open(path, 'rb') as f:  # decoded row by row: one bad row is one skipped pair
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode('utf-8')
                except UnicodeDecodeError:
                    self.stats.skip('row not UTF-8', f'{path}:{n}')
                    continue
                if self.format == 'jsonl':
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        self.stats.skip('unreadable row', f'{path}:{n}', 'not JSON')
                        continue
                    except RecursionError:
                        self.stats.skip('unreadable row', f'{path}:{n}', 'JSON nested too deeply')
                        continue
                    row = row if isinstance(row, dict) else {}
                    yield n, next((row[k] for k in IMAGE_KEYS if k in row), None), \
                        next((row[k] for k in CAPTION_KEYS if k in row), None)
                    continue
                row = line.rstrip('\r\n').split('\t')  # csv's QUOTE_NONE tab dialect: fields are tab-separated
                if n == 1:
                    lower = [c.strip().lower() for c in row]
                    image_col = next((lower.index(k) for k in IMAGE_KEYS if k in lower), None)
                    caption_col = next((lower.index(k) for k in CAPTION_KEYS if k in lower), None)
                    if image_col is not None and caption_col is not None:
                        continue  # a header row
                    image_col, caption_col = 0, 1
                yield (n, row[image_col] if len(row) > image_col else None,
                       row[caption_col] if len(row) > caption_col else None)

    def _table(self) -> Iterator[ImageTextPair]:
        path = self.files[0]
        self._open(path)
        folder = os.path.dirname(os.path.abspath(path))
        for n, image, text in self._rows(path):
            where = f'{path}:{n}'
            if not isinstance(image, str) or not image.strip():
                self.stats.skip('missing image', where)
                continue
            caption = self._caption(text, where)
            if caption is None:
                continue
            decoded = self._decode(os.path.join(folder, os.path.expanduser(image.strip())), where)
            if decoded is not None:
                yield ImageTextPair(where, decoded, caption)

    def _toy(self) -> Iterator[ImageTextPair]:
        from ..toyworld import TOY_CAPTIONS, ensure_toy_dataset

        folder = ensure_toy_dataset(TOY_CAPTIONS, self.path, counts={'pairs': self.pairs})
        for n, (rel, text) in enumerate(json.loads(Path(self._open(str(folder / 'captions.json'))).read_text())):
            where = f'{TOY_CAPTIONS}:{n}'
            caption = self._caption(text, where)
            image = self._decode(str(folder / 'images' / rel), where) if caption is not None else None
            if image is not None and caption is not None:
                yield ImageTextPair(where, image, caption)


def build_pair_source(cfg: dict | PairSource) -> PairSource:
    """A :class:`PairSource` from a config dict ``dict(format=..., path=..., ...)``."""
    if isinstance(cfg, PairSource):
        return cfg
    cfg = dict(cfg)
    try:
        return PairSource(**cfg)
    except TypeError as err:
        raise PairReadError(f'image-text source {cfg}: {err}') from None


def write_webdataset(pairs: Sequence[tuple[Image.Image | bytes, str]], shard: str | Path) -> Path:
    """Write ``(image, caption)`` pairs as one webdataset tar shard (PNG + txt), e.g. for tests or a
    small local corpus; ``bytes`` images are written as they are."""
    import tarfile

    shard = Path(shard)
    shard.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(shard, 'w') as tar:
        for i, (image, caption) in enumerate(pairs):
            if isinstance(image, Image.Image):
                buf = io.BytesIO()
                image.save(buf, format='PNG')
                image = buf.getvalue()
            for ext, data in (('png', image), ('txt', caption.encode('utf-8'))):
                info = tarfile.TarInfo(f'{i:06d}.{ext}')
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return shard
