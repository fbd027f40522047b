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

Unlike the lab's language models (which return named tuples with a loss), ``forward`` returns the prediction
itself, as the DDPM paper's eps_theta(x_t, t) does; the loss is the training loop's (MSE to the true noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNetConfig", "UNet", "timestep_embedding"]


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
        self.out_norm = nn.GroupNorm(min(c.groups, w_in), w_in)
        self.out = nn.Conv2d(w_in, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # starts by predicting zero noise: a calm start, as in the DDPM code
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted noise in ``x`` (B, C, H, W) at timesteps ``t`` (B,), for ``labels`` (B,) (None, or
        ``null_class`` entries: unconditional)."""
        c = self.config
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
        h = self.stem(x)
        hs = [h]
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for blocks, up in zip(self.up, self.upsample):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            h = up(h)
        return self.out(F.silu(self.out_norm(h)))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
