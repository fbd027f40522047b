"""How good a model is: the measures of the lab, checked against their references.

Language models: ``lm_loss`` (mean cross-entropy over a whole split), ``perplexity``, ``token_nll`` (every token's
loss) and ``bits_per_byte`` (the unit that compares models with different tokenizers). Masked language models:
``evaluate_mlm`` and the ``unigram_baseline`` to beat. Classifiers: ``accuracy``, ``confusion_matrix``, ``f1_scores``,
``macro_f1``. Translation: ``bleu`` (sacrebleu's corpus BLEU, several references). Generated images:
``frechet_distance`` between real and generated samples' features (FID's formula, in any feature space) and
``nearest_distance``, the memorisation check. Calibration is ``labkit.calibration``'s, error bars and association
tests ``labkit.stats``', train/test leakage ``labkit.leakage``'s, FLOP counts ``labkit.perf``'s.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import torch
from torch import nn

from .data import sequential_windows
from .device import module_device, to_device
from .models.bert import masked_batch, mlm_loss

__all__ = ["lm_loss", "perplexity", "token_nll", "bits_per_byte", "accuracy", "confusion_matrix", "f1_scores",
           "macro_f1", "clipped_ngram_matches", "reference_streams", "bleu", "evaluate_mlm", "unigram_baseline",
           "frechet_distance", "nearest_distance"]


@torch.no_grad()
def lm_loss(model: nn.Module, data: torch.Tensor, context_length: int, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over every non-overlapping window of ``data``.

    The model is called as ``model(x, y)`` and returns ``(logits, loss)`` (or an output with ``.loss``); windows are
    weighted by their token count, so the result is the mean over all predicted tokens.
    """
    was_training = model.training
    model.eval()
    device = module_device(model)
    total, count = 0.0, 0
    for x, y in sequential_windows(data, context_length, batch_size):
        out = model(x.to(device), y.to(device))
        loss = out.loss if hasattr(out, "loss") else out[1]
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats): the effective number of equally likely choices per token."""
    return math.exp(loss)


def accuracy(predictions: torch.Tensor | Sequence, targets: torch.Tensor | Sequence) -> float:
    """Fraction of predictions equal to their targets (logits are argmaxed over the last dim)."""
    p, t = torch.as_tensor(predictions), torch.as_tensor(targets)
    if p.dim() == t.dim() + 1:
        p = p.argmax(-1)
    if p.shape != t.shape:
        raise ValueError(f"predictions {tuple(p.shape)} and targets {tuple(t.shape)} must have the same shape")
    return (p == t).float().mean().item()


def _labels(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 1 or t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a 1-D sequence of integer class ids, got {t.dtype} {tuple(t.shape)} "
                         "(take logits.argmax(-1) first)")
    return t.long().cpu()


def confusion_matrix(predictions, targets, num_classes: int | None = None) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class (scikit-learn's layout)."""
    p, t = _labels(predictions, "predictions"), _labels(targets, "targets")
    if p.shape != t.shape:
        raise ValueError(f"predictions {tuple(p.shape)} and targets {tuple(t.shape)} must have the same shape")
    n = num_classes if num_classes is not None else int(max(p.max(), t.max()).item()) + 1 if len(t) else 0
    if len(t) and (min(p.min(), t.min()) < 0 or max(p.max(), t.max()) >= n):
        raise ValueError(f"class ids must lie in 0..{n - 1}")
    return torch.bincount(t * n + p, minlength=n * n).view(n, n)


def f1_scores(predictions, targets, num_classes: int | None = None) -> torch.Tensor:
    """Per-class F1 = 2 precision recall / (precision + recall); 0 for a class never predicted nor present."""
    cm = confusion_matrix(predictions, targets, num_classes).double()
    tp = cm.diag()
    denom = cm.sum(0) + cm.sum(1)  # predicted + actual: 2 tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))


def macro_f1(predictions, targets, num_classes: int | None = None) -> float:
    """The unweighted mean of the per-class F1 scores: every class counts the same, however rare
    (scikit-learn's ``f1_score(average="macro")``)."""
    return f1_scores(predictions, targets, num_classes).mean().item()


def clipped_ngram_matches(hypothesis: Sequence[str], references: Sequence[Sequence[str]], n: int) -> tuple[int, int]:
    """BLEU's modified precision for one tokenised sentence: ``(matches, total)`` over its n-grams, where each
    distinct n-gram counts at most as often as it occurs in the one reference that has it most (Papineni et al.,
    2002: "the the the" against "the cat" matches 1 of 3). A corpus BLEU adds these up over the sentences."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")

    def ngrams(tokens: Sequence[str]) -> Counter:
        return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))

    grams, most = ngrams(hypothesis), Counter()  # most: each n-gram's largest count in any one reference
    for ref in references:
        most |= ngrams(ref)  # Counter union keeps the larger count
    return sum(min(count, most[gram]) for gram, count in grams.items()), sum(grams.values())


def reference_streams(references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacrebleu's layout of references: one stream per reference number, each as long as the corpus.

    ``references`` holds one reference per sentence, or a list of them per sentence (as many as each
    sentence has); a sentence with fewer than the most gets ``None`` in the streams it lacks, which
    sacrebleu skips."""
    if references and isinstance(references[0], str):
        return [list(references)]
    per_sentence = [list(r) for r in references]
    if any(len(r) == 0 for r in per_sentence):
        raise ValueError("every sentence needs at least one reference")
    n = max((len(r) for r in per_sentence), default=0)
    return [[r[i] if i < len(r) else None for r in per_sentence] for i in range(n)]


def bleu(hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0–100) computed by sacrebleu, the field's reference implementation.

    ``references``: one string per hypothesis, or per hypothesis a list of its references (any number)."""
    try:
        import sacrebleu
    except ImportError:
        raise ImportError("BLEU needs sacrebleu: pip install sacrebleu") from None
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: give one reference "
                         "(or one list of references) per hypothesis")
    return sacrebleu.corpus_bleu(list(hypotheses), reference_streams(references)).score


@torch.no_grad()
def token_nll(model: nn.Module, data: torch.Tensor, context_length: int, batch_size: int = 64
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(nll, targets)``: the next-token loss (nats) of every predicted token of ``data`` and that token, over
    the non-overlapping windows ``lm_loss`` uses (its mean is ``lm_loss``). Sum them for the text's total
    information, and divide by the bytes of ``targets`` for bits per byte."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    nll, targets = [], []
    for x, y in sequential_windows(data, context_length, batch_size):
        out = model(x.to(device))
        logits = out.logits if hasattr(out, "logits") else out[0]
        nll.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten().to(device),
                                                     reduction="none").cpu())
        targets.append(y.flatten())
    model.train(was_training)
    return torch.cat(nll), torch.cat(targets)


def bits_per_byte(loss: float, n_tokens: int, n_bytes: int) -> float:
    """A mean loss of ``loss`` nats per token over ``n_tokens`` tokens that spell ``n_bytes`` bytes of text, in
    bits per byte: the text's total information (loss * n_tokens nats), in bits (/ ln 2), per byte. It does not
    depend on how the text was cut into tokens, so it compares models with different tokenizers."""
    if n_tokens <= 0 or n_bytes <= 0:
        raise ValueError(f"n_tokens ({n_tokens}) and n_bytes ({n_bytes}) must be positive: count the predicted "
                         "tokens and the bytes of the text they spell")
    return loss * n_tokens / (math.log(2) * n_bytes)


# --- masked language models ----------------------------------------------------------

@torch.no_grad()
def evaluate_mlm(model: nn.Module, seqs: list[list[int]], tok, mlm_probability: float = 0.15,
                 seed: int = 1234, batch_size: int = 500) -> dict[str, float]:
    """Mean masked-LM loss and accuracy over the masked positions of ``seqs`` (a BERT, its
    ``[CLS] ids [SEP]`` lists and tokenizer), masked with a fixed seed so every call sees the same blanks."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same blanks on every device
    total_loss, correct, count = 0.0, 0, 0
    for i in range(0, len(seqs), batch_size):
        ids, attn, labels = to_device(masked_batch(seqs[i:i + batch_size], tok, mlm_probability, gen), device)
        loss, logits = mlm_loss(model, ids, attn, labels)
        n = int((labels != -100).sum())
        if n == 0:  # nothing was chosen in this (tiny) batch
            continue
        total_loss += loss.item() * n
        correct += int((logits.argmax(-1) == labels[labels != -100]).sum())
        count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("no token was chosen for prediction: pass more (or longer) sentences")
    return {"mlm_loss": total_loss / count, "mlm_accuracy": correct / count, "masked_tokens": count}


def unigram_baseline(train: list[list[int]], val: list[list[int]], tok, mlm_probability: float = 0.15,
                     seed: int = 1234) -> dict[str, float]:
    """What a model that ignores the context scores on ``evaluate_mlm``'s blanks: it predicts the
    training set's token frequencies everywhere (loss) and always its most frequent token (accuracy)."""
    counts = torch.zeros(tok.vocab_size)
    for s in train:
        counts += torch.bincount(torch.tensor(s), minlength=tok.vocab_size)
    counts[: len(tok.special_ids)] = 0  # [CLS] / [SEP] are never blanks
    counts += 1  # add-one smoothing, so that no token has probability 0
    log_p = (counts / counts.sum()).log()
    gen = torch.Generator().manual_seed(seed)
    nll, correct, count = 0.0, 0, 0
    for i in range(0, len(val), 500):
        _, _, labels = masked_batch(val[i:i + 500], tok, mlm_probability, gen)
        y = labels[labels != -100]
        nll -= log_p[y].sum().item()
        correct += int((y == counts.argmax()).sum())
        count += len(y)
    return {"mlm_loss": nll / count, "mlm_accuracy": correct / count,
            "most_frequent": tok.decode([int(counts.argmax())])}


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two sets of features (N, D) and (M, D):
    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the formula of FID (Heusel et al., 2017), here in
    whatever feature space the caller chooses (FID proper uses Inception-v3's). Computed in float64 through
    symmetric square roots, Tr (S_a S_b)^(1/2) = Tr (S_a^(1/2) S_b S_a^(1/2))^(1/2), which stays real."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) feature matrices of one width, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(len(a), len(b)) < 2:
        raise ValueError("need at least 2 samples in each set to estimate a covariance")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _psd_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def nearest_distance(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """For each query (an image or any tensor, batched along dim 0), the Euclidean distance to its nearest
    reference: with the training set as references, a generator that copies its training data scores
    ~0, and one that generalises scores like held-out real data does."""
    q, r = queries.flatten(1).double(), references.flatten(1).double()
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and references must have one size per item, got {q.shape[1]} and {r.shape[1]}")
    return torch.cdist(q, r).min(dim=1).values.float()
