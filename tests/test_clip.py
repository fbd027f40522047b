"""labkit.models.clip and the text-conditional UNet (notebook 14): the symmetric InfoNCE against its formula,
CLIP's logits and loss against Hugging Face ``transformers``' ``CLIPModel`` on the same features and copied
projection weights, both image encoders, that a few steps of contrastive training lower the loss, and that the
caption-conditioned UNet maps shape to shape, reads its caption, ignores padding, and treats the null caption
as the unconditional model."""

import math

import pytest
import torch
import torch.nn.functional as F

from labkit.diffusion import DDPMScheduler, guided_noise
from labkit.models.clip import CLIP, CLIPConfig, info_nce
from labkit.models.unet import TextConditionedUNet, UNet, UNetConfig
from labkit.tasks.captions import captioned_digits
from labkit.tokenizers import WordTokenizer


@pytest.fixture(scope="module")
def data():
    return captioned_digits()


@pytest.fixture(scope="module")
def tok(data):
    return WordTokenizer(data.vocabulary)


def test_info_nce_is_the_formula_and_symmetric():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 6, generator=g) * 3
    n = len(logits)
    # -1/2N sum_i [log softmax_j(l_ij)_i + log softmax_j(l_ji)_i], written out with exp and sums
    rows = sum(-(logits[i, i] - torch.log(torch.exp(logits[i]).sum())) for i in range(n)) / n
    cols = sum(-(logits[i, i] - torch.log(torch.exp(logits[:, i]).sum())) for i in range(n)) / n
    assert torch.allclose(info_nce(logits), (rows + cols) / 2, atol=1e-6)
    assert torch.allclose(info_nce(logits), info_nce(logits.t()), atol=1e-6)  # images and texts swap roles
    assert not torch.allclose(F.cross_entropy(logits, torch.arange(n)), info_nce(logits))  # not one-sided
    perfect = torch.eye(n) * 50
    assert info_nce(perfect) < 1e-6 and torch.isclose(info_nce(torch.zeros(n, n)), torch.tensor(math.log(n)))
    with pytest.raises(ValueError, match="N, N"):
        info_nce(torch.randn(3, 4))


@pytest.mark.parametrize("encoder", ["cnn", "vit"])
def test_logits_and_loss_match_transformers_clip(data, tok, encoder):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    torch.manual_seed(0)
    c = CLIPConfig(vocab_size=tok.vocab_size, image_encoder=encoder, projection_dim=16, d_model=32, image_width=32)
    ours = CLIP(c).eval()
    with torch.no_grad():
        ours.logit_scale.fill_(math.log(20.0))
    images, (ids, pad) = data.train.images[:8], tok.encode_batch(data.train.captions[:8])
    with torch.no_grad():
        image_features = ours.image_encoder(images)
        text_features = ours.text_encoder(ids, pad)[1]
        out = ours(images, ids, pad)

    hf_config = transformers.CLIPConfig(
        text_config=dict(vocab_size=tok.vocab_size, hidden_size=c.d_model, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=c.context_length),
        vision_config=dict(hidden_size=ours.image_encoder.out_dim, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=8, patch_size=2, num_channels=1),
        projection_dim=c.projection_dim)
    hf = transformers.CLIPModel(hf_config).eval()

    class Features(torch.nn.Module):  # stands in for HF's towers: our encoders' pooled features
        def __init__(self, pooled):
            super().__init__()
            self.pooled = pooled

        def forward(self, **kwargs):
            return BaseModelOutputWithPooling(last_hidden_state=self.pooled[:, None], pooler_output=self.pooled)

    hf.vision_model, hf.text_model = Features(image_features), Features(text_features)
    with torch.no_grad():
        hf.visual_projection.weight.copy_(ours.image_proj.weight)
        hf.text_projection.weight.copy_(ours.text_proj.weight)
        hf.logit_scale.copy_(ours.logit_scale)
        ref = hf(input_ids=ids, pixel_values=torch.zeros(8, 1, 8, 8), return_loss=True)
    assert torch.allclose(out.logits_per_image, ref.logits_per_image, atol=1e-5)
    assert torch.allclose(out.logits_per_text, ref.logits_per_text, atol=1e-5)
    assert torch.allclose(out.loss, ref.loss, atol=1e-6)


def test_encoders_shapes_and_errors(data, tok):
    ids, pad = tok.encode_batch(data.train.captions[:5])
    for encoder in ("cnn", "vit"):
        model = CLIP(vocab_size=tok.vocab_size, image_encoder=encoder)
        img, txt = model.encode_image(data.train.images[:3]), model.encode_text(ids, pad)
        assert img.shape == (3, 64) and txt.shape == (5, 64)
        assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)  # unit vectors
        out = model(data.train.images[:3], ids, pad)
        assert out.logits_per_image.shape == (3, 5) and out.loss is None  # no pairs: no loss
    mnist = CLIP(vocab_size=tok.vocab_size, image_size=28, image_encoder="vit", patch_size=4)
    assert mnist.encode_image(torch.rand(2, 1, 28, 28)).shape == (2, 64)
    model = CLIP(vocab_size=tok.vocab_size)
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        model.encode_image(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="eos"):
        model.encode_text(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="image_encoder"):
        CLIP(image_encoder="resnet")
    # padding changes nothing: the same caption padded further encodes the same
    one, _ = tok.encode_batch(["a thick seven"])
    longer, _ = tok.encode_batch(["a thick seven"], max_len=12)
    assert torch.allclose(model.encode_text(one), model.encode_text(longer), atol=1e-5)


def test_return_attention_gives_each_encoders_weights(data, tok):
    torch.manual_seed(0)
    ids, real = tok.encode_batch(data.train.captions[:5])
    for encoder, image_layers in (("cnn", 0), ("vit", 2)):
        model = CLIP(vocab_size=tok.vocab_size, image_encoder=encoder).eval()
        with torch.no_grad():
            out = model(data.train.images[:3], ids, real, return_attention=True)
            plain = model(data.train.images[:3], ids, real)
        assert plain.attentions is None  # the explicit path for this call: equal up to rounding
        torch.testing.assert_close(out.logits_per_image, plain.logits_per_image)
        text, image = out.attentions["text"], out.attentions["image"]
        assert len(text) == model.config.n_layers and len(image) == image_layers
        for w in text:
            assert w.shape == (5, 4, ids.shape[1], ids.shape[1])
            assert torch.all(w.masked_fill(real[:, None, None, :], 0) == 0)  # no weight on padding
            torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
        for w in image:
            assert w.shape[0] == 3 and w.shape[-1] == w.shape[-2] == 16 + 1  # 16 patches and the class token


def test_contrastive_steps_lower_the_loss(data, tok):
    torch.manual_seed(0)
    model = CLIP(vocab_size=tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    images, (ids, pad) = data.train.images[:32], tok.encode_batch(data.train.captions[:32])
    first = model(images, ids, pad).loss.item()
    for _ in range(30):
        loss = model(images, ids, pad).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert model(images, ids, pad).loss.item() < 0.6 * first  # measured: 3.63 -> 1.83


def _text_unet(tok, context_dim=32):
    torch.manual_seed(0)
    clip = CLIP(vocab_size=tok.vocab_size, d_model=context_dim)
    unet = UNet(UNetConfig(base_channels=16, context_dim=context_dim))
    for name, p in unet.named_parameters():  # the zero-initialised output layers would hide every difference
        if name.startswith("out.") or "out_proj" in name:
            torch.nn.init.normal_(p, std=0.1)
    return TextConditionedUNet(unet, clip.text_encoder)


def test_text_conditioned_unet_reads_the_caption(tok):
    model = _text_unet(tok)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 400, 900])
    ids, _ = tok.encode_batch(["a thick seven", "a zero slanted to the left", "the digit one"])
    eps = model(x, t, ids)
    assert eps.shape == x.shape
    other, _ = tok.encode_batch(["a thin seven", "a zero slanted to the right", "the digit two"])
    assert (model(x, t, other) - eps).abs().flatten(1).amax(1).min() > 1e-4  # every caption matters
    padded, _ = tok.encode_batch(["a thick seven", "a zero slanted to the left", "the digit one"], max_len=14)
    assert torch.allclose(model(x, t, padded), eps, atol=1e-5)  # padding does not
    # the null caption is the unconditional model: None, the empty text, and null_labels agree
    empty, _ = tok.encode_batch(["", "", ""])
    assert torch.allclose(model(x, t), model(x, t, empty), atol=1e-6)
    assert torch.allclose(model(x, t), model(x, t, model.null_labels(ids)), atol=1e-5)
    # classifier-free guidance uses it: w = 1 is 2 eps(caption) - eps(null)
    assert torch.allclose(guided_noise(model, x, t, ids, 1.0), 2 * eps - model(x, t), atol=1e-5)


def test_text_conditioned_unet_errors_and_frozen_text(tok):
    model = _text_unet(tok)
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    model.train()
    assert not model.text_encoder.training and model.unet.training
    with pytest.raises(ValueError, match="context"):
        model.unet(torch.randn(2, 1, 8, 8), 1)
    with pytest.raises(ValueError, match="no context"):
        UNet(base_channels=8)(torch.randn(2, 1, 8, 8), 1, context=torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="cross-attention"):
        TextConditionedUNet(UNet(base_channels=8), model.text_encoder)
    with pytest.raises(ValueError, match="token ids"):
        model(torch.randn(2, 1, 8, 8), 1, torch.ones(3, 4, dtype=torch.long))


def test_a_text_conditioned_training_step_lowers_the_loss(data, tok):
    model = _text_unet(tok)
    torch.nn.init.zeros_(model.unet.out.weight)
    torch.nn.init.zeros_(model.unet.out.bias)
    scheduler = DDPMScheduler()
    g = torch.Generator().manual_seed(0)
    x0 = data.train.images[:64] * 2 - 1
    ids, _ = tok.encode_batch(data.train.captions[:64])
    t = torch.randint(1000, (64,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = scheduler.add_noise(x0, noise, t)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = F.mse_loss(model(x_t, t, ids), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert all(p.grad is None for p in model.text_encoder.parameters())  # the frozen encoder is not trained
