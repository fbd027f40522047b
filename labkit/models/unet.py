"""A small UNet noise predictor for diffusion (notebook 13; notebook 14 conditions it on text).

The network of Ho et al. (2020), shrunk for 8x8 to 28x28 images on a CPU: residual blocks at each
resolution, downsampling then upsampling with skip connections between the two halves, and the timestep
(a sinusoidal embedding, as for positions in notebook 02) added inside every residual block. It predicts the
noise eps in x_t and **knows nothing of noise schedules**: those are ``labkit.diffusion``'s schedulers.

With ``num_classes`` it is class-conditional: a label embedding is added to the time embedding, and the
extra label ``null_class`` (= ``num_classes``) means "no label". Training drops labels to ``null_class`` at
random so that one network learns both the conditional and the unconditional prediction, which
classifier-free guidance combines (``labkit.diffusion.guided_noise``).

    model = UNet(UNetConfig(in_channels=1, base_channels=32, channel_mults=(1, 2), num_classes=10))
    eps = model(x_t, t, labels)            # (B, C, H, W): the predicted noise, same shape as x_t

With ``context_dim`` it is text-conditional (notebook 14): after every residual block, a cross-attention
layer lets each pixel's features (the queries) attend to the caption's token features (keys and values,
``context`` (B, T, context_dim)), through ``labkit.attention.MultiHeadAttention``: the fusion of the two
modalities. ``TextConditionedUNet`` puts a text encoder in front and makes the empty caption the null
condition of classifier-free guidance.

Unlike the lab's language models (which return named tuples with a loss), ``forward`` returns the prediction
itself, as the DDPM paper's eps_theta(x_t, t) does; the loss is the training loop's (MSE to the true noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import MultiHeadAttention

__all__ = ["UNetConfig", "UNet", "CrossAttention", "TextConditionedUNet", "timestep_embedding"]


@dataclass
class UNetConfig:
    in_channels: int = 1
    base_channels: int = 32  # channels at the full resolution
    channel_mults: tuple[int, ...] = (1, 2)  # one resolution each; every one after the first halves H and W
    num_res_blocks: int = 1  # residual blocks per resolution (down path; the up path has one more)
    time_dim: int = 128  # width of the time (and label) embedding
    num_classes: int | None = None  # class-conditional with this many classes (+ a null class), or not
    dropout: float = 0.0
    groups: int = 8  # GroupNorm groups
    context_dim: int | None = None  # text-conditional: cross-attention to (B, T, context_dim) token features
    n_heads: int = 4  # heads of the cross-attention layers


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of the timesteps t (B,) -> (B, dim): [cos(t w_i), sin(t w_i)] with
    w_i = max_period^(-i / (dim/2)), the Transformer's positional encoding applied to the noise level."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> 3x3 conv, plus the (time + label) embedding as a per-channel shift, then
    GroupNorm -> SiLU -> dropout -> 3x3 conv, added to the input (through a 1x1 conv if the width changes)."""
    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(groups, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(groups, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class CrossAttention(nn.Module):
    """Image features attend to text features: GroupNorm, the (B, C, H, W) map flattened into H*W query tokens,
    the context (B, T, context_dim) projected to C channels for keys and values, multi-head attention (padding
    tokens masked out), added back to the map. The output projection starts at zero, so an untrained layer
    passes the image features through unchanged."""
    def __init__(self, channels: int, context_dim: int, n_heads: int, groups: int):
        super().__init__()

        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.context_proj = nn.Linear(context_dim, channels)
        self.attn = MultiHeadAttention(channels, n_heads)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, h: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, C, H, W = h.shape
        q = self.norm(h).flatten(2).transpose(1, 2)  # (B, H*W, C): one query per pixel
        kv = self.context_proj(context)  # (B, T, C): one key and value per caption token
        out, _ = self.attn(q, kv, kv, key_mask=context_mask)
        return h + out.transpose(1, 2).reshape(B, C, H, W)


class UNet(nn.Module):
    def __init__(self, config: UNetConfig | None = None, **overrides):
        super().__init__()
        if config is not None and overrides:
            raise TypeError("pass a UNetConfig or keyword arguments for one, not both")
        config = config or UNetConfig(**overrides)
        self.config = c = config
        if c.num_classes is not None and c.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 (or None), got {c.num_classes}")
        self.null_class = c.num_classes  # the label meaning "no label" (None: an unconditional model)
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, c.time_dim), nn.SiLU(), nn.Linear(c.time_dim, c.time_dim))
        self.label_emb = nn.Embedding(c.num_classes + 1, c.time_dim) if c.num_classes is not None else None
        widths = [c.base_channels * m for m in c.channel_mults]
        self.stem = nn.Conv2d(c.in_channels, widths[0], 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, w_in = [widths[0]], widths[0]
        for i, w in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks):
                blocks.append(ResBlock(w_in, w, c.time_dim, c.groups, c.dropout))
                w_in = w
                skips.append(w)
            self.down.append(blocks)
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(w, w, 3, stride=2, padding=1))
            if not last:
                skips.append(w)
        self.mid = nn.ModuleList([ResBlock(w_in, w_in, c.time_dim, c.groups, c.dropout),
                                  ResBlock(w_in, w_in, c.time_dim, c.groups, c.dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            blocks = nn.ModuleList()
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResBlock(w_in + skips.pop(), w, c.time_dim, c.groups, c.dropout))
                w_in = w
            self.up.append(blocks)
            self.upsample.append(nn.Identity() if i == 0 else nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                                         nn.Conv2d(w, w, 3, padding=1)))
        if c.context_dim is not None:  # one cross-attention layer after each residual block
            def attn(block):
                return CrossAttention(block.conv2.out_channels, c.context_dim, c.n_heads, c.groups)
            self.down_attn = nn.ModuleList(nn.ModuleList(attn(b) for b in blocks) for blocks in self.down)
            self.mid_attn = nn.ModuleList(attn(b) for b in self.mid)
            self.up_attn = nn.ModuleList(nn.ModuleList(attn(b) for b in blocks) for blocks in self.up)
        self.out_norm = nn.GroupNorm(min(c.groups, w_in), w_in)
        self.out = nn.Conv2d(w_in, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts by predicting zero noise: a calm start, as in the DDPM code
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted noise in ``x`` (B, C, H, W) at timesteps ``t`` (B,), for ``labels`` (B,) (None, or
        ``null_class`` entries: unconditional) and, for a text-conditional UNet, the caption's token features
        ``context`` (B, T, context_dim) with ``context_mask`` (B, T) True at real tokens, False at padding."""
        c = self.config
        if c.context_dim is None and context is not None:
            raise ValueError("this UNet has no cross-attention (context_dim=None): it takes no context")
        if c.context_dim is not None:
            if context is None:
                raise ValueError("this UNet is text-conditional: give context (B, T, context_dim), e.g. through "
                                 "TextConditionedUNet, which encodes captions (and the null caption)")
            if context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[2] != c.context_dim:
                raise ValueError(f"context must be ({x.shape[0]}, T, {c.context_dim}), got {tuple(context.shape)}")
        if x.dim() != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"x must be (B, {c.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2 ** (len(c.channel_mults) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"H and W must be multiples of {factor} for {len(c.channel_mults)} resolutions, got "
                             f"{tuple(x.shape[2:])}: pad the images")
        t = torch.as_tensor(t, device=x.device).long().reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        elif t.numel() != x.shape[0]:
            raise ValueError(f"give one timestep or one per image ({x.shape[0]}), got {t.numel()}")
        emb = self.time_mlp(timestep_embedding(t, c.time_dim))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.null_class, dtype=torch.long, device=x.device)
            if labels.min() < 0 or labels.max() > self.null_class:
                raise ValueError(f"labels must be 0..{self.null_class - 1} (or {self.null_class}: no label)")
            emb = emb + self.label_emb(labels)
        elif labels is not None:
            raise ValueError("this UNet is unconditional (num_classes=None): it takes no labels")
        text = c.context_dim is not None

        def fuse(h, attn):  # cross-attention to the caption, if this UNet reads one
            return attn(h, context, context_mask) if text else h

        h = self.stem(x)
        hs = [h]
        for i, (blocks, down) in enumerate(zip(self.down, self.downsample)):
            for j, block in enumerate(blocks):
                h = fuse(block(h, emb), self.down_attn[i][j] if text else None)
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        for j, block in enumerate(self.mid):
            h = fuse(block(h, emb), self.mid_attn[j] if text else None)
        for i, (blocks, up) in enumerate(zip(self.up, self.upsample)):
            for j, block in enumerate(blocks):
                h = fuse(block(torch.cat([h, hs.pop()], dim=1), emb), self.up_attn[i][j] if text else None)
            h = up(h)
        return self.out(F.silu(self.out_norm(h)))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class TextConditionedUNet(nn.Module):
    """A text encoder in front of a text-conditional ``UNet``: ``model(x_t, t, ids)`` encodes the captions'
    token ids (B, T) (``labkit.tokenizers.WordTokenizer.encode_batch``) and lets the UNet attend to every
    token's features. ``ids=None`` means the *null caption*, the empty text ``[<bos>, <eos>]``: training
    replaces a share of captions with it, so that one network learns the unconditional prediction as well,
    and ``labkit.diffusion.guided_noise`` asks for it through ``null_labels``.

    ``text_encoder(ids, key_mask)`` must return (token features (B, T, d), pooled (B, d)), as
    ``labkit.models.clip.TextEncoder`` does; with ``freeze_text`` (the default, as Stable Diffusion keeps its
    CLIP text encoder) it is not trained and stays in eval mode."""
    def __init__(self, unet: UNet, text_encoder: nn.Module, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
                 freeze_text: bool = True):
        super().__init__()
        if unet.config.context_dim is None:
            raise ValueError("the UNet needs cross-attention: build it with UNetConfig(context_dim=...)")
        self.unet, self.text_encoder = unet, text_encoder
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.freeze_text = freeze_text
        if freeze_text:
            text_encoder.requires_grad_(False)
            text_encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_text:
            self.text_encoder.eval()
        return self

    def null_labels(self, ids: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        """The null caption's ids, ``[<bos>, <eos>, <pad>, ...]``, shaped like ``ids`` (or (batch_size, 2))."""
        B, T = ids.shape if ids is not None else (batch_size, 2)
        null = torch.full((B, T), self.pad_id, dtype=torch.long, device=None if ids is None else ids.device)
        null[:, 0], null[:, 1] = self.bos_id, self.eos_id
        return null

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted noise for ``x`` (B, C, H, W) at ``t``, given captions ``labels`` (B, T) token ids."""
        ids = self.null_labels(batch_size=x.shape[0]).to(x.device) if labels is None else labels
        if ids.dim() != 2 or ids.shape[0] != x.shape[0]:
            raise ValueError(f"captions must be ({x.shape[0]}, T) token ids, got {tuple(ids.shape)}")
        real = ids != self.pad_id  # True at the caption's tokens, False at padding
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_text):
            tokens, _ = self.text_encoder(ids, real)
        return self.unet(x, t, context=tokens, context_mask=real)
