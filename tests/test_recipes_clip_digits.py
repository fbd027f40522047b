"""labkit.recipes.clip_digits and ddpm_text_digits (notebook 14's zoo models): batches are reproducible and
use only training templates, a short CLIP run classifies held-out digits zero-shot well above chance, a short
text-to-image run lowers the denoising loss, and each saved meta rebuilds its network."""

import dataclasses

import pytest
import torch

from labkit.tasks.captions import CAPTION_TEMPLATES, HELD_OUT_TEMPLATES
from labkit.recipes import clip_digits as cd
from labkit.recipes import ddpm_text_digits as dt
from labkit.diffusion import denoising_val_loss
from labkit.recipes.ddpm_digits import make_scheduler


@pytest.fixture(scope="module")
def short_clip():
    recipe = dataclasses.replace(cd.CLIP_DIGITS, steps=150, batch_size=64, warmup_steps=15, image_width=32)
    return cd.train_clip_digits(recipe, progress=False)


def test_caption_batches_are_reproducible_and_use_training_templates():
    tok = cd.tokenizer()
    batches = cd.CaptionBatches(cd.captioned_data(), tok, batch_size=256)
    images, ids, pad = batches(7)
    again = batches(7)
    assert torch.equal(images, again[0]) and torch.equal(ids, again[1])
    assert not torch.equal(ids, batches(8)[1])
    _, captions, _ = batches.captions(7)
    prefixes = {t.split("{")[0] for t in HELD_OUT_TEMPLATES} - {t.split("{")[0] for t in CAPTION_TEMPLATES}
    assert not any(c.startswith(p) for c in captions for p in prefixes if p)  # "a photo of the", "the handwritten"
    assert images.shape == (256, 1, 8, 8) and ids.shape[0] == 256 and pad.dtype == torch.bool


def test_a_short_clip_run_classifies_zero_shot_and_rebuilds(short_clip):
    model, meta = short_clip
    assert meta["zero_shot_accuracy"] > 0.5  # chance is 0.1; 150 small steps measured 0.7-0.8
    again = cd.build_clip_digits(meta)
    again.load_state_dict(model.state_dict())
    tok = cd.tokenizer(meta)
    data = cd.captioned_data()
    assert torch.equal(cd.zero_shot_predict(again.eval(), tok, data.val.images[:50]),
                       cd.zero_shot_predict(model, tok, data.val.images[:50]))
    assert meta["history"]["train_loss"][-1] < meta["history"]["train_loss"][0]


def test_a_short_text_to_image_run_lowers_the_loss_and_rebuilds(short_clip):
    clip, meta_clip = short_clip
    clip.zoo_meta = meta_clip
    recipe = dataclasses.replace(dt.DDPM_TEXT_DIGITS, base_channels=8, time_dim=32, steps=40, batch_size=32,
                                 warmup_steps=5, ema_decay=0.9)
    model, meta = dt.train_ddpm_text_digits(recipe, progress=False, clip=clip)
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
