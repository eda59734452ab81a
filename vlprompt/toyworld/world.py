"""The attribute vocabulary of the toy world and the random scene sampler.

A scene is one or two flat objects (shape, colour, surface pattern, size, position, rotation) on a
background, rendered in one style (the domain). Everything random comes from a numpy Generator
passed in, so a scene is a pure function of the generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "hexagon",
    "diamond", "cross", "heart", "pentagon", "crescent",
)
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: tuple[str, ...] = ("light", "dark", "textured")
STYLES: tuple[str, ...] = ("photo", "sketch", "night")

# Nominal RGB in [0, 1]; each rendered object gets a small random jitter around it.
COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.98, 0.55, 0.08),
    "yellow": (0.96, 0.87, 0.12),
    "green": (0.15, 0.66, 0.20),
    "blue": (0.13, 0.30, 0.90),
    "purple": (0.55, 0.20, 0.76),
    "pink": (0.98, 0.52, 0.76),
    "brown": (0.50, 0.30, 0.12),
}

# Object radius as a fraction of the image side: (low, high) per size, for one and for two objects.
_RADIUS_ONE = {"small": (0.15, 0.19), "large": (0.28, 0.34)}
_RADIUS_TWO = {"small": (0.10, 0.13), "large": (0.17, 0.21)}
_MARGIN = 0.03


@dataclass(frozen=True)
class ToyObject:
    """One object: its attributes plus its placement (centre and radius as fractions of the side)."""

    shape: str
    colour: str
    pattern: str
    size: str
    x: float = 0.5
    y: float = 0.5
    radius: float = 0.3
    angle: float = 0.0  # degrees, counter-clockwise


@dataclass(frozen=True)
class Scene:
    """What an image shows: the objects (left to right / top to bottom), background and style."""

    objects: tuple[ToyObject, ...]
    background: str = "light"
    style: str = "photo"

    @property
    def same_kind(self) -> bool:
        """True for a single object or for two objects with identical attributes ("two red stars")."""
        o = self.objects
        return all(_attrs(a) == _attrs(o[0]) for a in o[1:])


def _attrs(o: ToyObject) -> tuple[str, str, str, str]:
    return (o.shape, o.colour, o.pattern, o.size)


def _pick(rng: np.random.Generator, options: tuple[str, ...], fixed: str | None) -> str:
    if fixed is not None:
        if fixed not in options:
            raise ValueError(f"unknown value {fixed!r}; expected one of {options}")
        return fixed
    return options[int(rng.integers(len(options)))]


def _angle(rng: np.random.Generator, shape: str) -> float:
    if shape in ("circle", "crescent"):
        return float(rng.uniform(-180.0, 180.0))
    return float(rng.uniform(-20.0, 20.0))


def sample_scene(
    rng: np.random.Generator,
    *,
    shape: str | None = None,
    colour: str | None = None,
    pattern: str | None = None,
    size: str | None = None,
    background: str | None = None,
    style: str = "photo",
    n_objects: int | None = None,
    p_two: float = 0.2,
    p_distinct: float = 0.0,
) -> Scene:
    """Sample a random scene; any attribute passed is fixed, the others are uniform.

    With two objects, the second one is a copy of the first (``"two red stars"``) unless, with
    probability ``p_distinct``, it gets its own random attributes (never for fixed attributes: a
    class-conditional scene keeps both objects in the class).
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    n = n_objects if n_objects is not None else (2 if rng.random() < p_two else 1)
    if n not in (1, 2):
        raise ValueError("a scene has one or two objects")
    first = ToyObject(
        shape=_pick(rng, SHAPES, shape),
        colour=_pick(rng, COLOURS, colour),
        pattern=_pick(rng, PATTERNS, pattern),
        size=_pick(rng, SIZES, size),
    )
    bg = _pick(rng, BACKGROUNDS, background)
    if n == 1:
        lo, hi = _RADIUS_ONE[first.size]
        r = float(rng.uniform(lo, hi))
        x, y = rng.uniform(r + _MARGIN, 1.0 - r - _MARGIN, size=2)
        obj = replace(first, x=float(x), y=float(y), radius=r, angle=_angle(rng, first.shape))
        return Scene((obj,), bg, style)

    second = first
    if rng.random() < p_distinct:
        second = ToyObject(
            shape=_pick(rng, SHAPES, shape),
            colour=_pick(rng, COLOURS, colour),
            pattern=_pick(rng, PATTERNS, pattern),
            size=_pick(rng, SIZES, size),
        )
    horizontal = rng.random() < 0.7
    objs = []
    for half, o in enumerate((first, second)):
        lo, hi = _RADIUS_TWO[o.size]
        r = float(rng.uniform(lo, hi))
        slack = max(0.25 - r - 0.02, 0.0)
        along = 0.25 + 0.5 * half + float(rng.uniform(-slack, slack))
        across = float(rng.uniform(r + _MARGIN, 1.0 - r - _MARGIN))
        x, y = (along, across) if horizontal else (across, along)
        objs.append(replace(o, x=x, y=y, radius=r, angle=_angle(rng, o.shape)))
    return Scene(tuple(objs), bg, style)
