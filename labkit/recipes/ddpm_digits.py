"""The zoo's ``ddpm-digits``: a class-conditional diffusion model of scikit-learn's 8x8 digits (notebook 13).

The data: the 1,797 digits of ``labkit.data.load_digits`` scaled to [-1, 1], with a fixed held-out set
(``n_val`` images, drawn with seed 0) that is never trained on: the memorisation check compares samples'
distances to the training images with the held-out digits' distances. The network is a small
``labkit.models.unet.UNet`` with a label embedding and a null class; it learns to predict the noise of
``DDPMScheduler.add_noise`` at a uniformly drawn timestep (the DDPM loss), with each label replaced by the
null class with probability ``label_dropout`` so that the same network also learns the unconditional
prediction that classifier-free guidance needs. The weights kept are an exponential moving average of the
trained ones (``torch.optim.swa_utils``' EMA), which samples markedly better after a short run::

    recipe = DDPM_DIGITS
    data = digits_data()                        # train/held-out images in [-1, 1] and labels
    model, meta = train_ddpm_digits(recipe)     # what ``zoo.load("ddpm-digits")`` runs once
    scheduler = make_scheduler(meta, "ddim").set_timesteps(50)
    images = sample(model, scheduler, (10, 1, 8, 8), labels=torch.arange(10))

The data (``labkit.tasks.digits``), the DDPM loss and the EMA (``labkit.diffusion``, ``labkit.optim``) and the digit
classifier that judges samples (``labkit.models.classify.DigitClassifier``) are shared with notebook 14's models.

Why these settings (a 2-core CPU, at most 60 s of training): 24 channels at 8x8 and 48 at 4x4 (0.39M
parameters) train ~6 steps a second on a 2-core AMD EPYC, so 330 steps; the EMA (decay 0.995, warmed up)
must not keep the initial weights (see ``ema_of``); without clipping the predicted x_0 (``clip_sample=False``)
guided DDIM keeps its digits (with diffusers' default clip, DDIM-50 at guidance 2 gave 69% of digits as
requested and a Fréchet distance of 215, against 97% and 57 without; measured 2026-12-02).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..device import get_device
from ..diffusion import DDIMScheduler, DDPMScheduler, denoising_val_loss, diffusion_loss
from ..models.unet import UNet, UNetConfig
from ..optim import ema_of
from ..tasks.digits import DigitsData, digits_data
from ..train import TrainConfig, train
from . import Recipe

__all__ = ["DigitsDiffusionRecipe", "DDPM_DIGITS", "unet_config", "make_scheduler", "DigitBatches",
           "train_ddpm_digits", "build_ddpm_digits", "RECIPE"]


@dataclass(frozen=True)
class DigitsDiffusionRecipe:
    """Everything that decides how ``ddpm-digits`` is trained (one field per lever)."""

    # the data
    n_val: int = 300  # held-out digits (split seed 0), never trained on
    # the network (see UNetConfig)
    base_channels: int = 24
    channel_mults: tuple[int, ...] = (1, 2)  # 8x8 then 4x4
    num_res_blocks: int = 1
    time_dim: int = 128
    # the noise schedule
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    clip_sample: bool = False  # clipping the predicted x_0 to [-1, 1] breaks guided DDIM at this size
    # the optimisation
    label_dropout: float = 0.15  # share of labels replaced by the null class (classifier-free guidance)
    steps: int = 330  # ~55 s on a 2-core AMD EPYC (measured 2026-12-02)
    batch_size: int = 128
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    max_seconds: float | None = None  # a wall-time budget for training (None: run all the steps)
    seed: int = 0


DDPM_DIGITS = DigitsDiffusionRecipe()


def unet_config(recipe: DigitsDiffusionRecipe = DDPM_DIGITS) -> UNetConfig:
    return UNetConfig(in_channels=1, base_channels=recipe.base_channels, channel_mults=tuple(recipe.channel_mults),
                      num_res_blocks=recipe.num_res_blocks, time_dim=recipe.time_dim, num_classes=10)


def make_scheduler(recipe: DigitsDiffusionRecipe | dict = DDPM_DIGITS, kind: str = "ddpm"):
    """The recipe's noise schedule as a ``DDPMScheduler`` (``kind="ddpm"``) or ``DDIMScheduler`` (``"ddim"``:
    call ``set_timesteps`` next). ``recipe`` may be a zoo model's ``meta`` (its ``"recipe"`` entry is used)."""
    r = recipe["recipe"] if isinstance(recipe, dict) else asdict(recipe)
    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}.get(kind)
    if cls is None:
        raise ValueError(f"kind must be 'ddpm' or 'ddim', got {kind!r}")
    return cls(r["num_train_timesteps"], r["beta_start"], r["beta_end"], r["beta_schedule"], clip_sample=r["clip_sample"])


class DigitBatches:
    """``get_batch(step)`` for ``labkit.train``: a random batch of training digits, their timesteps, noise and
    labels (a ``label_dropout`` share of them the null class), drawn from a generator seeded by the step, so a
    run (and a resumed run) sees the same batches on every machine."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, recipe: DigitsDiffusionRecipe, null_class: int = 10):
        self.x, self.y, self.recipe, self.null_class = x, y, recipe, null_class

    def __call__(self, step: int):
        r = self.recipe
        g = torch.Generator().manual_seed(r.seed * 1_000_003 + step)
        idx = torch.randint(len(self.x), (r.batch_size,), generator=g)
        t = torch.randint(r.num_train_timesteps, (r.batch_size,), generator=g)
        noise = torch.randn((r.batch_size, *self.x.shape[1:]), generator=g)
        drop = torch.rand(r.batch_size, generator=g) < r.label_dropout
        labels = torch.where(drop, torch.full_like(self.y[idx], self.null_class), self.y[idx])
        return self.x[idx], t, noise, labels


def train_ddpm_digits(recipe: DigitsDiffusionRecipe = DDPM_DIGITS, progress: bool = True,
                      desc: str = "ddpm-digits", data: DigitsData | None = None,
                      device: torch.device | str | None = None) -> tuple[UNet, dict]:
    """Train ``ddpm-digits`` with ``labkit.train``; returns the EMA network (eval mode) and ``meta`` with the
    config, the recipe, the loss curve, the held-out loss and the training time. ``data`` replaces the 8x8
    digits with other (N, 1, H, W) images in [-1, 1] and labels 0..9 (``benchmarks/ddpm_mnist_cpu.py``: MNIST).
    It trains on ``device`` (default ``get_device()``: a GPU where there is one)."""
    data = data if data is not None else digits_data(recipe.n_val)
    torch.manual_seed(recipe.seed)
    model = UNet(unet_config(recipe)).to(get_device(device))  # initialised on the CPU: the same weights anywhere
    ema = ema_of(model, recipe.ema_decay)
    scheduler = make_scheduler(recipe)
    config = TrainConfig(max_steps=recipe.steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                         weight_decay=recipe.weight_decay, grad_clip=recipe.grad_clip, betas=(0.9, 0.99),
                         eval_every=0, log_every=10, progress=progress, desc=desc, max_seconds=recipe.max_seconds)

    def loss_fn(net, batch):
        x0, t, noise, labels = batch
        return diffusion_loss(net, scheduler, x0, t, noise, labels)

    history = train(model, DigitBatches(data.train_x, data.train_y, recipe, model.null_class), config,
                    eval_fn=lambda net: denoising_val_loss(net, scheduler, data.val_x, data.val_y),
                    loss_fn=loss_fn, on_step=lambda step, net, h: ema.update_parameters(net))
    net = ema.module.eval()
    recipe_dict = asdict(recipe)
    recipe_dict["channel_mults"] = list(recipe.channel_mults)
    config_dict = asdict(net.config)
    config_dict["channel_mults"] = list(net.config.channel_mults)
    meta = {"config": config_dict, "recipe": recipe_dict,
            "history": {"steps": history.steps, "train_loss": history.train_loss},
            "val_loss_raw": history.final.get("val_loss"),
            "val_loss": denoising_val_loss(net, scheduler, data.val_x, data.val_y),
            "train_steps": history.completed_steps, "train_seconds": history.seconds}
    return net, meta


def build_ddpm_digits(meta: dict) -> UNet:
    """An untrained UNet of the shape saved in ``meta["config"]``."""
    config = dict(meta["config"])
    config["channel_mults"] = tuple(config["channel_mults"])
    return UNet(UNetConfig(**config))


RECIPE = Recipe(
    name="ddpm-digits",
    description="class-conditional UNet (0.39M parameters, 8x8 and 4x4, null class for classifier-free "
                "guidance) trained as a DDPM noise predictor on scikit-learn's 8x8 digits",
    build=f"{__name__}:build_ddpm_digits", train=f"{__name__}:train_ddpm_digits",
    version=2, minutes_cpu=1,
)  # fmt: skip
