"""Captioned digits (notebook 14): 8x8 (or MNIST's 28x28) digits with captions generated from each image's label
and its measured thickness, width and slant, relative to its own digit ("a thick one" is thick for a one).

    data = captioned_digits()                 # data.train / data.val: images, labels, words, captions
    data.train.captions[0]                    # e.g. "a thin seven slanted to the left"
    data.vocabulary                           # every word a caption can use (for a WordTokenizer)

Held-out templates and held-out (digit, attribute) pairs let notebook 14 ask what CLIP understands zero-shot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..data import load_digits, load_mnist_5k
from ..tokenizers import WordTokenizer

__all__ = ["DIGIT_WORDS", "ATTRIBUTES", "CAPTION_TEMPLATES", "HELD_OUT_TEMPLATES", "HELD_OUT_COMBOS",
           "digit_attributes", "attribute_words", "make_caption", "make_captions", "CaptionedSplit",
           "CaptionedDigits", "captioned_digits"]

# Captions are not written by hand: each is made from the image's label and from three attributes measured on
# the image itself, so that a learner can check that every word is visible in the picture.

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ATTRIBUTES = {"width": ("narrow", "wide"), "thickness": ("thin", "thick"), "slant": ("left", "right")}

# "{a}" is the article ("an" before "eight"), "{adjs}" the width and thickness words (each followed by a
# space, or nothing), "{slant}" " slanted to the left/right" (or nothing).
CAPTION_TEMPLATES = (
    "{a} {adjs}{digit}{slant}",
    "a photo of {a} {adjs}{digit}{slant}",
    "the {adjs}digit {digit}{slant}",
    "{a} handwritten {adjs}{digit}{slant}",
)
# Never used for training captions; made of the training templates' words in new orders (zero-shot prompts).
HELD_OUT_TEMPLATES = (
    "a photo of the {adjs}digit {digit}{slant}",
    "the handwritten {adjs}digit {digit}{slant}",
)
# (digit, attribute) pairs never named together in a training caption: a training image of a slanted one
# is captioned without its slant. Notebook 14 asks whether "a one slanted to the right" is understood anyway.
HELD_OUT_COMBOS = ((1, "slant"), (4, "thickness"))


def digit_attributes(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Measurements of grey-level digits ``images`` (N, H, W) or (N, 1, H, W), ink in [0, 1]:

    * ``thickness``: the ink mass, the mean intensity (more and wider strokes: more ink);
    * ``slant``: the angle (degrees) of the ink's principal shear from image moments, atan(-mu11 / mu02),
      positive when the top of the digit leans to the right (rows run downwards);
    * ``width``: the ink's horizontal extent from moments, 4 sqrt(mu20 / mu00) pixels (the digit sets are
      scaled to a fixed height, so the width is what varies with a digit's size);
    * ``bbox_width`` and ``bbox_height``: the bounding box of the pixels above 0.3, for comparison.
    """
    x = images[:, 0] if images.dim() == 4 else images
    if x.dim() != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
    x = x.float()
    _, H, W = x.shape
    rows = torch.arange(H, dtype=torch.float32)[None, :, None]
    cols = torch.arange(W, dtype=torch.float32)[None, None, :]
    mass = x.sum((1, 2)).clamp_min(1e-8)
    dy = rows - ((x * rows).sum((1, 2)) / mass)[:, None, None]
    dx = cols - ((x * cols).sum((1, 2)) / mass)[:, None, None]
    mu11, mu02, mu20 = (x * dx * dy).sum((1, 2)), (x * dy * dy).sum((1, 2)), (x * dx * dx).sum((1, 2))
    on = x > 0.3
    return {"thickness": mass / (H * W),
            "slant": torch.rad2deg(torch.atan(-mu11 / mu02.clamp_min(1e-8))),
            "width": 4 * (mu20 / mass).sqrt(),
            "bbox_width": on.any(1).sum(1).float(), "bbox_height": on.any(2).sum(1).float()}


def attribute_words(attributes: dict[str, torch.Tensor], labels: torch.Tensor,
                    thresholds: dict[str, torch.Tensor]) -> list[dict[str, str | None]]:
    """One dict per image, {"width": "narrow"/"wide"/None, "thickness": "thin"/"thick"/None, "slant":
    "left"/"right"/None}: the low word below the image's class's lower threshold, the high word above its upper
    one, None between. ``thresholds[name]`` is (10, 2): per digit, as ``captioned_digits`` measures them."""
    out = [{} for _ in range(len(labels))]
    for name, (low, high) in ATTRIBUTES.items():
        th = thresholds[name][labels]
        value = attributes[name]
        for i, (v, lo, hi) in enumerate(zip(value.tolist(), th[:, 0].tolist(), th[:, 1].tolist())):
            out[i][name] = low if v < lo else high if v > hi else None
    return out


def make_caption(digit: int, words: dict[str, str | None], template: str) -> str:
    """The caption of one image: ``template`` filled with the digit's word and its attribute words (a word
    that is None is left out): ``make_caption(7, {"thickness": "thick", "slant": "right"}, "{a} {adjs}{digit}{slant}")``
    is "a thick seven slanted to the right"."""
    if not 0 <= int(digit) <= 9:
        raise ValueError(f"digit must be 0..9, got {digit}")
    adjs = [words.get(k) for k in ("width", "thickness")]
    adjs = "".join(f"{w} " for w in adjs if w)
    slant = words.get("slant")
    text = template.format(a="\0", adjs=adjs, digit=DIGIT_WORDS[int(digit)],
                           slant=f" slanted to the {slant}" if slant else "")
    # the article goes by the sound of the word after it: "an eight", "a handwritten eight", "a one"
    return re.sub("\0 ([a-z]+)", lambda m: ("an " if m.group(1)[0] in "aeio" and m.group(1) != "one" else "a ")
                  + m.group(1), text)


def make_captions(labels: torch.Tensor, words: list[dict[str, str | None]], templates=CAPTION_TEMPLATES,
                  generator: torch.Generator | None = None, held_out_combos=HELD_OUT_COMBOS) -> tuple[list[str], torch.Tensor]:
    """A caption per image, each from a template drawn with ``generator``, leaving out the attribute of any
    (digit, attribute) pair in ``held_out_combos``; returns the captions and the template indices."""
    which = torch.randint(len(templates), (len(labels),), generator=generator)
    hidden = {}
    for digit, name in held_out_combos:
        hidden.setdefault(int(digit), set()).add(name)
    captions = []
    for y, w, k in zip(labels.tolist(), words, which.tolist()):
        shown = {name: (None if name in hidden.get(y, ()) else word) for name, word in w.items()}
        captions.append(make_caption(y, shown, templates[k]))
    return captions, which


@dataclass(frozen=True)
class CaptionedSplit:
    images: torch.Tensor  # (N, 1, H, W), ink in [0, 1]
    labels: torch.Tensor  # (N,) 0..9
    attributes: dict  # name -> (N,) measurements (digit_attributes)
    words: list  # per image: {"width": ..., "thickness": ..., "slant": ...} (None: unremarkable)
    captions: list  # per image: one caption
    template_ids: torch.Tensor  # (N,) the template of each caption, in its split's template list

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class CaptionedDigits:
    train: CaptionedSplit  # captions from CAPTION_TEMPLATES, without HELD_OUT_COMBOS
    val: CaptionedSplit  # held-out images, captions from HELD_OUT_TEMPLATES naming every attribute
    thresholds: dict  # name -> (10, 2): per digit, the training images' lower and upper quantile
    source: str
    quantile: float

    @property
    def vocabulary(self) -> list[str]:
        """Every word any template can produce (for a ``labkit.tokenizers.WordTokenizer``)."""
        texts = [t for t in CAPTION_TEMPLATES + HELD_OUT_TEMPLATES]
        texts = [make_caption(d, dict(zip(ATTRIBUTES, w)), t) for t in texts for d in range(10)
                 for w in [(None, None, None), ("narrow", "thin", "left"), ("wide", "thick", "right")]]
        return sorted({w for t in texts for w in WordTokenizer.split(t)})


def captioned_digits(source: str = "digits", n_val: int = 300, seed: int = 0, quantile: float = 0.25) -> CaptionedDigits:
    """Digits with generated captions, built deterministically from ``seed``.

    ``source``: "digits" (scikit-learn's 1,797 8x8 digits) or "mnist" (MNIST-5k, 28x28). ``n_val`` images,
    drawn by a seeded permutation, are held out. Each attribute of ``digit_attributes`` becomes a word
    relative to the image's own digit: "thin" below the ``quantile`` of the training images of that digit,
    "thick" above the 1 - ``quantile`` one, nothing between (likewise narrow/wide and slanted to the
    left/right), so that "a thick one" means thick *for a one*. Training captions use ``CAPTION_TEMPLATES``
    and never name a pair of ``HELD_OUT_COMBOS``; held-out images are captioned with ``HELD_OUT_TEMPLATES``
    and every attribute.
    """
    loaders = {"digits": load_digits, "mnist": load_mnist_5k}
    if source not in loaders:
        raise ValueError(f"source must be one of {sorted(loaders)}, got {source!r}")
    if not 0 < quantile < 0.5:
        raise ValueError(f"quantile must be in (0, 0.5), got {quantile}")
    images, labels = loaders[source]()
    if not 0 < n_val < len(images):
        raise ValueError(f"n_val must be between 1 and {len(images) - 1}, got {n_val}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    images, labels = images[order, None], labels[order]
    attrs = digit_attributes(images)
    tr, va = slice(n_val, None), slice(None, n_val)
    thresholds = {}
    for name in ATTRIBUTES:
        v, y = attrs[name][tr], labels[tr]
        thresholds[name] = torch.stack([torch.quantile(v[y == d], torch.tensor([quantile, 1 - quantile]))
                                        for d in range(10)])
    g = torch.Generator().manual_seed(seed + 1)
    splits = []
    for part, templates, combos in [(tr, CAPTION_TEMPLATES, HELD_OUT_COMBOS), (va, HELD_OUT_TEMPLATES, ())]:
        a = {k: v[part] for k, v in attrs.items()}
        words = attribute_words(a, labels[part], thresholds)
        captions, which = make_captions(labels[part], words, templates, g, combos)
        splits.append(CaptionedSplit(images[part], labels[part], a, words, captions, which))
    return CaptionedDigits(splits[0], splits[1], thresholds, source, quantile)
