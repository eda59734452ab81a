"""Captions and per-class knowledge sentences for the toy world.

Captions almost always name colour and shape and only sometimes the surface pattern, size,
count, background, position or style; these probabilities are the fields of ``CaptionProbs`` so
that the pretraining can decide how much each attribute is grounded in text (e.g. a rarely named
pattern makes zero-shot recognition of patterns weak while the image features still carry it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .world import Scene, ToyObject


@dataclass(frozen=True)
class CaptionProbs:
    """Probability that a caption mentions each attribute (count: when there are two objects)."""

    colour: float = 0.95
    shape: float = 0.97
    pattern: float = 0.25
    size: float = 0.2
    count: float = 0.9
    background: float = 0.12
    position: float = 0.08
    style: float = 0.7  # for sketch / night images
    synonym: float = 0.15  # use a synonym for the shape or size word


_PLURAL = {"cross": "crosses"}
_SHAPE_SYNONYMS = {
    "circle": ("disc", "round disc"),
    "star": ("five-pointed star",),
    "diamond": ("rhombus", "diamond shape"),
    "cross": ("plus sign",),
    "heart": ("heart shape",),
    "crescent": ("crescent moon", "moon shape"),
}
_SIZE_WORDS = {"small": ("small", "small", "little", "tiny"), "large": ("large", "large", "big")}
_PATTERN_ADJ = {
    "solid": ("solid", "plain", "solid-coloured"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "polka-dot", "spotted"),
    "checkered": ("checkered", "chequered", "checked"),
}
_PATTERN_WITH = {
    "solid": ("with no pattern", "in a single flat colour"),
    "striped": ("with stripes", "covered in stripes", "with a striped pattern"),
    "dotted": ("with dots", "with polka dots", "covered in dots"),
    "checkered": ("with a checkered pattern", "with a checkerboard pattern", "covered in squares"),
}
_BG_WORDS = {
    "light": ("light", "white", "bright", "pale"),
    "dark": ("dark", "black", "dark grey"),
    "textured": ("textured", "mottled", "grainy"),
}
_FRAMES = {
    "photo": ("a photo of {}.", "a picture of {}.", "{}.", "{}", "an image of {}.", "there is {}.",
              "a close-up photo of {}.", "{} in the picture.", "a rendering of {}."),
    "neutral": ("{}.", "{}", "an image of {}.", "a picture of {}.", "there is {}."),
    "sketch": ("a sketch of {}.", "a drawing of {}.", "an outline drawing of {}.",
               "a pencil sketch of {}.", "a line drawing of {}.", "a sketch of {}"),
    "night": ("a photo of {} at night.", "a dark photo of {}.", "a night-time photo of {}.",
              "a low-light picture of {}.", "{} in the dark.", "a photo of {} taken at night."),
}
_TWO = {
    "same": ("two {}", "a pair of {}", "two identical {}"),
    "distinct": ("{} and {}", "{} next to {}", "{} beside {}"),
}


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _position(o: ToyObject) -> str:
    h = "left" if o.x < 0.4 else "right" if o.x > 0.6 else ""
    v = "top" if o.y < 0.4 else "bottom" if o.y > 0.6 else ""
    if h and v:
        return f"in the {v} {h} corner"
    if h:
        return f"on the {h}"
    if v:
        return f"at the {v}"
    return "in the centre"


def _noun_phrase(o: ToyObject, rng: np.random.Generator, p: CaptionProbs, plural: bool,
                 show_pattern: bool = True) -> str:
    words = []
    if rng.random() < p.size:
        words.append(_choice(rng, _SIZE_WORDS[o.size]) if rng.random() < p.synonym * 3 else o.size)
    pattern_tail = ""
    if rng.random() < p.pattern and show_pattern:
        if rng.random() < 0.6:
            words.append(_choice(rng, _PATTERN_ADJ[o.pattern]))
        else:
            pattern_tail = " " + _choice(rng, _PATTERN_WITH[o.pattern])
    if rng.random() < p.colour:
        words.append(o.colour)
    if rng.random() < p.shape:
        noun = o.shape
        if o.shape in _SHAPE_SYNONYMS and rng.random() < p.synonym:
            noun = _choice(rng, _SHAPE_SYNONYMS[o.shape])
    else:
        noun = _choice(rng, ("shape", "object"))
    if plural:
        noun = _PLURAL.get(noun, noun + "s")
    words.append(noun)
    return " ".join(words) + pattern_tail


def caption(
    scene: Scene, rng: np.random.Generator | int | None = None, probs: CaptionProbs | None = None
) -> str:
    """A random caption for ``scene``; attributes are mentioned with the probabilities in ``probs``."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    p = probs or CaptionProbs()
    objs = scene.objects
    pat = scene.style != "sketch"  # sketches are outlines: the surface pattern is not visible
    if len(objs) == 1:
        np_ = _article(_noun_phrase(objs[0], rng, p, False, pat))
        if rng.random() < p.position:
            np_ += " " + _position(objs[0])
    elif scene.same_kind:
        if rng.random() < p.count:
            np_ = _choice(rng, _TWO["same"]).format(_noun_phrase(objs[0], rng, p, True, pat))
        else:
            np_ = _article(_noun_phrase(objs[0], rng, p, False, pat))
    else:
        a, b = (_article(_noun_phrase(o, rng, p, False, pat)) for o in objs)
        np_ = _choice(rng, _TWO["distinct"]).format(a, b)
    if scene.style != "night" and rng.random() < p.background:
        if scene.style == "sketch":
            np_ += " on white paper"
        else:
            np_ += f" on a {_choice(rng, _BG_WORDS[scene.background])} background"
    if scene.style == "photo":
        frames = _FRAMES["photo"]
    else:
        frames = _FRAMES[scene.style] if rng.random() < p.style else _FRAMES["neutral"]
    return _choice(rng, frames).format(np_)


_SHAPE_KNOWLEDGE = {
    "circle": "a round shape with no corners and no straight edges",
    "square": "a shape with four equal straight sides and four right-angled corners",
    "triangle": "a shape with three straight sides and three pointed corners",
    "star": "a shape with five sharp points spreading out from its centre",
    "hexagon": "a shape with six equal straight sides, like a honeycomb cell",
    "diamond": "a tall four-sided shape standing on one corner, pointed at the top and the bottom",
    "cross": "a plus-shaped figure made of two equal bars crossing at right angles",
    "heart": "a shape with two rounded lobes at the top that meet in a point at the bottom",
    "pentagon": "a shape with five equal straight sides and five corners, like a house front",
    "crescent": "a curved shape like a thin moon, a disc with a round bite taken out of one side",
}
_COLOUR_KNOWLEDGE = {
    "red": "red, the colour of a ripe tomato",
    "orange": "orange, the colour of the fruit of the same name",
    "yellow": "yellow, the colour of a lemon",
    "green": "green, the colour of fresh grass",
    "blue": "blue, the colour of a clear sky",
    "purple": "purple, a mix of red and blue like a plum",
    "pink": "pink, a light red like candy floss",
    "brown": "brown, the colour of wood or chocolate",
}
_PATTERN_KNOWLEDGE = {
    "solid": "filled with one flat colour and no markings",
    "striped": "covered in parallel stripes of a lighter and a darker shade",
    "dotted": "covered in a regular grid of small round dots",
    "checkered": "covered in a checkerboard of small alternating squares",
}


def knowledge(attrs: dict[str, str], name: str | None = None) -> str:
    """A short encyclopedic sentence about a class given its defining attributes (and its name,
    when the class is not named by its attributes)."""
    shape = attrs.get("shape")
    name = name or " ".join(attrs[k] for k in ("size", "pattern", "colour") if k in attrs) + " " + (shape or "shape")
    subject = _article(name)
    what = _SHAPE_KNOWLEDGE[shape] if shape else "any of the ten toy shapes"
    text = f"{subject[0].upper()}{subject[1:]} is {what}"
    if "colour" in attrs:
        text += f", filled in {_COLOUR_KNOWLEDGE[attrs['colour']]}."
    else:
        text += "."
    if "size" in attrs:
        text += f" It is {'smaller' if attrs['size'] == 'small' else 'larger'} than most shapes in the picture."
    if "pattern" in attrs:
        text += f" Its surface is {_PATTERN_KNOWLEDGE[attrs['pattern']]}, and it can have any colour."
    else:
        text += " Its surface may be plain, striped, dotted or checkered."
    return text
