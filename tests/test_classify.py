"""labkit.models.classify: classification heads on labkit's BERT and GPT."""

import pytest
import torch

from labkit.models.bert import BERT, BERTConfig
from labkit.models.classify import SequenceClassifier
from labkit.models.gpt import GPT, GPTConfig


def bert():
    torch.manual_seed(0)
    return BERT(BERTConfig(vocab_size=40, n_layers=1, n_heads=2, d_model=16, d_ff=32, context_length=12))


def gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, n_layers=1, n_heads=2, d_model=16, context_length=12))


IDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 0, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])


@pytest.mark.parametrize("build, pooling", [(bert, "cls"), (bert, "pooled"), (bert, "mean"), (gpt, "last"),
                                            (gpt, "mean")])
def test_shapes_and_padding_does_not_leak(build, pooling):
    model = SequenceClassifier(build(), n_classes=3, pooling=pooling).eval()
    out = model(IDS, MASK, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.dim() == 0
    # the padded sentence gets what it gets alone
    alone = model(IDS[1:, :2], MASK[1:, :2]).logits
    torch.testing.assert_close(out.logits[1:], alone, atol=1e-5, rtol=1e-5)
    # and whatever sits in the padding changes nothing
    noisy = IDS.clone()
    noisy[1, 2:] = torch.tensor([30, 31, 32])
    torch.testing.assert_close(model(noisy, MASK).logits, out.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("build", [bert, gpt])
def test_return_attention_gives_the_backbones_weights(build):
    model = SequenceClassifier(build(), n_classes=3).eval()
    with torch.no_grad():
        out = model(IDS, MASK, return_attention=True)
        plain = model(IDS, MASK)
    logits, loss = out  # still unpacks as (logits, loss)
    assert plain.attentions is None and loss is None
    torch.testing.assert_close(logits, plain.logits)  # the explicit path for this call: equal up to rounding
    assert len(out.attentions) == 1 and out.attentions[0].shape == (2, 2, 5, 5)


def test_last_pooling_picks_the_last_real_token_of_a_gpt():
    backbone = gpt().eval()
    model = SequenceClassifier(backbone, 2, pooling="last").eval()
    h = backbone.encode(IDS)
    torch.testing.assert_close(model.features(IDS, MASK), torch.stack([h[0, 4], h[1, 1]]))


@pytest.mark.parametrize("build, pooling", [(bert, "cls"), (gpt, "last")])
def test_the_loss_falls_on_a_toy_task(build, pooling):
    # class = whether token 7 occurs in the sequence
    g = torch.Generator().manual_seed(0)
    x = torch.randint(3, 40, (64, 8), generator=g)
    x[:32, 3] = 7  # enough positives
    y = (x == 7).any(1).long()
    model = SequenceClassifier(build(), 2, pooling=pooling)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = model(x, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="pooling must be one of"):
        SequenceClassifier(bert(), 2, pooling="max")
    with pytest.raises(ValueError, match="needs a backbone with a pooler"):
        SequenceClassifier(gpt(), 2, pooling="pooled")
    with pytest.raises(TypeError, match="has no encode"):
        SequenceClassifier(torch.nn.Linear(3, 3), 2)
    with pytest.raises(ValueError, match="n_classes must be at least 2"):
        SequenceClassifier(bert(), 1)
    with pytest.raises(ValueError, match="must have the shape of input_ids"):
        SequenceClassifier(bert(), 2)(IDS, MASK[:, :3])
