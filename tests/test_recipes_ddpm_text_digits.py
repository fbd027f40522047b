"""labkit.recipes.ddpm_text_digits: a short text-to-image run on a short CLIP run's text encoder lowers the
denoising loss, and the saved meta rebuilds the network."""

import dataclasses

import pytest
import torch

from labkit.diffusion import denoising_val_loss
from labkit.recipes import clip_digits as cd
from labkit.recipes import ddpm_text_digits as dt
from labkit.recipes.ddpm_digits import make_scheduler


def test_a_short_text_to_image_run_lowers_the_loss_and_rebuilds(short_clip):
    clip, meta_clip = short_clip
    clip.zoo_meta = meta_clip
    recipe = dataclasses.replace(dt.DDPM_TEXT_DIGITS, base_channels=8, time_dim=32, steps=40, batch_size=32,
                                 warmup_steps=5, ema_decay=0.9)
    model, meta = dt.train_ddpm_text_digits(clip, recipe, progress=False)
    tok = cd.tokenizer(meta)
    data = cd.captioned_data()
    x = data.val.images[:100] * 2 - 1
    ids, _ = tok.encode_batch(data.val.captions[:100])
    scheduler = make_scheduler(meta)
    torch.manual_seed(0)
    untrained = dt.build_ddpm_text_digits(meta)
    untrained.text_encoder.load_state_dict(model.text_encoder.state_dict())
    before = denoising_val_loss(untrained, scheduler, x, ids)
    after = denoising_val_loss(model, scheduler, x, ids)
    assert before == pytest.approx(1.0, abs=0.05) and after < 0.6 * before
    again = dt.build_ddpm_text_digits(meta)
    again.load_state_dict(model.state_dict())
    assert torch.allclose(again.eval()(x[:4], torch.tensor([1, 2, 3, 4]), ids[:4]),
                          model(x[:4], torch.tensor([1, 2, 3, 4]), ids[:4]), atol=1e-6)
    assert all(not p.requires_grad for p in model.text_encoder.parameters())
    assert torch.allclose(model.text_encoder.tok_emb.weight, clip.text_encoder.tok_emb.weight, atol=1e-6)  # frozen (EMA rounding aside)
