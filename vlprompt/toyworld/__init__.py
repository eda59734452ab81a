"""The toy world: a small procedurally generated image-text world (see ``vlprompt.datasets.toyworld``).

Seeded, deterministic rendering of one or two attributed objects (10 shapes, 8 colours, 4 surface
patterns, 2 sizes, 3 backgrounds) in three styles (photo, sketch, night) plus corruptions; captions
with tunable attribute mention rates; CoOp-format datasets on disk; an in-memory pair stream for
pretraining the tiny CLIP. Depends only on numpy and Pillow.
"""

from .datasets import (
    DEFAULT_SEED,
    DEFAULT_STYLE_PROBS,
    GENERATOR_VERSION,
    RARE_COLOUR_WORDS,
    TOY_ALL,
    TOY_CAPTIONS,
    TOY_DATASETS,
    ToySpec,
    dataset_size,
    ensure_toy_dataset,
    generate_dataset,
    is_complete,
    sample_pairs,
    toy_classnames,
    toy_knowledge,
    toy_root,
    toy_spec,
)
from .render import CORRUPTIONS, corrupt, render
from .text import CaptionProbs, caption, knowledge
from .world import (
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    PATTERNS,
    SHAPES,
    SIZES,
    STYLES,
    Scene,
    ToyObject,
    sample_scene,
)

__all__ = [
    "BACKGROUNDS", "COLOURS", "COLOUR_RGB", "CORRUPTIONS", "DEFAULT_SEED", "DEFAULT_STYLE_PROBS",
    "GENERATOR_VERSION", "PATTERNS", "RARE_COLOUR_WORDS", "SHAPES", "SIZES", "STYLES", "TOY_ALL", "TOY_CAPTIONS",
    "TOY_DATASETS", "CaptionProbs", "Scene", "ToyObject", "ToySpec", "caption", "corrupt",
    "dataset_size", "ensure_toy_dataset", "generate_dataset", "is_complete", "knowledge", "render",
    "sample_pairs", "sample_scene", "toy_classnames", "toy_knowledge", "toy_root", "toy_spec",
]
