"""A small CLIP (Radford et al., 2021) for captioned digits (notebook 14), built from the lab's parts.

Two encoders map an image and a caption into the same ``projection_dim``-dimensional space, where a matching
pair should point the same way:

* the image encoder is a small CNN (``image_encoder="cnn"``) or a Vision Transformer: the image cut into
  ``patch_size`` x ``patch_size`` patches, each a token, a learned ``[CLS]`` token in front, through
  ``labkit.layers.Encoder`` (``image_encoder="vit"``);
* the text encoder is ``labkit.layers.Encoder`` over word embeddings plus learned positions, read out at the
  ``<eos>`` token as CLIP does (``TextEncoder.forward`` also returns every token's features: notebook 14's
  text-to-image UNet attends to them);
* a linear projection (no bias) of each into the joint space, then L2 normalisation; the similarity of image
  i and caption j is the cosine times a learned scale exp(``logit_scale``) = 1 / temperature (initialised to
  1 / 0.07 and capped at 100, as in CLIP).

The loss is the symmetric InfoNCE: cross-entropy of each image against all captions of the batch (its own is
the right answer) and of each caption against all images, averaged (``info_nce``)::

    model = CLIP(CLIPConfig(vocab_size=tok.vocab_size))
    ids, real = tok.encode_batch(captions)   # real: True at tokens, False at padding
    out = model(images, ids, real)        # CLIPOutput(logits_per_image (B, B), logits_per_text (B, B), loss)

Tested against Hugging Face ``transformers``' ``CLIPModel``: on the same encoder features and copied
projection weights and scale it gives the same logits and loss (``tests/test_clip.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import capture_attention
from ..layers import Encoder

__all__ = ["CLIPConfig", "CLIP", "CLIPOutput", "TextEncoder", "CNNImageEncoder", "ViTImageEncoder", "info_nce"]


@dataclass
class CLIPConfig:
    vocab_size: int = 32  # the caption tokenizer's (labkit.tokenizers.WordTokenizer)
    context_length: int = 16  # longest caption, <bos> and <eos> included
    pad_id: int = 0  # WordTokenizer's ids of <pad> and <eos>
    eos_id: int = 2
    # the image encoder
    image_size: int = 8
    in_channels: int = 1
    image_encoder: str = "cnn"  # "cnn" or "vit"
    image_width: int = 64  # CNN: channels after the first convolution (doubled after it); ViT: d_model
    patch_size: int = 2  # ViT: 8x8 digits in 2x2 patches give 16 tokens
    vit_layers: int = 2
    # the text encoder
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.0
    # the joint space
    projection_dim: int = 64
    init_temperature: float = 0.07


class _CLIPFields(NamedTuple):
    logits_per_image: torch.Tensor  # (B_images, B_texts): scaled cosine similarities
    logits_per_text: torch.Tensor  # its transpose
    loss: torch.Tensor | None  # symmetric InfoNCE (square batches of matching pairs only)


class CLIPOutput(_CLIPFields):
    """What ``CLIP.forward`` returns; with ``return_attention=True`` the ``attentions`` attribute holds
    ``{"text": [...], "image": [...]}``, one (B, n_heads, T, T) tensor per layer (the image list is empty for the
    CNN encoder), as every labkit model gives them."""

    attentions: dict | None = None


def info_nce(logits_per_image: torch.Tensor) -> torch.Tensor:
    """The symmetric InfoNCE loss of a batch of N matching pairs, the i-th image with the i-th text:
    (CE(rows, arange N) + CE(columns, arange N)) / 2 of the (N, N) scaled similarities, i.e. each image must
    pick out its caption among the N, and each caption its image."""
    if logits_per_image.dim() != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise ValueError(f"InfoNCE needs the (N, N) similarities of N matching pairs, got {tuple(logits_per_image.shape)}")
    target = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, target) + F.cross_entropy(logits_per_image.t(), target)) / 2


class TextEncoder(nn.Module):
    """Word embeddings plus learned positions through a pre-norm ``labkit.layers.Encoder`` (bidirectional:
    a caption is read whole). Returns every token's features (B, T, d_model) and the ``<eos>`` token's."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        self.pad_id, self.eos_id, self.context_length = c.pad_id, c.eos_id, c.context_length
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = nn.Embedding(c.context_length, c.d_model)
        self.encoder = Encoder(c.n_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, activation="gelu", norm_first=True)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.01)

    def forward(self, ids: torch.Tensor, key_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.dim() != 2:
            raise ValueError(f"ids must be (B, T) token ids, got {tuple(ids.shape)}: use tokenizer.encode_batch")
        B, T = ids.shape
        if T > self.context_length:
            raise ValueError(f"captions of {T} tokens are longer than context_length={self.context_length}")
        is_eos = ids == self.eos_id
        if not bool(is_eos.any(1).all()):
            raise ValueError("every caption needs an <eos> token: encode captions with the WordTokenizer")
        key_mask = ids != self.pad_id if key_mask is None else key_mask  # True at real tokens
        h = self.encoder(self.tok_emb(ids) + self.pos_emb(torch.arange(T, device=ids.device)), key_mask=key_mask)
        eos = is_eos.int().argmax(1)  # the first <eos> of each caption
        return h, h[torch.arange(B, device=ids.device), eos]


class CNNImageEncoder(nn.Module):
    """Three 3x3 convolutions (width, 2 width, 2 width channels, GELU), a 2x2 max-pool after the first (and
    after the second for 28x28), then flattened into a linear layer: (B, C, H, W) -> (B, 2 width)."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        w = c.image_width
        pools = 2 if c.image_size > 16 else 1
        layers = [nn.Conv2d(c.in_channels, w, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
                  nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU()]
        if pools == 2:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GELU()]
        self.conv = nn.Sequential(*layers)
        side = c.image_size // 2 ** pools
        self.fc = nn.Linear(2 * w * side * side, 2 * w)
        self.out_dim = 2 * w

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(images).flatten(1))


class ViTImageEncoder(nn.Module):
    """A Vision Transformer (Dosovitskiy et al., 2021): non-overlapping patches, each linearly embedded (a
    strided convolution), a learned ``[CLS]`` token and learned positions, a pre-norm ``labkit.layers.Encoder``;
    the output is the ``[CLS]`` token's features: (B, C, H, W) -> (B, image_width)."""

    def __init__(self, c: CLIPConfig):
        super().__init__()
        if c.image_size % c.patch_size:
            raise ValueError(f"image_size {c.image_size} is not a multiple of patch_size {c.patch_size}")
        if c.image_width % c.n_heads:
            raise ValueError(f"image_width {c.image_width} must be divisible by n_heads {c.n_heads}")
        d = c.image_width
        n_patches = (c.image_size // c.patch_size) ** 2
        self.patch = nn.Conv2d(c.in_channels, d, c.patch_size, stride=c.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, n_patches + 1, d) * 0.02)
        self.encoder = Encoder(c.vit_layers, d, c.n_heads, 2 * d, c.dropout, activation="gelu", norm_first=True)
        self.out_dim = d

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images).flatten(2).transpose(1, 2)  # (B, n_patches, d): one token per patch
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        return self.encoder(x)[:, 0]


class CLIP(nn.Module):
    def __init__(self, config: CLIPConfig | None = None, **overrides):
        super().__init__()
        if config is not None and overrides:
            raise TypeError("pass a CLIPConfig or keyword arguments for one, not both")
        self.config = c = config or CLIPConfig(**overrides)
        encoders = {"cnn": CNNImageEncoder, "vit": ViTImageEncoder}
        if c.image_encoder not in encoders:
            raise ValueError(f"image_encoder must be 'cnn' or 'vit', got {c.image_encoder!r}")
        self.image_encoder = encoders[c.image_encoder](c)
        self.text_encoder = TextEncoder(c)
        self.image_proj = nn.Linear(self.image_encoder.out_dim, c.projection_dim, bias=False)
        self.text_proj = nn.Linear(c.d_model, c.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / c.init_temperature)))

    def _check_images(self, images: torch.Tensor) -> None:
        c = self.config
        want = (c.in_channels, c.image_size, c.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"images must be (B, {', '.join(map(str, want))}), got {tuple(images.shape)}")

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit vectors (B, projection_dim) in the joint space."""
        self._check_images(images)
        return F.normalize(self.image_proj(self.image_encoder(images)), dim=-1)

    def encode_text(self, ids: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit vectors (B, projection_dim) in the joint space."""
        return F.normalize(self.text_proj(self.text_encoder(ids, key_mask)[1]), dim=-1)

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities (B_images, B_texts) of unit vectors; the scale is capped at 100."""
        return self.logit_scale.clamp(max=math.log(100)).exp() * image_emb @ text_emb.t()

    def forward(self, images: torch.Tensor, ids: torch.Tensor, key_mask: torch.Tensor | None = None,
                return_attention: bool = False) -> CLIPOutput:
        """Images (B, 1, H, W) and caption ids (B_t, T) with their token mask (True at real tokens) -> the
        ``CLIPOutput``; ``return_attention``: each encoder's attention weights (``capture_attention`` underneath)."""
        if return_attention:
            with capture_attention(self) as attn:
                out = self.forward(images, ids, key_mask)
            out.attentions = {"text": attn.layers("text_encoder.*"), "image": attn.layers("image_encoder.*")}
            return out
        logits = self.similarity(self.encode_image(images), self.encode_text(ids, key_mask))
        loss = info_nce(logits) if logits.shape[0] == logits.shape[1] else None
        return CLIPOutput(logits, logits.t(), loss)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
