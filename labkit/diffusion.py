"""Diffusion models (notebook 13): the noise schedules and samplers, apart from the network, as in diffusers.

Three roles, kept apart so each can be read (and swapped) on its own:

* a **scheduler** knows the noise schedule: ``add_noise`` runs the forward process
  x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, and ``step`` one step of the reverse process;
* a **network** predicts the noise eps from (x_t, t[, label]) and knows nothing of schedules
  (``labkit.models.unet.UNet``);
* the **loop** (``sample``) starts from pure noise and calls the two in turn.

``DDPMScheduler`` (Ho et al., 2020) takes all ``num_train_timesteps`` steps; ``DDIMScheduler`` (Song et al.,
2021) takes a few evenly spaced ones (``set_timesteps``), deterministically when ``eta`` is 0. Both follow
diffusers' classes of the same names with their default settings (epsilon prediction, "fixed_small" variance,
the predicted x_0 clipped to [-1, 1], DDIM's "leading" spacing and final abar of 1), and are tested against
them::

    scheduler = DDPMScheduler(1000, beta_schedule="cosine")
    x_t = scheduler.add_noise(x0, noise, t)                          # training: predict noise from x_t
    images = sample(model, DDIMScheduler(1000).set_timesteps(50), (16, 1, 16, 16), labels=labels, guidance_scale=2.0)
    completed = inpaint(model, scheduler, images, mask)             # regenerate where mask is 0
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .device import module_device, to_device

__all__ = ["make_betas", "DDPMScheduler", "DDIMScheduler", "guided_noise", "sample", "inpaint"]


def make_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               beta_schedule: str = "linear") -> torch.Tensor:
    """The noise added at each step, beta_1..beta_T (float32): ``"linear"`` from ``beta_start`` to ``beta_end``
    (Ho et al.), or ``"cosine"`` (Nichol & Dhariwal, 2021: abar_t = cos^2(((t/T + 0.008) / 1.008) pi/2), each beta
    capped at 0.999; diffusers' "squaredcos_cap_v2")."""
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
    if beta_schedule == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start} and {beta_end}")
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "cosine":
        def abar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        T = num_train_timesteps
        return torch.tensor([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=torch.float32)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}: use 'linear' or 'cosine'")


class _Schedule:
    """What both schedulers share: the betas, abar_t (``alphas_cumprod``), ``add_noise`` and the clip."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", clip_sample: bool = True):
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.clip_sample = clip_sample
        self.betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # abar_t: how much of x_0 is left at t

    def _check_t(self, t) -> int:
        t = int(t)
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep {t} is outside 0..{self.num_train_timesteps - 1}")
        return t

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """The forward process: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise, with ``t`` one timestep or one
        per sample of the batch (shape (B,))."""
        if x0.shape != noise.shape:
            raise ValueError(f"x0 and noise must have one shape, got {tuple(x0.shape)} and {tuple(noise.shape)}")
        t = torch.as_tensor(t, device=x0.device).long().reshape(-1)
        if t.numel() not in (1, x0.shape[0]):
            raise ValueError(f"give one timestep or one per sample ({x0.shape[0]}), got {t.numel()}")
        if t.min() < 0 or t.max() >= self.num_train_timesteps:
            raise ValueError(f"timesteps must be in 0..{self.num_train_timesteps - 1}")
        abar = self.alphas_cumprod.to(x0.device, x0.dtype)[t].reshape(-1, *[1] * (x0.dim() - 1))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def snr(self) -> torch.Tensor:
        """The signal-to-noise ratio abar_t / (1 - abar_t) at every timestep."""
        return self.alphas_cumprod / (1 - self.alphas_cumprod)

    def predict_x0(self, eps: torch.Tensor, t: int, x_t: torch.Tensor) -> torch.Tensor:
        """The x_0 that ``eps`` implies: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clipped to [-1, 1] if
        ``clip_sample``."""
        abar = self.alphas_cumprod[t]
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        return x0.clamp(-1, 1) if self.clip_sample else x0


def _noise_like(x: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    if noise is None:  # drawn where the generator lives (a CPU generator: the same noise on every device)
        where = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=where, dtype=x.dtype).to(x.device)
    if noise.shape != x.shape:
        raise ValueError(f"noise must have the sample's shape {tuple(x.shape)}, got {tuple(noise.shape)}")
    return noise


class DDPMScheduler(_Schedule):
    """Ancestral sampling over every timestep: ``timesteps`` is T-1, ..., 0."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", clip_sample: bool = True):
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule, clip_sample)
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x_{t-1} from x_t and the predicted noise: the mean of q(x_{t-1} | x_t, x_0) at the predicted x_0,
        plus sigma_t * ``noise`` (drawn from ``generator`` when not given), with
        sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) * beta_t; no noise at t = 0."""
        t = self._check_t(t)
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
        beta_t = 1 - abar_t / abar_prev
        x0 = self.predict_x0(eps, t, x_t)
        mean = (abar_prev.sqrt() * beta_t / (1 - abar_t)) * x0 + ((1 - beta_t).sqrt() * (1 - abar_prev) / (1 - abar_t)) * x_t
        if t == 0:
            return mean
        variance = ((1 - abar_prev) / (1 - abar_t) * beta_t).clamp(min=1e-20)
        return mean + variance.sqrt() * _noise_like(x_t, noise, generator)


class DDIMScheduler(_Schedule):
    """Sampling with a few of the timesteps: call ``set_timesteps(n)`` first ("leading" spacing: for 1000
    and 50, 980, 960, ..., 0). With ``eta`` = 0 each step is deterministic."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", clip_sample: bool = True):
        super().__init__(num_train_timesteps, beta_start, beta_end, beta_schedule, clip_sample)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)

    def set_timesteps(self, num_inference_steps: int) -> "DDIMScheduler":
        """Use ``num_inference_steps`` evenly spaced timesteps, t = k * (T // n) for k = n-1, ..., 0. Returns self."""
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be 1..{self.num_train_timesteps}, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        ratio = self.num_train_timesteps // num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1) * ratio
        return self

    def step(self, eps: torch.Tensor, t: int, x_t: torch.Tensor, eta: float = 0.0, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """x at the previous of the chosen timesteps (t - T // n): sqrt(abar_prev) x0_hat plus
        sqrt(1 - abar_prev - sigma^2) eps pointing back towards x_t, plus sigma * ``noise`` when ``eta`` > 0, with
        sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) (eq. 12 of Song et al.)."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps(n) before step: DDIM needs to know how many steps it takes")
        t = self._check_t(t)
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        prev = t - self.num_train_timesteps // self.num_inference_steps
        abar_t = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
        x0 = self.predict_x0(eps, t, x_t)
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
        x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).sqrt() * eps
        if eta > 0:
            x_prev = x_prev + sigma * _noise_like(x_t, noise, generator)
        return x_prev


def guided_noise(model: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None,
                 guidance_scale: float | None = None) -> torch.Tensor:
    """The network's noise prediction for a batch at timesteps ``t`` (B,). With ``labels`` and a
    ``guidance_scale`` w, classifier-free guidance (Ho & Salimans, 2021): (1 + w) eps(x, label) - w eps(x, null),
    the null label being ``model.null_class`` (or ``model.null_labels(labels)``: a text model's null caption); w = 0 is the plain conditional prediction, larger w pushes
    samples further towards their label."""
    if labels is None or not guidance_scale:
        return model(x, t, labels)
    if hasattr(model, "null_labels"):  # e.g. a TextConditionedUNet: the null caption
        null_labels = model.null_labels(labels)
    elif getattr(model, "null_class", None) is not None:
        null_labels = torch.full_like(labels, model.null_class)
    else:
        raise ValueError("classifier-free guidance needs a model trained with a null class (model.null_class) "
                         "or a null caption (model.null_labels)")
    both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null_labels]))
    cond, uncond = both.chunk(2)
    return (1 + guidance_scale) * cond - guidance_scale * uncond


def _noise(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``device``, drawn where ``generator`` lives (the CPU's default
    generator without one), so that a seeded CPU generator gives the same noise on every device."""
    return torch.randn(shape, generator=generator).to(device)


def _step(scheduler, eps, t, x, eta, generator):
    if isinstance(scheduler, DDIMScheduler):
        return scheduler.step(eps, t, x, eta=eta, generator=generator)
    return scheduler.step(eps, t, x, generator=generator)


@torch.no_grad()
def sample(model: nn.Module, scheduler: DDPMScheduler | DDIMScheduler, shape: tuple[int, ...],
           guidance_scale: float | None = None, labels: torch.Tensor | None = None, progress: bool = True,
           generator: torch.Generator | None = None, eta: float = 0.0,
           callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Generate a batch of ``shape`` from pure noise: at each of ``scheduler.timesteps``, predict the noise
    (``guided_noise``) and take one ``scheduler.step``. ``callback(t, x)`` sees every intermediate x (for a strip
    of the reverse process); ``eta`` is DDIM's. Seed with ``generator``."""
    from tqdm.auto import tqdm

    if labels is not None and labels.shape[0] != shape[0]:
        raise ValueError(f"give one label per sample: {shape[0]} samples, {labels.shape[0]} labels")
    was_training = model.training
    model.eval()
    device = module_device(model)
    labels = to_device(labels, device)
    x = _noise(shape, generator, device)
    for t in tqdm(scheduler.timesteps.tolist(), desc="sampling", disable=not progress, leave=False):
        eps = guided_noise(model, x, torch.full((shape[0],), t, dtype=torch.long, device=device), labels,
                           guidance_scale)
        x = _step(scheduler, eps, t, x, eta, generator)
        if callback is not None:
            callback(t, x)
    model.train(was_training)
    return x.cpu()  # computed on the model's device, returned on the CPU


@torch.no_grad()
def inpaint(model: nn.Module, scheduler: DDPMScheduler | DDIMScheduler, known: torch.Tensor, mask: torch.Tensor,
            guidance_scale: float | None = None, labels: torch.Tensor | None = None, resample: int = 1,
            progress: bool = True, generator: torch.Generator | None = None, eta: float = 0.0) -> torch.Tensor:
    """Fill in the pixels where ``mask`` is 0, keeping those of ``known`` where it is 1 (``mask`` broadcasts
    against ``known``). The sampling loop of ``sample``, plus one line: after each step, the known pixels are
    replaced by ``known`` noised to the step's new timestep (``add_noise``), so the network completes an image
    whose known part is always at the right noise level; the last step returns ``known`` exactly there.

    Replacing alone lets the two parts disagree (the network sees the known part only through the noisy
    pixels it is given, one step at a time): with ``resample`` = r > 1, each step is repeated r times, the
    merged result noised back to the step's timestep in between, which gives the network time to make the
    generated part agree with the known one (Lugmayr et al.'s RePaint, with jumps of one step)."""
    from tqdm.auto import tqdm

    mask = torch.as_tensor(mask, dtype=known.dtype)
    try:
        fits = torch.broadcast_shapes(mask.shape, known.shape) == known.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to the images' shape {tuple(known.shape)}: give "
                         "one of the images' shape (1 where a pixel is known, 0 where it is to be generated)")
    if labels is not None and labels.shape[0] != known.shape[0]:
        raise ValueError(f"give one label per image: {known.shape[0]} images, {labels.shape[0]} labels")
    if resample < 1:
        raise ValueError(f"resample must be >= 1 (1: no resampling), got {resample}")
    was_training = model.training
    model.eval()
    device = module_device(model)
    known, mask, labels = to_device((known, mask, labels), device)
    abar = scheduler.alphas_cumprod
    x = _noise(known.shape, generator, device)
    timesteps = scheduler.timesteps.tolist()
    for i, t in enumerate(tqdm(timesteps, desc="inpainting", disable=not progress, leave=False)):
        prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
        for r in range(resample if prev is not None else 1):
            if r > 0:  # back from prev to t: x_t = sqrt(abar_t / abar_prev) x_prev + sqrt(1 - abar_t / abar_prev) z
                a = abar[t] / abar[prev]
                x = a.sqrt() * x + (1 - a).sqrt() * _noise(known.shape, generator, device)
            eps = guided_noise(model, x, torch.full((known.shape[0],), t, dtype=torch.long, device=device), labels,
                               guidance_scale)
            x = _step(scheduler, eps, t, x, eta, generator)
            if prev is not None:  # the known pixels, noised to the next step's level
                known_t = scheduler.add_noise(known, _noise(known.shape, generator, device), prev)
            else:
                known_t = known
            x = mask * known_t + (1 - mask) * x
    model.train(was_training)
    return x.cpu()  # computed on the model's device, returned on the CPU


# --- the training objective -------------------------------------------------------------------------------

def diffusion_loss(model: nn.Module, scheduler, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """The DDPM objective (Ho et al.'s "simple" loss): noise ``x0`` to ``t`` and score the network's guess of
    the noise, ``mean((eps_theta(x_t, t, label) - noise)^2)``."""
    x_t = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(model(x_t, t, labels), noise)


@torch.no_grad()
def denoising_val_loss(model: nn.Module, scheduler, x: torch.Tensor, y: torch.Tensor | None = None,
                       repeats: int = 4, seed: int = 0) -> float:
    """The DDPM loss on held-out images, at timesteps and noise fixed by ``seed`` (comparable across runs)."""
    g = torch.Generator().manual_seed(seed)  # on the CPU: the same timesteps and noise on every device
    device = module_device(model)
    x, y = to_device((x, y), device)
    total = 0.0
    for _ in range(repeats):
        t = torch.randint(scheduler.num_train_timesteps, (len(x),), generator=g).to(device)
        noise = torch.randn(x.shape, generator=g).to(device)
        total += diffusion_loss(model, scheduler, x, t, noise, y).item()
    return total / repeats
