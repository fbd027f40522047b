"""labkit.metrics: perplexity and the language-model losses, bits per byte, accuracy and macro-F1 (against scikit-learn), BLEU
(sacrebleu, several references), the Fréchet and nearest distances."""

import math

import pytest
import torch
from torch import nn

from labkit import metrics
from labkit.metrics import accuracy, lm_loss, perplexity
from labkit.models.gpt import GPT, GPTConfig


class Uniform(nn.Module):
    """Predicts every token with equal probability: its loss is log(V) exactly."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, y):
        logits = torch.zeros(*x.shape, self.vocab) + self.dummy
        return logits, nn.functional.cross_entropy(logits.view(-1, self.vocab), y.reshape(-1))


def test_uniform_model_has_perplexity_vocab_size():
    data = torch.randint(0, 17, (1000,))
    loss = lm_loss(Uniform(17), data, context_length=10, batch_size=7)
    assert loss == pytest.approx(math.log(17), rel=1e-6)
    assert perplexity(loss) == pytest.approx(17, rel=1e-5)


def test_lm_loss_is_the_mean_over_all_windowed_tokens():
    torch.manual_seed(0)

    class Bigram(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Embedding(7, 7)

        def forward(self, x, y):
            logits = self.table(x)
            return logits, nn.functional.cross_entropy(logits.view(-1, 7), y.reshape(-1))

    model, data = Bigram(), torch.randint(0, 7, (105,))
    # 10 windows of 10 in batches of 3, 3, 3, 1; tokens 100.. are left over
    expected = nn.functional.cross_entropy(model.table(data[:100]), data[1:101]).item()
    assert lm_loss(model, data, context_length=10, batch_size=3) == pytest.approx(expected, rel=1e-6)


def test_accuracy():
    assert accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 0.5
    assert accuracy([1, 2, 3], [1, 2, 4]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same shape"):
        accuracy([1, 2], [1, 2, 3])


# --- BLEU (sacrebleu) ------------------------------------------------------------------


def test_bleu_takes_any_number_of_references_per_sentence():
    import sacrebleu

    from labkit.metrics import bleu, reference_streams

    hyps = ["the cat sat on the mat today", "a dog barks at the old man"]
    refs = [["a cat was on the mat", "the cat sat on the mat today"], ["a dog barks at the old man"]]
    assert bleu(hyps, refs) == pytest.approx(100.0)  # each hypothesis is one of its references
    assert reference_streams(refs) == [[refs[0][0], refs[1][0]], [refs[0][1], None]]
    # the same as sacrebleu given the streams by hand, and more than with the first reference only
    assert bleu(hyps, refs) == sacrebleu.corpus_bleu(hyps, [[refs[0][0], refs[1][0]], [refs[0][1], None]]).score
    assert bleu(hyps, [r[0] for r in refs]) < 90
    with pytest.raises(ValueError, match="one reference"):
        bleu(hyps, refs[:1])
    with pytest.raises(ValueError, match="at least one reference"):
        bleu(hyps, [refs[0], []])


# --- classification metrics, against scikit-learn ---------------------------------------


@pytest.mark.parametrize("seed, n_classes", [(0, 2), (1, 3), (2, 5)])
def test_confusion_matrix_and_macro_f1_equal_scikit_learns(seed, n_classes):
    from sklearn import metrics

    from labkit.metrics import confusion_matrix, f1_scores, macro_f1

    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, n_classes, (200,), generator=g)
    p = torch.where(torch.rand(200, generator=g) < 0.7, t, torch.randint(0, n_classes, (200,), generator=g))
    labels = list(range(n_classes))
    assert confusion_matrix(p, t, n_classes).tolist() == metrics.confusion_matrix(t, p, labels=labels).tolist()
    assert macro_f1(p, t, n_classes) == pytest.approx(metrics.f1_score(t, p, average="macro", labels=labels))
    assert f1_scores(p, t, n_classes).tolist() == pytest.approx(list(metrics.f1_score(t, p, average=None, labels=labels)))


def test_macro_f1_shows_what_accuracy_hides_on_imbalanced_classes():
    from sklearn import metrics

    from labkit.metrics import accuracy, macro_f1

    t = torch.tensor([0] * 87 + [1] * 13)  # SMS spam's proportions: 13% spam
    always_ham = torch.zeros(100, dtype=torch.long)
    assert accuracy(always_ham, t) == pytest.approx(0.87)
    assert macro_f1(always_ham, t, 2) == pytest.approx(metrics.f1_score(t, always_ham, average="macro", zero_division=0))
    assert macro_f1(always_ham, t, 2) < 0.5
    with pytest.raises(ValueError, match="integer class ids"):
        macro_f1(torch.randn(4, 2), t[:4])
    with pytest.raises(ValueError, match="class ids must lie in 0..1"):
        macro_f1(torch.tensor([0, 2]), torch.tensor([0, 1]), num_classes=2)


def test_frechet_distance_equals_the_formula_computed_with_scipy():
    """Against FID's formula written with scipy's general matrix square root (scipy.linalg.sqrtm, as
    pytorch-fid computes it), on correlated features; and the closed form in one dimension."""
    import numpy as np
    from scipy import linalg

    from labkit.metrics import frechet_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 6, generator=g) @ torch.randn(6, 6, generator=g)
    b = torch.randn(400, 6, generator=g) @ torch.randn(6, 6, generator=g) + 0.5
    mu1, mu2 = a.double().mean(0).numpy(), b.double().mean(0).numpy()
    s1, s2 = np.cov(a.double().numpy(), rowvar=False), np.cov(b.double().numpy(), rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    x, y = torch.randn(20000, 1, generator=g), 3 + 2 * torch.randn(20000, 1, generator=g)
    assert frechet_distance(x, y) == pytest.approx(3**2 + (2 - 1) ** 2, rel=0.03)  # (mu diff)^2 + (s1 - s2)^2
    with pytest.raises(ValueError, match="one width"):
        frechet_distance(a, b[:, :3])


def test_nearest_distance_is_zero_for_copies_and_the_true_distance_otherwise():
    from labkit.metrics import nearest_distance

    refs = torch.tensor([[0.0, 0.0], [3.0, 4.0]]).reshape(2, 1, 1, 2)
    queries = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]]).reshape(3, 1, 1, 2)
    assert torch.allclose(nearest_distance(queries, refs), torch.tensor([0.0, 1.0, 5.0]))
    with pytest.raises(ValueError, match="one size"):
        nearest_distance(queries, torch.zeros(2, 3))


def test_bits_per_byte_converts_a_loss_and_agrees_with_perplexity():
    assert metrics.bits_per_byte(math.log(2), 10, 10) == pytest.approx(1.0)
    assert metrics.bits_per_byte(math.log(256), 100, 100) == pytest.approx(8.0)  # uniform over bytes: 8 bits
    # the same text cut into 4x fewer tokens: 4x the loss per token is the same number of bits per byte
    assert metrics.bits_per_byte(4 * 1.2, 25, 100) == pytest.approx(metrics.bits_per_byte(1.2, 100, 100))
    loss, n_tokens, n_bytes = 2.7, 300, 1000
    bpb = metrics.bits_per_byte(loss, n_tokens, n_bytes)
    assert metrics.perplexity(loss) == pytest.approx(2 ** (bpb * n_bytes / n_tokens))  # per-token perplexity
    with pytest.raises(ValueError, match="positive"):
        metrics.bits_per_byte(1.0, 0, 10)


def test_token_nll_is_lm_loss_token_by_token_and_a_uniform_model_scores_log_v():
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=50, context_length=16))
    data = torch.randint(50, (400,))
    nll, targets = metrics.token_nll(model, data, 16)
    assert len(nll) == len(targets) == (399 // 16) * 16
    assert nll.mean().item() == pytest.approx(metrics.lm_loss(model, data, 16), rel=1e-5)
    assert torch.equal(targets[:16], data[1:17])
    with torch.no_grad():  # all-zero output layer: every token has probability 1/V
        model.lm_head.weight.zero_()
    nll, _ = metrics.token_nll(model, data, 16)
    assert torch.allclose(nll, torch.full_like(nll, math.log(50)), atol=1e-5)
    assert metrics.bits_per_byte(nll.mean().item(), len(nll), len(nll)) == pytest.approx(math.log2(50), rel=1e-5)
