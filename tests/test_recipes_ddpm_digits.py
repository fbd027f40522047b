"""labkit.recipes.ddpm_digits: batches are reproducible, a short run lowers the held-out denoising loss, and the saved
meta rebuilds the network."""

import dataclasses

import pytest
import torch

from labkit.diffusion import DDIMScheduler, denoising_val_loss
from labkit.models.unet import UNet
from labkit.recipes import ddpm_digits as dd
from labkit.tasks.digits import digits_data


def test_batches_are_reproducible_and_drop_labels_at_the_recipe_rate():
    data = digits_data()
    recipe = dataclasses.replace(dd.DDPM_DIGITS, batch_size=4000)
    batches = dd.DigitBatches(data.train_x, data.train_y, recipe)
    x, t, noise, labels = batches(3)
    assert all(torch.equal(a, b) for a, b in zip((x, t, noise, labels), batches(3)))
    assert not torch.equal(t, batches(4)[1])
    assert (labels == 10).float().mean().item() == pytest.approx(recipe.label_dropout, abs=0.02)
    assert 0 <= t.min() and t.max() < recipe.num_train_timesteps


def test_a_short_run_lowers_the_held_out_loss_and_the_meta_rebuilds_the_network():
    recipe = dataclasses.replace(dd.DDPM_DIGITS, base_channels=8, time_dim=32, steps=60, batch_size=32,
                                 warmup_steps=5, ema_decay=0.9)
    data = digits_data()
    scheduler = dd.make_scheduler(recipe)
    torch.manual_seed(recipe.seed)
    untrained = UNet(dd.unet_config(recipe))
    before = denoising_val_loss(untrained, scheduler, data.val_x, data.val_y)
    model, meta = dd.train_ddpm_digits(recipe, progress=False)
    assert before == pytest.approx(1.0, abs=0.05)  # a zero output layer predicts no noise: loss E[eps^2] = 1
    assert meta["val_loss"] < 0.6 * before
    again = dd.build_ddpm_digits(meta)
    again.load_state_dict(model.state_dict())
    assert meta["train_steps"] == 60 and meta["recipe"]["clip_sample"] is False
    assert isinstance(dd.make_scheduler(meta, "ddim"), DDIMScheduler)
    with pytest.raises(ValueError, match="kind"):
        dd.make_scheduler(meta, "euler")
