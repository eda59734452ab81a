"""Text templates of the published zero-shot and prompt-learning baselines, as data.

* :data:`COOP_TEMPLATES`: the one hand-crafted template per dataset of CoOp's zero-shot CLIP
  baseline (``trainers/zsclip.py``, ``CUSTOM_TEMPLATES``), also used by CoCoOp, MaPLe and PromptSRC.
* :data:`KGCOOP_TEMPLATES`: KgCoOp's copy of that table, which differs for DTD
  ("a photo of a {}, a type of texture." instead of "{} texture."); KgCoOp encodes these with the
  frozen CLIP as the targets of its knowledge-guided loss.
* :data:`IMAGENET_TEMPLATES_SELECT`: CLIP's 7 selected ImageNet templates (CoOp's ``ZeroshotCLIP2``).
* :data:`IMAGENET_TEMPLATES`: PromptSRC's 60-template ensemble (textual diversity targets).
* :data:`CLIP_IMAGENET_TEMPLATES`: the full 80 templates of CLIP's ImageNet notebook.

Keys are vlprompt registry names (see :func:`vlprompt.datasets.list_datasets`). Every learner and
zero-shot path writes a class name into a template as
:func:`vlprompt.learners.common.prompt_class_name` does (underscores become spaces:
``american_bulldog`` -> ``a photo of a american bulldog, a type of pet.``), as every official
trainer does; the datasets keep the names as their split files spell them.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    'CLIP_IMAGENET_TEMPLATES', 'DEFAULT_TEMPLATE', 'IMAGENET_TEMPLATES', 'KGCOOP_DIFFERENCES',
    'IMAGENET_TEMPLATES_SELECT', 'get_template',  # and COOP_TEMPLATES, KGCOOP_TEMPLATES (module __getattr__)
]

DEFAULT_TEMPLATE = 'a photo of a {}.'

# KgCoOp's copy of CoOp's table differs for DTD only (a fact of KgCoOp, not of the dataset).
KGCOOP_DIFFERENCES: dict[str, str] = {'dtd': 'a photo of a {}, a type of texture.'}


def _published_templates() -> dict[str, str]:
    """CoOp's table, read from the readers' ``template`` (the benchmarks of the published tables)."""
    from .builder import get_dataset_class
    from .protocol import BASE2NOVEL_DATASETS, DG_TARGETS

    return {name: get_dataset_class(name).template for name in BASE2NOVEL_DATASETS + DG_TARGETS}


def __getattr__(name: str) -> dict[str, str]:
    # COOP_TEMPLATES and KGCOOP_TEMPLATES are views of the readers' metadata, built on first use
    if name == 'COOP_TEMPLATES':
        return _published_templates()
    if name == 'KGCOOP_TEMPLATES':
        return {**_published_templates(), **KGCOOP_DIFFERENCES}
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


# The 80 ImageNet templates of CLIP's prompt-engineering notebook (CoOp's `IMAGENET_TEMPLATES`).
CLIP_IMAGENET_TEMPLATES: tuple[str, ...] = (
    'a bad photo of a {}.',
    'a photo of many {}.',
    'a sculpture of a {}.',
    'a photo of the hard to see {}.',
    'a low resolution photo of the {}.',
    'a rendering of a {}.',
    'graffiti of a {}.',
    'a bad photo of the {}.',
    'a cropped photo of the {}.',
    'a tattoo of a {}.',
    'the embroidered {}.',
    'a photo of a hard to see {}.',
    'a bright photo of a {}.',
    'a photo of a clean {}.',
    'a photo of a dirty {}.',
    'a dark photo of the {}.',
    'a drawing of a {}.',
    'a photo of my {}.',
    'the plastic {}.',
    'a photo of the cool {}.',
    'a close-up photo of a {}.',
    'a black and white photo of the {}.',
    'a painting of the {}.',
    'a painting of a {}.',
    'a pixelated photo of the {}.',
    'a sculpture of the {}.',
    'a bright photo of the {}.',
    'a cropped photo of a {}.',
    'a plastic {}.',
    'a photo of the dirty {}.',
    'a jpeg corrupted photo of a {}.',
    'a blurry photo of the {}.',
    'a photo of the {}.',
    'a good photo of the {}.',
    'a rendering of the {}.',
    'a {} in a video game.',
    'a photo of one {}.',
    'a doodle of a {}.',
    'a close-up photo of the {}.',
    'a photo of a {}.',
    'the origami {}.',
    'the {} in a video game.',
    'a sketch of a {}.',
    'a doodle of the {}.',
    'a origami {}.',
    'a low resolution photo of a {}.',
    'the toy {}.',
    'a rendition of the {}.',
    'a photo of the clean {}.',
    'a photo of a large {}.',
    'a rendition of a {}.',
    'a photo of a nice {}.',
    'a photo of a weird {}.',
    'a blurry photo of a {}.',
    'a cartoon {}.',
    'art of a {}.',
    'a sketch of the {}.',
    'a embroidered {}.',
    'a pixelated photo of a {}.',
    'itap of the {}.',
    'a jpeg corrupted photo of the {}.',
    'a good photo of a {}.',
    'a plushie {}.',
    'a photo of the nice {}.',
    'a photo of the small {}.',
    'a photo of the weird {}.',
    'the cartoon {}.',
    'art of the {}.',
    'a drawing of the {}.',
    'a photo of the large {}.',
    'a black and white photo of a {}.',
    'the plushie {}.',
    'a dark photo of a {}.',
    'itap of a {}.',
    'graffiti of the {}.',
    'a toy {}.',
    'itap of my {}.',
    'a photo of a cool {}.',
    'a photo of a small {}.',
    'a tattoo of the {}.',
)

# PromptSRC's `IMAGENET_TEMPLATES`: 60 entries, "a photo of a {}." moved to the front of the CLIP list,
# then the list in order up to "itap of the {}.". Averaged to build PromptSRC's frozen text targets.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    'a photo of a {}.',
    *[t for t in CLIP_IMAGENET_TEMPLATES if t != 'a photo of a {}.'][:59],
)

# The 7 templates CLIP selected for ImageNet (`ZeroshotCLIP2` in CoOp ensembles them).
IMAGENET_TEMPLATES_SELECT: tuple[str, ...] = (
    'itap of a {}.',
    'a bad photo of the {}.',
    'a origami {}.',
    'a photo of the large {}.',
    'a {} in a video game.',
    'art of the {}.',
    'a photo of the small {}.',
)


def get_template(dataset: str, style: str = 'coop') -> str:
    """The hand-crafted template of ``dataset`` (``style`` ``'coop'`` or ``'kgcoop'``): the reader's
    ``template``, which is ``'a photo of a {}.'`` for datasets outside the published tables (CODaN,
    the toy world, your own folders) and for names no reader has.
    """
    if style not in ('coop', 'kgcoop'):
        raise ValueError(f"style must be 'coop' or 'kgcoop', got {style!r}")
    if style == 'kgcoop' and dataset in KGCOOP_DIFFERENCES:
        return KGCOOP_DIFFERENCES[dataset]
    from .builder import canonical_name, get_dataset_class

    try:
        return get_dataset_class(canonical_name(dataset)).template
    except KeyError:
        return DEFAULT_TEMPLATE

# Template sets a config names by a string (configs are read lazily: they cannot hold these tuples).
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    'imagenet-select': IMAGENET_TEMPLATES_SELECT,
    'clip-imagenet': CLIP_IMAGENET_TEMPLATES,
}


def resolve_templates(templates: str | Sequence[str]) -> list[str]:
    """A list of templates from one template (``"a photo of a {}."``), a list of them, or the name of a set
    (:data:`TEMPLATE_SETS`); a string that is neither is a ``ValueError`` naming the sets."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return list(TEMPLATE_SETS[templates])
        if '{}' not in templates:
            raise ValueError(f"templates={templates!r} has no '{{}}' for the class name and names no template set "
                             f"({', '.join(TEMPLATE_SETS)})")
        return [templates]
    return list(templates)
