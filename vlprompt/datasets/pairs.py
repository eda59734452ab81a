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
does not decode or a pair without a caption is skipped and counted in :class:`ReadStats`; reading
fails (:class:`PairReadError`, naming the source, the counts and the first failures) only when the
skipped fraction exceeds ``max_failure_fraction``, checked at the end of the pass.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import UserError
from .loading import describe_error, load_image

PAIR_FORMATS = ('webdataset', 'tsv', 'jsonl', 'toy')
IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'bmp')
IMAGE_KEYS = ('image', 'filepath', 'path', 'file', 'img', 'url')
CAPTION_KEYS = ('caption', 'text', 'title', 'txt')


class PairReadError(UserError, ValueError):
    """Too many pairs of a source could not be read (or the source itself is missing)."""


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
        return f'{self.read} pairs read, {self.failed} skipped' + (f' ({parts})' if parts else '')

    def to_dict(self) -> dict[str, Any]:
        return {'read': self.read, 'skipped': dict(self.skipped), 'examples': list(self.examples)}


def _expand(paths: str | Sequence[str]) -> list[str]:
    """Shard paths: brace patterns expanded (as webdataset does), globs resolved, order kept."""
    import braceexpand

    out: list[str] = []
    for item in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        for path in braceexpand.braceexpand(os.path.expanduser(str(item))):
            found = sorted(glob.glob(path)) if any(c in path for c in '*?[') else [path]
            out.extend(found)
    return out


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
        """What identifies the source's content (for a feature cache): files with sizes and times."""
        files = [{'path': os.path.abspath(p), 'size': os.path.getsize(p), 'mtime': int(os.path.getmtime(p))}
                 for p in self.files if os.path.isfile(p)]
        return {'format': self.format, 'files': files, 'limit': self.limit,
                **({'pairs': self.pairs, 'root': str(self.path)} if self.format == 'toy' else {})}

    def __iter__(self) -> Iterator[ImageTextPair]:
        self.stats = ReadStats()
        reader = {'webdataset': self._webdataset, 'tsv': self._table, 'jsonl': self._table, 'toy': self._toy}
        for n, pair in enumerate(reader[self.format]()):
            if self.limit is not None and n >= self.limit:
                break
            self.stats.read += 1
            yield pair
        self.check()

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
            return load_image(data)
        except FileNotFoundError:
            self.stats.skip('missing image', where)
        except Exception as err:  # noqa: BLE001 - any decoder failure is one skipped pair
            self.stats.skip('image does not decode', where, describe_error(err).split(' <')[0])
        return None

    def _caption(self, text: Any, where: str) -> str | None:
        caption = text.decode('utf-8', 'replace') if isinstance(text, bytes) else text
        caption = caption.strip() if isinstance(caption, str) else ''
        if not caption:
            self.stats.skip('missing caption', where)
            return None
        return caption

    def _webdataset(self) -> Iterator[ImageTextPair]:
        import webdataset as wds

        for shard in self.files:
            if not os.path.isfile(shard):
                self.stats.skip('unreadable shard', shard, 'missing')
                continue
            failed: list[BaseException] = []

            def handler(err: BaseException, failed: list = failed) -> bool:
                failed.append(err)
                return False  # stop this shard: what follows a tar error cannot be trusted

            with open(shard, 'rb') as stream:
                samples = wds.tariterators.tar_file_expander([{'url': shard, 'stream': stream}], handler=handler)
                yield from self._shard_pairs(shard, wds.tariterators.group_by_keys(samples, handler=handler))
            if failed:
                err = failed[0]
                self.stats.skip('unreadable shard', shard, f"{type(err).__name__}: {err.args[0] if err.args else ''}")

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
                except (json.JSONDecodeError, UnicodeDecodeError):
                    text = None
            caption = self._caption(text, where)
            image = self._decode(sample[ext], where) if caption is not None else None
            if image is not None and caption is not None:
                yield ImageTextPair(where, image, caption)

    def _rows(self, path: str) -> Iterator[tuple[int, Any, Any]]:
        """(line number, image, caption) of a TSV or JSONL file; a bad row gives ``None`` fields."""
        with open(path, encoding='utf-8', newline='') as f:
            if self.format == 'jsonl':
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        yield n, None, None
                        continue
                    row = row if isinstance(row, dict) else {}
                    yield n, next((row[k] for k in IMAGE_KEYS if k in row), None), \
                        next((row[k] for k in CAPTION_KEYS if k in row), None)
                return
            reader = csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE)
            image_col, caption_col = 0, 1
            for n, row in enumerate(reader, 1):
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
        for n, (rel, text) in enumerate(json.loads((folder / 'captions.json').read_text())):
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
