"""labkit.recipes.clip_digits: batches are reproducible and use only training templates, a short CLIP run classifies
held-out digits zero-shot well above chance, and the saved meta rebuilds the network."""

import torch

from labkit.recipes import clip_digits as cd
from labkit.tasks.captions import CAPTION_TEMPLATES, HELD_OUT_TEMPLATES


def test_caption_batches_are_reproducible_and_use_training_templates():
    tok = cd.tokenizer()
    batches = cd.CaptionBatches(cd.captioned_data(), tok, batch_size=256)
    images, ids, real = batches(7)
    again = batches(7)
    assert torch.equal(images, again[0]) and torch.equal(ids, again[1])
    assert not torch.equal(ids, batches(8)[1])
    _, captions, _ = batches.captions(7)
    prefixes = {t.split("{")[0] for t in HELD_OUT_TEMPLATES} - {t.split("{")[0] for t in CAPTION_TEMPLATES}
    assert not any(c.startswith(p) for c in captions for p in prefixes if p)  # "a photo of the", "the handwritten"
    assert images.shape == (256, 1, 8, 8) and ids.shape[0] == 256 and real.dtype == torch.bool


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
