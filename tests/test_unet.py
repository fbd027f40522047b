"""labkit.models.unet: the noise predictor's shapes, its time and label conditioning (the null class is "no
label"), clear errors, and that it learns: a few steps lower the denoising loss on real digits' shapes."""

import pytest
import torch
import torch.nn.functional as F

from labkit.diffusion import DDPMScheduler, sample
from labkit.models.unet import UNet, UNetConfig, timestep_embedding


def test_shapes_and_conditioning():
    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=1, base_channels=16, channel_mults=(1, 2), num_classes=10))
    for p in model.out.parameters():  # the zero-initialised output would hide every difference
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    eps = model(x, t, torch.tensor([0, 1, 2, 3]))
    assert eps.shape == x.shape
    assert not torch.allclose(model(x, t.flip(0), torch.tensor([0, 1, 2, 3])), eps)  # the timestep matters
    assert not torch.allclose(model(x, t, torch.tensor([9, 9, 9, 9])), eps)  # so does the label
    assert torch.equal(model(x, t), model(x, t, torch.full((4,), model.null_class)))  # None = the null class
    assert torch.equal(model(x, 5), model(x, torch.full((4,), 5)))  # one timestep for the batch
    assert UNet(base_channels=16, channel_mults=(1, 2, 2))(torch.randn(2, 1, 16, 16), 3).shape == (2, 1, 16, 16)
    assert timestep_embedding(torch.tensor([0, 1]), 8).shape == (2, 8)


def test_bad_input_is_refused():
    model = UNet(base_channels=8, channel_mults=(1, 2))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(2, 1, 8, 8), 1, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="pad"):
        model(torch.randn(2, 1, 7, 7), 1)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.randn(2, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="labels must be"):
        UNet(base_channels=8, num_classes=3)(torch.randn(2, 1, 8, 8), 1, torch.tensor([0, 7]))
    with pytest.raises(TypeError):
        UNet(UNetConfig(), base_channels=8)


def test_training_steps_lower_the_denoising_loss_and_sampling_runs():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    rings = ((yy - 3.5) ** 2 + (xx - 3.5) ** 2).sqrt()
    data = torch.stack([(torch.cos(rings * f) > 0).float() * 2 - 1 for f in torch.linspace(0.5, 1.5, 64)])[:, None]
    model = UNet(base_channels=16, channel_mults=(1, 2))
    scheduler = DDPMScheduler(1000)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    fixed = (torch.randint(1000, (64,), generator=g), torch.randn(data.shape, generator=g))

    def loss_at(t, noise):
        return F.mse_loss(model(scheduler.add_noise(data, noise, t), t), noise)

    with torch.no_grad():
        before = loss_at(*fixed).item()
    for _ in range(60):
        t, noise = torch.randint(1000, (64,), generator=g), torch.randn(data.shape, generator=g)
        opt.zero_grad()
        loss_at(t, noise).backward()
        opt.step()
    with torch.no_grad():
        after = loss_at(*fixed).item()
    assert before == pytest.approx(1.0, abs=0.1)  # the zero output predicts no noise: the loss is E[eps^2] = 1
    assert after < 0.6 * before
    out = sample(model, scheduler, (2, 1, 8, 8), progress=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
