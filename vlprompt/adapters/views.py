"""TPT's views of one test image: the original, random resized crops, and AugMix on fine-grained sets.

As in the official TPT (and RLCF, which reuses it):

* view 0, the one that is predicted: resize the short side to ``S`` (bicubic), centre crop
  ``S x S``;
* views 1 .. V-1: ``RandomResizedCrop(S)`` at torchvision's defaults (scale 0.08-1, bilinear) and
  a random horizontal flip, on the raw image;
* on fine-grained sets (every dataset outside the ImageNet family, :func:`uses_augmix`), AugMix on
  each crop: 3 chains of 1-3 ops, chain weights ~ Dirichlet(1, 1, 1), mixed with the plain crop
  by m ~ Beta(1, 1), at severity 1, over TPT's 9 ops (autocontrast, equalize, posterize, rotate,
  solarize, shear x/y, translate x/y; no colour, contrast, brightness or sharpness).

AugMix is timm's (:class:`timm.data.auto_augment.AugMixAugment` over :func:`augmix_ops`), set to
TPT's op list and ranges: magnitude 1 of 10 (rotation <= 3 degrees, shear <= 0.03, translation
<= 1/30 of the side, posterize 4 bits, solarize threshold >= 231), black fill, bilinear resampling.
Where timm differs: op levels are drawn from U(0, 1) x the maximum (TPT: U(0.1, 1)), rotation and
translation are not rounded to whole degrees / pixels, the ops' signs come from Python's ``random``,
and the chains are mixed in uint8 image space before normalisation (TPT mixes the normalised
tensors; the two differ by uint8 rounding only, since normalisation is affine).

Every random draw comes from ``generator`` when one is given: the global torch, numpy and Python
generators that torchvision and timm use are seeded from it for the call and restored afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from timm.data.auto_augment import AugMixAugment, augmix_ops
from torchvision import transforms as T

from ..backbones import PromptableCLIP
from ..backbones.pretrained import OPENAI_MEAN, OPENAI_STD
from ..datasets.protocol import IMAGENET_FAMILY  # TPT's crops-and-flips sets (its set ids I/A/V/R/K)
from ..datasets.transforms import check_crop_scale
from ..errors import ConfigError

__all__ = ["IMAGENET_FAMILY", "TPT_AUGMIX_OPS", "TPT_CROP_SCALE", "TPTViews", "uses_augmix"]

#: the area range of TPT's random crops (torchvision's RandomResizedCrop default)
TPT_CROP_SCALE = (0.08, 1.0)

#: TPT's AugMix ops, as timm names them (timm's own AugMix list adds colour/contrast/brightness/sharpness)
TPT_AUGMIX_OPS = (
    "AutoContrast", "Equalize", "PosterizeIncreasing", "Rotate", "SolarizeIncreasing",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)



def uses_augmix(dataset: str) -> bool:
    """TPT's rule: AugMix views on fine-grained sets, crops and flips only on the ImageNet family."""
    return dataset not in IMAGENET_FAMILY


@contextmanager
def _seeded(generator: torch.Generator | None) -> Iterator[None]:
    """Seed torch's, numpy's and Python's global generators from ``generator``, then restore them."""
    if generator is None:
        yield
        return
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class TPTViews:
    """Make the ``(V, 3, S, S)`` views of one PIL image (view 0 the original).

    Args:
        size: the side ``S`` (the backbone's input size).
        n_views: ``V``, the original included (64 in TPT and RLCF).
        augmix: AugMix on the random views (fine-grained sets, :func:`uses_augmix`).
        mean, std: normalisation of the backbone's weights.
        crop_scale: the area range of the random crops (TPT: torchvision's default ``(0.08, 1.0)``).
    """

    def __init__(
        self,
        size: int = 224,
        n_views: int = 64,
        augmix: bool = False,
        mean: Sequence[float] = OPENAI_MEAN,
        std: Sequence[float] = OPENAI_STD,
        crop_scale: tuple[float, float] = TPT_CROP_SCALE,
    ) -> None:
        if not isinstance(n_views, int) or n_views < 1:
            raise ConfigError(f"n_views must be an int >= 1, got {n_views!r}")
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"size must be an int >= 1, got {size!r}")
        low, high = check_crop_scale(crop_scale)
        self.size, self.n_views, self.augmix, self.crop_scale = size, n_views, bool(augmix), (low, high)
        self.original = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)])
        self.crop = T.Compose([T.RandomResizedCrop(size, scale=(low, high)), T.RandomHorizontalFlip()])
        hparams = dict(translate_pct=1 / 3, img_mean=(0, 0, 0), interpolation=Image.BILINEAR,
                       magnitude_std=float("inf"))
        ops = augmix_ops(magnitude=1, hparams=hparams, transforms=list(TPT_AUGMIX_OPS))
        self.mix = AugMixAugment(ops, alpha=1.0, width=3, depth=-1) if augmix else None
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    @classmethod
    def for_backbone(cls, backbone: PromptableCLIP, n_views: int = 64, augmix: bool = False,
                     crop_scale: tuple[float, float] = TPT_CROP_SCALE) -> TPTViews:
        """Views at the backbone's input size and normalisation."""
        pre = backbone.info.preprocess
        return cls(pre.image_size, n_views, augmix, pre.mean, pre.std, crop_scale=crop_scale)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """The views of ``image``; the random ones drawn from ``generator`` (global generators if ``None``)."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"TPTViews takes a PIL image, got {type(image).__name__}")
        image = image.convert("RGB")
        views = [self.to_tensor(self.original(image))]
        with _seeded(generator):
            for _ in range(self.n_views - 1):
                view = self.crop(image)
                if self.mix is not None:
                    view = self.mix(view)
                views.append(self.to_tensor(view))
        return torch.stack(views)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, n_views={self.n_views}, augmix={self.augmix}, "
                f"crop_scale={self.crop_scale})")


