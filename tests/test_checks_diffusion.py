"""Notebook 13's checkers (add_noise, one DDPM step): solutions a learner writes pass, typical mistakes get their
own hint, stubs say what to write."""

import pytest
import torch

from labkit import checks
from labkit.checks.diffusion import _DDPM_MISTAKES, _ddpm_mistake

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _todo(*args, **kwargs):
    raise NotImplementedError


def add_noise(x0, noise, t, betas):  # a learner's version, with a loop over the batch
    abar = torch.cumprod(1 - betas, dim=0)
    return torch.stack([abar[ti].sqrt() * x + (1 - abar[ti]).sqrt() * n for x, n, ti in zip(x0, noise, t)])


def ddpm_step(eps, t, x_t, betas, noise):  # Algorithm 2 of the DDPM paper, written out
    alpha, abar = 1 - betas[t], torch.cumprod(1 - betas, dim=0)
    mean = (x_t - (1 - alpha) / (1 - abar[t]).sqrt() * eps) / alpha.sqrt()
    if t == 0:
        return mean
    var = (1 - abar[t - 1]) / (1 - abar[t]) * betas[t]
    return mean + var.sqrt() * noise


def test_solutions_pass(capsys):
    assert checks.check_add_noise(add_noise)
    assert checks.check_ddpm_step(ddpm_step)
    out = capsys.readouterr().out
    assert "✅ add_noise: all 3 cases pass" in out and "✅ ddpm_step: all 3 cases pass" in out


def test_the_reference_is_the_posterior_mean_form():
    # the checker's reference is labkit's DDPMScheduler (diffusers' form); the learner's is the paper's Algorithm 2
    assert checks.check_ddpm_step(_ddpm_mistake())


@pytest.mark.parametrize("wrong, hint", [
    (lambda x0, n, t, b: (1 - b[t]).sqrt().reshape(-1, *[1] * (x0.dim() - 1)) * x0
     + b[t].sqrt().reshape(-1, *[1] * (x0.dim() - 1)) * n, "cumulative product"),
    (lambda x0, n, t, b: torch.cumprod(1 - b, 0)[t].reshape(-1, *[1] * (x0.dim() - 1)) * x0
     + (1 - torch.cumprod(1 - b, 0)[t]).reshape(-1, *[1] * (x0.dim() - 1)) * n, "square roots"),
])
def test_add_noise_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_add_noise(wrong)
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("k, hint", [(0, "single step's"), (1, "no noise"), (2, "posterior's variance")])
def test_ddpm_mistakes_get_their_hint(k, hint, capsys):
    assert not checks.check_ddpm_step(_DDPM_MISTAKES[k][0])
    assert hint in capsys.readouterr().out


def test_stubs_say_what_to_write(capsys):
    assert not checks.check_add_noise(_todo)
    assert not checks.check_ddpm_step(_todo)
    out = capsys.readouterr().out
    assert out.count("not implemented yet") == 2 and "Hint" not in out


# --- ddim_step ------------------------------------------------------------------------------


def ddim_step_from_the_paper(eps, x_t, abar_t, abar_prev):
    """Song et al. (2021), eq. 12 with sigma = 0: predicted x0, then the direction pointing to x_t."""
    predicted_x0 = (x_t - torch.sqrt(1 - abar_t) * eps) / torch.sqrt(abar_t)
    direction = torch.sqrt(1 - abar_prev) * eps
    return torch.sqrt(abar_prev) * predicted_x0 + direction


def test_ddim_solution_passes(capsys):
    assert checks.check_ddim_step(ddim_step_from_the_paper)
    assert "✅ ddim_step: all 3 cases pass" in capsys.readouterr().out


def test_ddim_step_is_one_step_of_labkits_ddim_scheduler():
    # the exercise's step, fed the scheduler's own abar values, is DDIMScheduler.step (tested against diffusers)
    from labkit.diffusion import DDIMScheduler

    s = DDIMScheduler(1000, clip_sample=False).set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    for t in (980, 500, 20, 0):
        prev = s.alphas_cumprod[t - 20] if t >= 20 else torch.tensor(1.0)
        torch.testing.assert_close(ddim_step_from_the_paper(eps, x, s.alphas_cumprod[t], prev), s.step(eps, t, x))


@pytest.mark.parametrize("k, hint", [(0, "DIVIDED by sqrt(abar_t)"), (1, "EARLIER level"), (2, "PREDICTED"),
                                     (3, "square roots")])
def test_ddim_mistakes_get_their_hint(k, hint, capsys):
    from labkit.checks.diffusion import _DDIM_MISTAKES

    assert not checks.check_ddim_step(_DDIM_MISTAKES[k][0])
    assert hint in capsys.readouterr().out


def test_ddim_stub_says_what_to_write(capsys):
    assert not checks.check_ddim_step(_todo)
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "Hint" not in out
