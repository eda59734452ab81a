"""Rendering of toy scenes to uint8 RGB arrays, in three styles, plus corruptions for TTA.

Objects are rasterised at 2x the output size (PIL polygon fill for the silhouette, vectorised numpy
fields for the surface patterns) and box-downsampled, which gives cheap anti-aliasing. One 64 px
image costs well under a millisecond on one core.

Styles (domains):
  * ``photo``: filled, patterned objects on a light, dark or textured background.
  * ``sketch``: outlines only, drawn in the object's (darkened) colour on near-white paper; no fill,
    no pattern, no background. The ink keeps the colour so that colour-shape classes stay defined.
  * ``night``: the photo darkened, desaturated, tinted blue, lower contrast, with sensor noise.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageDraw

from .world import COLOUR_RGB, STYLES, Scene, ToyObject

SUPERSAMPLE = 2
CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "gaussian_blur")
# Severity 1..5. Noise sigma as in ImageNet-C (on [0, 1] pixels); blur sigma in pixels at 64 px.
_NOISE_SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)
_BLUR_SIGMA = (0.5, 0.75, 1.0, 1.5, 2.0)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _regular(n: int, radius: float = 1.0, start: float = -90.0) -> np.ndarray:
    t = np.deg2rad(start + 360.0 * np.arange(n) / n)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    t = np.deg2rad(-90.0 + 180.0 * np.arange(2 * points) / points)
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _heart(n: int = 48) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    p = np.stack([x, y], axis=1)
    p -= (p.max(0) + p.min(0)) / 2
    return p / np.abs(p).max() * 0.98


def _cross(w: float = 0.32, e: float = 0.95) -> np.ndarray:
    return np.array([
        (-w, -e), (w, -e), (w, -w), (e, -w), (e, w), (w, w),
        (w, e), (-w, e), (-w, w), (-e, w), (-e, -w), (-w, -w),
    ])


# Unit outlines (radius <= 1, y pointing down). Circle and crescent are drawn as ellipses.
_POLYGONS: dict[str, np.ndarray] = {
    "square": np.array([(-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78)]),
    "triangle": _regular(3) + np.array([0.0, 0.12]),
    "star": _star(),
    "hexagon": _regular(6, 0.95, 0.0),
    "diamond": np.array([(0.0, -1.0), (0.68, 0.0), (0.0, 1.0), (-0.68, 0.0)]),
    "cross": _cross(),
    "heart": _heart(),
    "pentagon": _regular(5, 0.97) + np.array([0.0, 0.08]),
}


@functools.lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(n, dtype=np.float32) + 0.5
    return c[None, :], c[:, None]


def _silhouette(o: ToyObject, n: int) -> np.ndarray:
    """Boolean (n, n) mask of the object on an n x n canvas."""
    im = Image.new("L", (n, n), 0)
    d = ImageDraw.Draw(im)
    cx, cy, r = o.x * n, o.y * n, o.radius * n
    if o.shape in ("circle", "crescent"):
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        if o.shape == "crescent":
            t = np.deg2rad(o.angle)
            bx, by, br = cx + 0.45 * r * np.cos(t), cy - 0.45 * r * np.sin(t), 0.82 * r
            d.ellipse((bx - br, by - br, bx + br, by + br), fill=0)
    else:
        t = np.deg2rad(o.angle)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        pts = _POLYGONS[o.shape] @ rot * r + (cx, cy)
        d.polygon(pts.ravel().tolist(), fill=255)
    return np.asarray(im) > 127


def _bbox(o: ToyObject, n: int) -> tuple[slice, slice]:
    """Rows and columns of the canvas that can hold the object (patterns are computed only there)."""
    r = o.radius * n + 2
    y0, y1 = max(int(o.y * n - r), 0), min(int(np.ceil(o.y * n + r)), n)
    x0, x1 = max(int(o.x * n - r), 0), min(int(np.ceil(o.x * n + r)), n)
    return slice(y0, y1), slice(x0, x1)


def _pattern_field(pattern: str, n: int, scale: float, rng: np.random.Generator,
                   box: tuple[slice, slice]) -> np.ndarray | None:
    """Boolean field over ``box``, True where the pattern's second colour goes; None for solid."""
    if pattern == "solid":
        return None
    x, y = _grid(n)
    x, y = x[:, box[1]], y[box[0], :]
    if pattern == "striped":
        t = np.deg2rad(rng.choice((0.0, 45.0, 90.0, 135.0)) + rng.uniform(-12, 12))
        period = rng.uniform(4.5, 6.5) * scale
        u = x * np.float32(np.cos(t)) + y * np.float32(np.sin(t)) + np.float32(rng.uniform(0, period))
        return (u % period) < period / 2
    t = np.deg2rad(rng.uniform(-20, 20))
    c, s = np.float32(np.cos(t)), np.float32(np.sin(t))
    u, v = x * c + y * s, y * c - x * s
    if pattern == "dotted":
        period = rng.uniform(5.0, 6.5) * scale
        du = (u + np.float32(rng.uniform(0, period))) % period - period / 2
        dv = (v + np.float32(rng.uniform(0, period))) % period - period / 2
        return du * du + dv * dv < (0.3 * period) ** 2
    if pattern == "checkered":
        cell = rng.uniform(3.0, 4.0) * scale
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(bool)
    raise ValueError(f"unknown pattern {pattern!r}")


def _object_colours(o: ToyObject, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    base = np.asarray(COLOUR_RGB[o.colour], dtype=np.float32)
    c1 = np.clip((base + rng.normal(0, 0.035, 3)) * rng.uniform(0.88, 1.08), 0, 1).astype(np.float32)
    # Second pattern colour: a light shade of dark colours, a dark shade of light ones.
    c2 = c1 + 0.6 * (1 - c1) if float(c1 @ _LUMA) < 0.55 else c1 * 0.6
    return c1, c2.astype(np.float32)


def _background(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "light":
        base = rng.uniform(0.80, 0.96) + rng.normal(0, 0.025, 3)
    elif kind == "dark":
        base = rng.uniform(0.04, 0.20) + rng.normal(0, 0.02, 3)
    elif kind == "textured":
        base = rng.uniform(0.35, 0.62) + rng.normal(0, 0.05, 3)
    else:
        raise ValueError(f"unknown background {kind!r}")
    _, y = _grid(n)
    grad = (y / n - 0.5) * np.float32(rng.uniform(-0.08, 0.08))  # (n, 1)
    img = np.empty((n, n, 3), dtype=np.float32)
    img[:] = (base.astype(np.float32)[None, None, :] + grad[:, :, None])
    if kind == "textured":
        blobs = 0.75 * rng.random((5, 5, 1)) + 0.25 * rng.random((5, 5, 3))  # mostly grey mottling
        blobs = (blobs * 255).astype(np.uint8)
        low = np.asarray(Image.fromarray(blobs).resize((n, n), Image.BILINEAR), dtype=np.float32)
        img += (low / 255.0 - 0.5) * 0.4
        img += rng.standard_normal((n, n, 1), dtype=np.float32) * 0.045
    return img


def _erode(m: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        e = m.copy()
        e[1:] &= m[:-1]
        e[:-1] &= m[1:]
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        m = e
    return m


def _downsample(img: np.ndarray, f: int) -> np.ndarray:
    """Box filter by a factor f (strided sums are much faster than reshape().mean())."""
    out = img[::f, ::f].copy()
    for i in range(f):
        for j in range(f):
            if i or j:
                out += img[i::f, j::f]
    out *= np.float32(1.0 / (f * f))
    return out


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _photo(scene: Scene, n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    img = _background(scene.background, n, rng)
    for o in scene.objects:
        box = _bbox(o, n)
        m = _silhouette(o, n)[box]
        c1, c2 = _object_colours(o, rng)
        field = _pattern_field(o.pattern, n, scale, rng, box)
        sub = img[box]  # a view
        if field is None:
            sub[m] = c1
        else:
            sub[m] = np.where(field[m][:, None], c2, c1)
    return img


def _sketch(scene: Scene, n: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    img = np.empty((n, n, 3), dtype=np.float32)
    img[:] = np.float32(rng.uniform(0.90, 0.99))
    img += rng.standard_normal((n, n, 1), dtype=np.float32) * 0.012  # paper grain, grey
    width = max(1, round(rng.uniform(2.0, 3.2) * scale / SUPERSAMPLE))
    for o in scene.objects:
        m = _silhouette(o, n)
        ink, _ = _object_colours(o, rng)
        img[m & ~_erode(m, width)] = ink * np.float32(0.8)
    return img


def _night(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lum = (img @ _LUMA)[..., None]
    img = 0.65 * img + 0.35 * lum
    img = 0.02 + img * np.float32(rng.uniform(0.17, 0.29))
    img = img * np.array([0.80, 0.92, 1.15], dtype=np.float32)
    sigma = rng.uniform(0.018, 0.035)
    h, w, _ = img.shape
    img = img + rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(sigma)
    img = img + rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(sigma * 0.5)
    return img


def render(scene: Scene, size: int = 64, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Render ``scene`` to a (size, size, 3) uint8 array; deterministic given ``rng`` (or a seed)."""
    if scene.style not in STYLES:
        raise ValueError(f"unknown style {scene.style!r}; expected one of {STYLES}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n = size * SUPERSAMPLE
    scale = size / 64 * SUPERSAMPLE  # pattern and stroke sizes are given in pixels at 64 px
    if scene.style == "sketch":
        img = _downsample(_sketch(scene, n, scale, rng), SUPERSAMPLE)
    else:
        img = _downsample(_photo(scene, n, scale, rng), SUPERSAMPLE)
        if scene.style == "night":
            img = _night(img, rng)
    return _to_uint8(img)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    k = max(1, int(np.ceil(3 * sigma)))
    w = np.exp(-0.5 * (np.arange(-k, k + 1) / sigma) ** 2).astype(np.float32)
    w /= w.sum()
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (k, k)
        p = np.pad(img, pad, mode="reflect")
        n = img.shape[axis]
        img = sum(wi * np.take(p, np.arange(i, i + n), axis=axis) for i, wi in enumerate(w))
    return img


def corrupt(
    image: np.ndarray, kind: str = "gaussian_noise", severity: int = 3,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Apply an ImageNet-C style corruption (``gaussian_noise`` or ``gaussian_blur``, severity 1-5)."""
    if not 1 <= severity <= 5:
        raise ValueError("severity must be in 1..5")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    img = image.astype(np.float32) / 255.0
    if kind == "gaussian_noise":
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(_NOISE_SIGMA[severity - 1])
    elif kind == "gaussian_blur":
        img = _blur(img, _BLUR_SIGMA[severity - 1] * image.shape[0] / 64)
    else:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")
    return _to_uint8(img)
