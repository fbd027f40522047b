"""Checkers for notebook 13 (diffusion: the forward process, one DDPM step); see labkit.checks._core."""

from __future__ import annotations

from typing import Callable

import torch

from ._core import Case, CheckResult, check_close

__all__ = ["check_add_noise", "check_ddpm_step", "check_ddim_step"]


def _schedule(T: int, kind: str = "linear") -> torch.Tensor:
    from labkit.diffusion import make_betas

    return make_betas(T, beta_schedule=kind)


# --- exercise: the forward process ------------------------------------------------------------------------


def _add_noise_reference(x0, noise, t, betas):
    abar = torch.cumprod(1 - betas, dim=0)[t].reshape(-1, *[1] * (x0.dim() - 1))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def _add_noise_cases() -> list[Case]:
    g = torch.Generator().manual_seed(130)
    T = 1000

    def case(shape, t, kind="linear"):
        return (torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.tensor(t), _schedule(T, kind))

    return [Case("one image at t = 500, linear schedule", case((1, 1, 8, 8), [500])),
            Case("a batch, each image at its own t (0, 1, 999)", case((3, 1, 4, 4), [0, 1, 999])),
            Case("a batch of 2-D points, cosine schedule", case((4, 2), [10, 200, 600, 990], "cosine"))]


_ADD_NOISE_MISTAKES = [
    (lambda x0, n, t, b: (1 - b[t]).sqrt().reshape(-1, *[1] * (x0.dim() - 1)) * x0
     + b[t].sqrt().reshape(-1, *[1] * (x0.dim() - 1)) * n,
     "Hint: use the cumulative product abar_t = prod_{s<=t} (1 - beta_s), not the single step's beta_t."),
    (lambda x0, n, t, b: torch.cumprod(1 - b, 0)[t].reshape(-1, *[1] * (x0.dim() - 1)) * x0
     + (1 - torch.cumprod(1 - b, 0)[t]).reshape(-1, *[1] * (x0.dim() - 1)) * n,
     "Hint: the coefficients are square roots: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (so the variance stays 1)."),
]


def check_add_noise(learner_fn: Callable) -> CheckResult:
    """Notebook 13: ``add_noise(x0, noise, t, betas)`` -> x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise for a batch
    x0 (B, ...), noise like it, one timestep per sample t (B,) and the schedule betas (T,)."""
    return check_close(
        "add_noise", learner_fn, _add_noise_reference, _add_noise_cases(),
        hint="Hint: abar = torch.cumprod(1 - betas, 0)[t], reshaped to (B, 1, ...) so that it broadcasts over x0.",
        mistakes=_ADD_NOISE_MISTAKES, atol=1e-5, rtol=1e-5,
    )


# --- exercise: one DDPM step -------------------------------------------------------------------------------


def _ddpm_reference(eps, t, x_t, betas, noise):
    from labkit.diffusion import DDPMScheduler

    s = DDPMScheduler(len(betas), clip_sample=False)
    s.betas, s.alphas = betas, 1 - betas
    s.alphas_cumprod = torch.cumprod(s.alphas, 0)
    return s.step(eps, int(t), x_t, noise=noise)


def _ddpm_cases() -> list[Case]:
    g = torch.Generator().manual_seed(131)
    T = 1000

    def case(shape, t, kind="linear"):
        return (torch.randn(shape, generator=g), t, torch.randn(shape, generator=g) * 1.5, _schedule(T, kind),
                torch.randn(shape, generator=g))

    return [Case("t = 500, linear schedule", case((2, 1, 8, 8), 500)),
            Case("t = 0: the last step adds no noise", case((2, 1, 4, 4), 0)),
            Case("t = 2, cosine schedule (where sigma_t^2 is well below beta_t)", case((3, 2), 2, "cosine"))]


def _ddpm_mistake(variance: str = "tilde", noise_at_0: bool = False, alpha: str = "step"):
    def step(eps, t, x_t, betas, noise):
        alphas, abar = 1 - betas, torch.cumprod(1 - betas, 0)
        a = alphas[t] if alpha == "step" else abar[t]
        mean = (x_t - betas[t] / (1 - abar[t]).sqrt() * eps) / a.sqrt()
        if t == 0 and not noise_at_0:
            return mean
        var = betas[t] if variance == "beta" else (1 - (abar[t - 1] if t > 0 else torch.tensor(1.0))) / (1 - abar[t]) * betas[t]
        return mean + var.sqrt() * noise
    return step


_DDPM_MISTAKES = [
    (_ddpm_mistake(alpha="cumulative"), "Hint: divide by sqrt(alpha_t) = sqrt(1 - beta_t), the single step's, not sqrt(abar_t)."),
    (_ddpm_mistake(variance="beta", noise_at_0=True), "Hint: at t = 0 return the mean: the last step adds no noise."),
    (_ddpm_mistake(variance="beta"), "Hint: sigma_t^2 here is the posterior's variance (1 - abar_{t-1}) / (1 - abar_t) * beta_t, "
                                     "not beta_t (both appear in the paper; the checker uses the first)."),
]


def check_ddpm_step(learner_fn: Callable) -> CheckResult:
    """Notebook 13: ``ddpm_step(eps, t, x_t, betas, noise)`` -> x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) /
    sqrt(alpha_t) + sigma_t noise, sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t, and no noise at t = 0
    (Algorithm 2 of Ho et al., 2020; ``labkit.diffusion.DDPMScheduler.step`` without clipping)."""
    return check_close(
        "ddpm_step", learner_fn, _ddpm_reference, _ddpm_cases(),
        hint=("Hint: alpha_t = 1 - beta_t and abar_t = cumprod(alpha)[t]; mean = (x_t - beta_t / sqrt(1 - abar_t) * eps) "
              "/ sqrt(alpha_t); add sqrt(sigma_t^2) * noise unless t == 0."),
        mistakes=_DDPM_MISTAKES, atol=1e-4, rtol=1e-4,
    )


# --- exercise: one DDIM step -------------------------------------------------------------------------------


def _ddim_reference(eps, x_t, abar_t, abar_prev):
    x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()  # the clean image that eps implies
    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps  # re-noised to the earlier level, with eps


def _ddim_cases() -> list[Case]:
    g = torch.Generator().manual_seed(133)

    def case(shape, abar_t, abar_prev):
        return (torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.tensor(abar_t),
                torch.tensor(abar_prev))

    return [Case("a middle step, abar 0.5 -> 0.7", case((2, 1, 8, 8), 0.5, 0.7)),
            Case("the last step: abar_prev = 1 returns the predicted clean image", case((2, 1, 4, 4), 0.9, 1.0)),
            Case("from nearly pure noise: abar 4e-5 -> 0.01", case((3, 5), 4e-5, 0.01))]


_DDIM_MISTAKES = [
    (lambda eps, x, a, p: p.sqrt() * (x - (1 - a).sqrt() * eps) + (1 - p).sqrt() * eps,
     "Hint: the predicted clean image is (x_t - sqrt(1 - abar_t) eps) DIVIDED by sqrt(abar_t)."),
    (lambda eps, x, a, p: p.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - a).sqrt() * eps,
     "Hint: re-noise to the EARLIER level: the noise term is sqrt(1 - abar_prev) eps, not sqrt(1 - abar_t) eps."),
    (lambda eps, x, a, p: p.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt(),
     "Hint: that is the predicted clean image scaled down; DDIM adds back sqrt(1 - abar_prev) times the PREDICTED "
     "noise eps (deterministic: no fresh noise)."),
    (lambda eps, x, a, p: p * (x - (1 - a) * eps) / a + (1 - p) * eps,
     "Hint: the coefficients are square roots: sqrt(abar) and sqrt(1 - abar), as in the forward process."),
]


def check_ddim_step(learner_fn: Callable) -> CheckResult:
    """Notebook 13: ``ddim_step(eps, x_t, abar_t, abar_prev)`` -> x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev)
    eps, x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): DDIM's deterministic update (eta = 0) of Song et al.,
    2021, without clipping (``labkit.diffusion.DDIMScheduler.step`` with ``clip_sample=False``)."""
    return check_close(
        "ddim_step", learner_fn, _ddim_reference, _ddim_cases(),
        hint=("Hint: two lines: x0 = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt(), then "
              "abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps."),
        mistakes=_DDIM_MISTAKES, atol=1e-4, rtol=1e-4,
    )
