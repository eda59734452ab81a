"""Image decoding and the in-memory cache of decoded few-shot training images.

A 16-shot training set is a few hundred to a few thousand images, read again every epoch. The
readers decode such a set once, when the dataset is built (in the main process, in a few threads),
and keep the decoded RGB images in an :class:`ImageCache`; later epochs run the random
augmentations on the cached images and open no file. Decoding before the first step also means
that an unreadable training image stops the run before it starts. The cache is filled before any
``DataLoader`` worker exists, so forked workers share it.

The cache holds at most ``budget_bytes`` of pixels (``width * height * 3`` per image) and keeps the
first images that fit; images past the budget are decoded on every access. First-come is used
rather than LRU because a shuffled epoch touches every image once: with a working set larger
than the cache, LRU would evict each image before its next use and hit almost never, while a
fixed set of cached images keeps its hit rate epoch after epoch.

Cached images are handed to the transform as they are (torchvision transforms return new images);
a custom transform must not modify its input in place.

A path ``<archive>.zip@<member>`` names a file inside a zip archive (the layout ELEVATER's toolkit
and the ``vision-datasets`` package use, e.g. ``cifar_10/train.zip@images/0.png``):
:func:`load_image`, :func:`probe_image` and :func:`image_exists` read the member without extracting
it. One ``ZipFile`` is kept open per archive and process (forked loader workers open their own).

Archive members are bounded before they are inflated: a member whose recorded size is over
:data:`MAX_MEMBER_BYTES` (a zip member here, a webdataset tar member in :mod:`vlprompt.datasets.pairs`)
is refused with :class:`MemberTooLargeError`, naming the archive and the member, instead of being read
whole into memory (a decompression bomb: a few MB of zip or gzip that inflate to GBs).

``short_side`` optionally shrinks cached images so their shorter side is at most that many pixels
(bicubic), to fit more in the budget. It is off by default: the random-resized crop then sees the
original pixels, as in the published runs.
"""

from __future__ import annotations

import io
import os
import re
import threading
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from tqdm import tqdm

from ..errors import UserError
from ..progress import bar_disabled

__all__ = ['DEFAULT_CACHE_BYTES', 'IMG_EXTENSIONS', 'MAX_MEMBER_BYTES', 'ImageCache', 'MemberTooLargeError',
           'check_member_size', 'describe_error', 'image_exists', 'image_nbytes', 'load_image', 'probe_image',
           'split_zip_path', 'unreadable_images']

DEFAULT_CACHE_BYTES = 2 << 30  # 2 GiB
IMG_EXTENSIONS: tuple[str, ...] = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff', '.ppm')

MAX_MEMBER_BYTES = 256 << 20  # 256 MiB
"""The largest archive member (one image, caption or JSON record of a zip or tar archive) a data reader
inflates into memory: far above any real image (a 100-megapixel PNG is about 150 MB) or caption, and small
enough that the few loader threads reading at once cannot exhaust memory. Also bounds the metadata headers
of a tar archive (long names, pax records), which ``tarfile`` would otherwise read whole."""


class MemberTooLargeError(UserError, ValueError):
    """An archive member larger than :data:`MAX_MEMBER_BYTES`: refused before it is read (a decompression bomb)."""


def check_member_size(archive: str | os.PathLike[str], member: str, size: int) -> None:
    """Refuse ``member`` of ``archive`` whose recorded (uncompressed) ``size`` is over :data:`MAX_MEMBER_BYTES`.

    Called with the size an archive's directory or header records, before anything is inflated: ``zipfile``
    and ``tarfile`` then never return more than that size for the member.
    """
    limit = MAX_MEMBER_BYTES
    if size > limit:
        raise MemberTooLargeError(
            f'{archive}: member {member!r} is {size} bytes, more than the {limit} bytes allowed for one image or '
            f'caption (vlprompt.datasets.loading.MAX_MEMBER_BYTES); refusing to inflate it')


_ZIP_MEMBER = re.compile(r'\.zip@', re.IGNORECASE)
_zips: dict[tuple[int, str], tuple[float, zipfile.ZipFile]] = {}
_zip_names: dict[str, tuple[float, frozenset[str]]] = {}
_zip_lock = threading.Lock()


def split_zip_path(path: str) -> tuple[str, str] | None:
    """``(archive, member)`` for ``'<archive>.zip@<member>'`` (split at the first ``.zip@``), else
    ``None``; also ``None`` when a plain file has that very name."""
    m = _ZIP_MEMBER.search(os.fspath(path))
    if m is None or os.path.isfile(path):
        return None
    return path[:m.start() + 4], path[m.end():]


def _zip(archive: str) -> zipfile.ZipFile:
    """The open archive of this process (reopened when the file changed on disk)."""
    key = (os.getpid(), archive)  # never share an open archive (and its file offset) with a forked worker
    mtime = os.stat(archive).st_mtime
    hit = _zips.get(key)
    if hit is None or hit[0] != mtime:
        with _zip_lock:
            hit = _zips.get(key)
            if hit is None or hit[0] != mtime:
                hit = _zips[key] = (mtime, zipfile.ZipFile(archive))
    return hit[1]


def _zip_members(archive: str) -> frozenset[str]:
    mtime = os.stat(archive).st_mtime
    hit = _zip_names.get(archive)
    if hit is None or hit[0] != mtime:
        with zipfile.ZipFile(archive) as zf:
            hit = _zip_names[archive] = (mtime, frozenset(zf.namelist()))
    return hit[1]


def image_exists(path: str) -> bool:
    """Whether ``path`` is a file, or for ``<archive>.zip@<member>`` a member of an existing archive."""
    parts = split_zip_path(path)
    if parts is None:
        return os.path.isfile(path)
    archive, member = parts
    try:
        return os.path.isfile(archive) and member in _zip_members(archive)
    except (OSError, zipfile.BadZipFile):
        return False


def _read_member(archive: str, member: str) -> io.BytesIO:
    """The bytes of ``member`` of ``archive`` (``OSError`` when either is missing or unreadable,
    :class:`MemberTooLargeError` when the member is over :data:`MAX_MEMBER_BYTES`)."""
    try:
        zf = _zip(archive)
        info = zf.getinfo(member)
        check_member_size(archive, member, info.file_size)
        data = zf.read(info)  # never more than info.file_size bytes
    except KeyError:
        raise FileNotFoundError(f'no member {member!r} in {archive}') from None
    except zipfile.BadZipFile as err:
        raise OSError(f'bad zip archive {archive}: {err}') from err
    return io.BytesIO(data)


def load_image(path: str) -> Image.Image:
    """Decode an image file (or zip member, ``<archive>.zip@<member>``) fully into an RGB PIL image
    (raises ``OSError`` on a bad or missing file)."""
    parts = split_zip_path(path)
    source = path if parts is None else _read_member(*parts)
    with Image.open(source) as img:
        img.load()
        return img.convert('RGB') if img.mode != 'RGB' else img.copy()


def describe_error(err: BaseException, path: str = '') -> str:
    """``ClassName: message`` of a decoder error, without the path the message often repeats."""
    text = str(err)
    if path:
        text = text.replace(repr(path), '').replace(path, '')
    text = text.strip(' :')
    return f'{err.__class__.__name__}: {text}' if text else err.__class__.__name__


def probe_image(path: str, full: bool = True) -> str | None:
    """``None`` when ``path`` is a readable image, else what is wrong with it.

    ``full`` decodes every pixel (catches any truncation); otherwise only the header is parsed and
    ``Image.verify`` run (cheap: catches a missing or foreign file, and truncation of PNG and most
    other formats, but not of a JPEG's pixel data).
    """
    try:
        if full:
            load_image(path)
        else:
            parts = split_zip_path(path)
            with Image.open(path if parts is None else _read_member(*parts)) as img:
                img.verify()
    except Exception as err:  # noqa: BLE001 - any decoder failure means the file is unusable
        return describe_error(err, path)
    return None


def unreadable_images(paths: Iterable[str], full: bool = True, workers: int | None = None,
                      progress: bool = False, desc: str = 'checking images') -> list[tuple[str, str]]:
    """``(path, problem)`` for every path of ``paths`` that :func:`probe_image` rejects, in input order.

    Runs in a thread pool (decoders release the GIL); a progress bar is shown when ``progress``
    and there are more than 2,000 paths.
    """
    todo = list(dict.fromkeys(paths))
    workers = workers or min(8, os.cpu_count() or 1)
    bad = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: probe_image(p, full), todo)
        for path, err in tqdm(zip(todo, results, strict=True), total=len(todo), desc=desc, unit='img',
                              leave=False, disable=not progress or len(todo) <= 2000):
            if err is not None:
                bad.append((path, err))
    return bad


def image_nbytes(img: Image.Image) -> int:
    """Bytes of pixel data held by ``img``."""
    return img.width * img.height * len(img.getbands())


def _shrink(img: Image.Image, short_side: int | None) -> Image.Image:
    if not short_side or min(img.size) <= short_side:
        return img
    w, h = img.size
    scale = short_side / min(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)


class ImageCache:
    """Decoded RGB images kept in memory, first come first kept, within a byte budget.

    Args:
        budget_bytes: Most pixel bytes held; ``0`` disables the cache.
        short_side: When set, cached images are shrunk so their shorter side is at most this.
    """

    def __init__(self, budget_bytes: int = DEFAULT_CACHE_BYTES, short_side: int | None = None) -> None:
        self.budget_bytes = int(budget_bytes)
        self.short_side = short_side
        self.nbytes = 0
        self.full = False
        self._images: dict[str, Image.Image] = {}

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, path: object) -> bool:
        return path in self._images

    def get(self, path: str) -> Image.Image | None:
        """The cached image of ``path`` or ``None``."""
        return self._images.get(path)

    def put(self, path: str, img: Image.Image) -> Image.Image:
        """Cache ``img`` if it fits in what is left of the budget; returns the image to use."""
        if path in self._images:
            return self._images[path]
        img = _shrink(img, self.short_side)
        if self.full:
            return img
        size = image_nbytes(img)
        if self.nbytes + size <= self.budget_bytes:
            self._images[path] = img
            self.nbytes += size
        else:
            self.full = True
        return img

    def preload(self, paths: Iterable[str], loader: Callable[[str], Image.Image],
                workers: int | None = None, desc: str = 'caching images', progress: bool = True) -> int:
        """Decode ``paths`` in order with a thread pool and cache them until the budget is spent.

        Returns how many images were cached. Errors of ``loader`` propagate.
        """
        todo = [p for p in dict.fromkeys(paths) if p not in self._images]
        if not todo or self.budget_bytes <= 0:
            return 0
        workers = workers or min(8, os.cpu_count() or 1)
        before = len(self._images)
        chunk = max(1, workers * 4)
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=len(todo), desc=desc, unit='img', disable=bar_disabled() if progress else True,
                     leave=False) as bar:
            for start in range(0, len(todo), chunk):
                batch = todo[start:start + chunk]
                for path, img in zip(batch, pool.map(loader, batch), strict=True):
                    self.put(path, img)
                bar.update(len(batch))
                if self.full:
                    break
        return len(self._images) - before
