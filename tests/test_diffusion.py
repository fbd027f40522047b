"""labkit.diffusion against diffusers' schedulers (a reference nobody here wrote): the same schedules, add_noise,
DDPM steps given the same noise, DDIM's timesteps and steps; and the sampling loop, checked on a data set whose
ideal noise prediction is known in closed form, so that wrong steps give the wrong distribution."""

import pytest
import torch
from torch import nn

from labkit.diffusion import DDIMScheduler, DDPMScheduler, guided_noise, make_betas, sample

diffusers = pytest.importorskip("diffusers")  # a test dependency (pyproject's "test" extra)

SCHEDULES = [("linear", "linear"), ("cosine", "squaredcos_cap_v2")]


@pytest.mark.parametrize("ours,theirs", SCHEDULES)
def test_schedules_and_add_noise_equal_diffusers(ours, theirs):
    mine = DDPMScheduler(1000, beta_schedule=ours)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    assert torch.equal(mine.betas, ref.betas)
    assert torch.allclose(mine.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=0)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    assert torch.allclose(mine.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), atol=1e-6)
    snr = mine.snr()
    assert (snr[1:] < snr[:-1]).all()  # the signal fades monotonically


@pytest.mark.parametrize("ours,theirs", SCHEDULES)
@pytest.mark.parametrize("t", [999, 500, 37, 1, 0])
def test_ddpm_step_equals_diffusers_given_the_same_noise(ours, theirs, t):
    mine = DDPMScheduler(1000, beta_schedule=ours)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    g = torch.Generator().manual_seed(t)
    x_t, eps = 2 * torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    theirs_prev = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(7))  # what diffusers drew
    assert torch.allclose(mine.step(eps, t, x_t, noise=noise), theirs_prev, atol=1e-5)
    assert torch.allclose(mine.step(eps, t, x_t, generator=torch.Generator().manual_seed(7)), theirs_prev, atol=1e-5)
    if t == 0:  # no noise at the last step
        assert torch.equal(mine.step(eps, 0, x_t, noise=noise), mine.step(eps, 0, x_t, noise=torch.zeros_like(noise)))


def test_ddim_leading_timesteps_equal_diffusers():
    mine = DDIMScheduler(1000).set_timesteps(50)
    assert mine.timesteps.tolist() == list(range(980, -1, -20))
    for n in (50, 20, 7, 1000):
        ref = diffusers.DDIMScheduler(num_train_timesteps=1000)
        ref.set_timesteps(n)
        assert DDIMScheduler(1000).set_timesteps(n).timesteps.tolist() == ref.timesteps.tolist()


@pytest.mark.parametrize("ours,theirs", SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_steps_equal_diffusers(ours, theirs, eta):
    mine = DDIMScheduler(1000, beta_schedule=ours).set_timesteps(20)
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    ref.set_timesteps(20)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 8, 8, generator=g)
    y = x.clone()
    for t in mine.timesteps.tolist():  # a whole trajectory, with a made-up "network"
        eps = torch.tanh(x) * 0.9 + 0.1 * torch.cos(torch.tensor(float(t)))
        noise = torch.randn(x.shape, generator=g)
        x = mine.step(eps, t, x, eta=eta, noise=noise)
        y = ref.step(eps, t, y, eta=eta, variance_noise=noise).prev_sample
        assert torch.allclose(x, y, atol=1e-4), t


class GaussianOracle(nn.Module):
    """The exact noise prediction for data x0 ~ N(0, s^2 I): E[eps | x_t] = sqrt(1 - abar) x_t / (abar s^2 + 1 - abar)."""

    def __init__(self, scheduler, s):
        super().__init__()
        self.abar, self.s = scheduler.alphas_cumprod, s

    def forward(self, x, t, labels=None):
        a = self.abar[t].reshape(-1, *[1] * (x.dim() - 1))
        return (1 - a).sqrt() * x / (a * self.s**2 + 1 - a)


def ddim_std(scheduler, s):
    """The std a deterministic DDIM sampler with the ideal network ends at, from x_T ~ N(0, 1), worked out by
    hand: each step maps x_t to c x_t, c = (sqrt(a' a) s^2 + sqrt((1 - a')(1 - a))) / (a s^2 + 1 - a), with a = abar_t
    and a' = abar of the next timestep (1 after the last). By Cauchy-Schwarz c^2 Var(x_t) <= Var(x_t'): with few
    steps DDIM ends a little narrower than the data (Song et al. note it), and more steps close the gap."""
    abar, ts = scheduler.alphas_cumprod.double(), scheduler.timesteps.tolist()
    var = 1.0
    for k, t in enumerate(ts):
        a, a_prev = abar[t], (abar[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64))
        c = ((a_prev * a).sqrt() * s**2 + ((1 - a_prev) * (1 - a)).sqrt()) / (a * s**2 + 1 - a)
        var = c.item() ** 2 * var
    return var**0.5


@pytest.mark.parametrize("make", [lambda: DDPMScheduler(1000, clip_sample=False),
                                  lambda: DDIMScheduler(1000, clip_sample=False).set_timesteps(50),
                                  lambda: DDIMScheduler(1000, beta_schedule="cosine", clip_sample=False).set_timesteps(20)])
def test_sampling_with_the_ideal_network_gives_the_data_distribution(make):
    scheduler = make()
    s = 0.3
    x = sample(GaussianOracle(scheduler, s), scheduler, (4000, 2), progress=False, generator=torch.Generator().manual_seed(0))
    # DDPM's ancestral sampling recovers the data's std; DDIM's few deterministic steps the std worked out above
    expected = s if isinstance(scheduler, DDPMScheduler) else ddim_std(scheduler, s)
    assert x.std().item() == pytest.approx(expected, rel=0.03)  # pure noise has std 1; a wrong step another std
    assert abs(x.mean().item()) < 0.02
    if isinstance(scheduler, DDIMScheduler):
        assert 0.8 * s < expected < s  # a little narrower than the data, as the docstring says


def test_guidance_combines_conditional_and_unconditional_predictions():
    class Toy(nn.Module):
        null_class = 10

        def forward(self, x, t, labels):
            return x * 0 + (labels.float() if labels is not None else -1.0).reshape(-1, 1)

    x, t, labels = torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.tensor([1, 2, 3])
    assert torch.equal(guided_noise(Toy(), x, t, labels, 0.0), labels.float().reshape(-1, 1).expand(3, 2))
    w = 2.0
    expect = (1 + w) * labels.float() - w * 10.0
    assert torch.allclose(guided_noise(Toy(), x, t, labels, w), expect.reshape(-1, 1).expand(3, 2))
    Toy.null_class = None
    with pytest.raises(ValueError, match="null class"):
        guided_noise(Toy(), x, t, labels, 1.0)


def test_bad_input_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="beta_schedule"):
        make_betas(10, beta_schedule="quadratic")
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDIMScheduler(100).set_timesteps(500)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        DDIMScheduler(100).step(torch.zeros(1), 99, torch.zeros(1))
    with pytest.raises(ValueError, match="outside"):
        DDPMScheduler(100).step(torch.zeros(1), 100, torch.zeros(1))
    with pytest.raises(ValueError, match="one per sample"):
        DDPMScheduler(100).add_noise(torch.zeros(4, 2), torch.zeros(4, 2), torch.tensor([1, 2]))


class CorrelatedOracle(nn.Module):
    """The exact noise prediction for 2-D data x0 ~ N(0, S): E[eps | x_t] = sqrt(1 - abar) (abar S + (1 - abar) I)^-1 x_t."""

    def __init__(self, scheduler, cov):
        super().__init__()
        self.abar, self.cov = scheduler.alphas_cumprod, cov

    def forward(self, x, t, labels=None):
        a = self.abar[t].reshape(-1, 1, 1)
        m = a * self.cov + (1 - a) * torch.eye(2)
        return (1 - a.reshape(-1, 1)).sqrt() * torch.linalg.solve(m, x.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("make", [lambda: DDPMScheduler(1000, clip_sample=False),
                                  lambda: DDIMScheduler(1000, clip_sample=False).set_timesteps(50)])
def test_inpainting_keeps_the_known_part_and_completes_the_rest_from_it(make):
    """Data whose two coordinates are correlated (rho = 0.9): knowing x_1 = 1, the unknown x_2 should come out
    near its conditional mean 0.9 (the unconditional mean is 0), and x_1 exactly as given. Replacing the known
    part alone gets only part of the way (measured: 0.63 for DDPM, 0.45 for DDIM-50); resampling gets there."""
    from labkit.diffusion import inpaint

    scheduler = make()
    oracle = CorrelatedOracle(scheduler, torch.tensor([[1.0, 0.9], [0.9, 1.0]]))
    n = 2000
    known = torch.tensor([1.0, 0.0]).expand(n, 2)
    mask = torch.tensor([1.0, 0.0])
    means = {}
    for r in (1, 10):
        x = inpaint(oracle, scheduler, known, mask, resample=r, progress=False, generator=torch.Generator().manual_seed(0))
        assert torch.equal(x[:, 0], known[:, 0])
        means[r] = x[:, 1].mean().item()
    assert 0.3 < means[1] < 0.8  # a wrong mask, or known pixels never fed in, gives ~0
    assert abs(means[10] - 0.9) < 0.1 and means[10] > means[1] + 0.1
    free = sample(oracle, scheduler, (n, 2), progress=False, generator=torch.Generator().manual_seed(0))
    assert abs(free[:, 1].mean().item()) < 0.1
    with pytest.raises(ValueError, match="broadcast"):
        inpaint(oracle, scheduler, known, torch.ones(3), progress=False)
    with pytest.raises(ValueError, match="resample"):
        inpaint(oracle, scheduler, known, mask, resample=0, progress=False)
