"""Evaluation: perplexity for language models, accuracy for classifiers, BLEU for translation.

Intrinsic evaluation asks how well a model predicts held-out text (perplexity,
masked-LM loss and accuracy, and the unigram baseline to beat); extrinsic
evaluation asks how well it does a task (accuracy, BLEU). ``mean_pool`` turns
an encoder's hidden states into one vector per sentence. For generative models of images:
``frechet_distance`` between real and generated samples' features (FID's formula, in any
feature space) and ``nearest_distance``, the memorisation check.

Notebook 15's tools: ``token_nll`` (every token's loss, to turn into ``bits_per_byte``, the unit that compares
models with different tokenizers); ``calibration_bins`` and ``expected_calibration_error`` (the reliability
diagram) with ``fit_temperature``; ``bootstrap_ci`` and ``paired_bootstrap`` (error bars and whether a
difference is real); ``near_duplicates`` (train/test leakage); ``training_flops`` (``FlopCounterMode``) against
``analytic_training_flops`` (6·N·tokens, with ``matmul_params`` as N); ``weat`` (an association test with its
permutation p-value).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .data import masked_batch, pad_batch, sequential_windows

__all__ = ["lm_loss", "perplexity", "accuracy", "bleu", "reference_streams", "confusion_matrix", "f1_scores", "macro_f1", "evaluate_mlm", "unigram_baseline", "mean_pool",
           "frechet_distance", "nearest_distance", "token_nll", "bits_per_byte", "calibration_bins",
           "expected_calibration_error", "fit_temperature", "bootstrap_ci", "paired_bootstrap", "normalise_text",
           "near_duplicates", "matmul_params", "training_flops", "analytic_training_flops", "weat"]


@torch.no_grad()
def lm_loss(model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over every non-overlapping window of ``data``.

    The model is called as ``model(x, y)`` and returns ``(logits, loss)`` (or an output with ``.loss``); windows are
    weighted by their token count, so the result is the mean over all predicted tokens.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in sequential_windows(data, block_size, batch_size):
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


# --- masked language models ----------------------------------------------------------

@torch.no_grad()
def evaluate_mlm(model: nn.Module, seqs: list[list[int]], tok, mlm_probability: float = 0.15,
                 seed: int = 1234, batch_size: int = 500) -> dict[str, float]:
    """Mean masked-LM loss and accuracy over the masked positions of ``seqs`` (a BERT, its
    ``[CLS] ids [SEP]`` lists and tokenizer), masked with a fixed seed so every call sees the same blanks."""
    from .models.bert import mlm_loss

    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total_loss, correct, count = 0.0, 0, 0
    for i in range(0, len(seqs), batch_size):
        ids, attn, labels = masked_batch(seqs[i:i + batch_size], tok, mlm_probability, gen)
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


@torch.no_grad()
def mean_pool(model: nn.Module, seqs: list[list[int]], pad_id: int = 0, batch_size: int = 500) -> torch.Tensor:
    """One vector per sentence (N, d_model): the mean of ``model.encode``'s last hidden states over
    the sentence's real tokens ([CLS] and [SEP] included, padding left out)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(seqs), batch_size):
        ids, attn = pad_batch(seqs[i:i + batch_size], pad_id)
        h = model.encode(ids, attn)  # (B, T, d)
        m = attn.unsqueeze(-1).float()  # (B, T, 1): 1 on real tokens, 0 on padding
        out.append((h * m).sum(1) / m.sum(1))  # (B, d)
    model.train(was_training)
    return torch.cat(out)


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


# --- notebook 15: intrinsic evaluation in bits, calibration ---------------------------------------------------


@torch.no_grad()
def token_nll(model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int = 64
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(nll, targets)``: the next-token loss (nats) of every predicted token of ``data`` and that token, over
    the non-overlapping windows ``lm_loss`` uses (its mean is ``lm_loss``). Sum them for the text's total
    information, and divide by the bytes of ``targets`` for bits per byte."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, targets = [], []
    for x, y in sequential_windows(data, block_size, batch_size):
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


def _confidence_and_correct(confidences, correct) -> tuple[torch.Tensor, torch.Tensor]:
    conf = torch.as_tensor(confidences, dtype=torch.float64).flatten()
    hit = torch.as_tensor(correct).flatten().to(torch.float64)
    if conf.shape != hit.shape:
        raise ValueError(f"confidences ({conf.numel()}) and correct ({hit.numel()}) must have one entry per prediction")
    if conf.numel() == 0:
        raise ValueError("no predictions to calibrate")
    if conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidences must be probabilities in [0, 1] (the probability of the predicted class)")
    return conf, hit


def calibration_bins(confidences, correct, n_bins: int = 15) -> dict:
    """The reliability diagram's numbers: predictions put in ``n_bins`` equal-width bins of confidence (bin m
    holds (m-1)/M < confidence <= m/M; a confidence of 0 goes in the first), and per bin the mean confidence,
    the accuracy and the count (empty bins: nan, nan, 0)."""
    conf, hit = _confidence_and_correct(confidences, correct)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    which = (torch.bucketize(conf, edges[1:-1], right=False)).clamp(0, n_bins - 1)  # (lo, hi] bins
    count = torch.bincount(which, minlength=n_bins).to(torch.float64)
    mean_conf = torch.bincount(which, conf, minlength=n_bins) / count
    acc = torch.bincount(which, hit, minlength=n_bins) / count
    return {"edges": edges, "confidence": mean_conf, "accuracy": acc, "count": count.long()}


def expected_calibration_error(confidences, correct, n_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): sum over the bins of (bin's share of the predictions) x |accuracy - mean confidence|.
    0 for a predictor whose confidence is its accuracy in every bin."""
    b = calibration_bins(confidences, correct, n_bins)
    n, keep = b["count"].sum().item(), b["count"] > 0
    gap = (b["accuracy"][keep] - b["confidence"][keep]).abs()
    return float((b["count"][keep] / n * gap).sum())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """The temperature T > 0 that minimises the cross-entropy of softmax(logits / T) on held-out (validation)
    ``labels``: temperature scaling, the one-parameter fix for over- or under-confidence."""
    logits, labels = logits.detach().double(), torch.as_tensor(labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


# --- error bars ------------------------------------------------------------------------------------------------


def bootstrap_ci(metric, predictions, targets, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
    """``(value, low, high)``: ``metric(predictions, targets)`` and its percentile bootstrap interval (the test
    set resampled with replacement ``n_resamples`` times): how much the figure owes to which examples were drawn."""
    p, t = torch.as_tensor(predictions), torch.as_tensor(targets)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(t), (n_resamples, len(t)), generator=g)
    values = torch.tensor([metric(p[i], t[i]) for i in idx])
    a = (1 - level) / 2
    return float(metric(p, t)), float(values.quantile(a)), float(values.quantile(1 - a))


def paired_bootstrap(metric, predictions_a, predictions_b, targets, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Is model A better than model B on this test set? The difference ``metric(A) - metric(B)`` on the same
    bootstrap resamples: its value, 95% interval, and the share of resamples where A is not better (a one-sided
    p-value)."""
    a, b, t = torch.as_tensor(predictions_a), torch.as_tensor(predictions_b), torch.as_tensor(targets)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(t), (n_resamples, len(t)), generator=g)
    diffs = torch.tensor([metric(a[i], t[i]) - metric(b[i], t[i]) for i in idx])
    return {"difference": float(metric(a, t) - metric(b, t)), "low": float(diffs.quantile(0.025)),
            "high": float(diffs.quantile(0.975)), "p_not_better": float((diffs <= 0).double().mean())}


# --- leakage ---------------------------------------------------------------------------------------------------


def normalise_text(text: str) -> tuple[str, ...]:
    """A sentence as the words that matter for duplicate-finding: lower case, punctuation dropped."""
    import re

    return tuple(re.findall(r"[^\W_]+(?:'[^\W_]+)?", text.lower()))


def _within_one_edit(a: tuple, b: tuple) -> bool:
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1:]


def near_duplicates(queries, corpus, max_edits: int = 1, min_words: int = 3) -> list[tuple[str, int]]:
    """For each query sentence, whether ``corpus`` holds a copy: ``("exact", j)`` when corpus[j] has the same
    words (``normalise_text``: case and punctuation ignored), ``("near", j)`` when it is one word away (one word
    substituted, inserted or deleted; with ``max_edits=1``, for queries of at least ``min_words`` words), else
    ``("none", -1)``. Exact matching is a dictionary lookup; near matching indexes every corpus sentence under
    each of its one-word deletions (two sentences one edit apart share such a key), then checks the candidates;
    ``j`` is the first match in the corpus (the same on every run, whatever Python's hash seed)."""
    if max_edits not in (0, 1):
        raise ValueError(f"max_edits must be 0 (exact) or 1 (one word away), not {max_edits}")
    norm = [normalise_text(s) for s in corpus]
    exact: dict[tuple, int] = {}
    for j, w in enumerate(norm):
        exact.setdefault(w, j)
    keys: dict[tuple, list[int]] = {}
    if max_edits:
        for j, w in enumerate(norm):
            for key in {w, *(w[:i] + w[i + 1:] for i in range(len(w)))}:
                keys.setdefault(key, []).append(j)
    out = []
    for q in queries:
        w = normalise_text(q)
        if w in exact:
            out.append(("exact", exact[w]))
            continue
        found = -1
        if max_edits and len(w) >= min_words:
            candidates = sorted({j for key in (w, *(w[:i] + w[i + 1:] for i in range(len(w)))) for j in keys.get(key, ())})
            found = next((j for j in candidates if _within_one_edit(w, norm[j])), -1)  # the first in the corpus
        out.append(("near", found) if found >= 0 else ("none", -1))
    return out


# --- the cost of training --------------------------------------------------------------------------------------


def matmul_params(model: nn.Module, trainable_only: bool = False) -> int:
    """N of the 6·N·tokens rule: the weights of the model's ``nn.Linear`` layers (a matmul each per token; an
    embedding lookup and a norm are not matmuls), and LoRA's A and B beside them."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    weights += [p for m in model.modules() if hasattr(m, "lora_A") for p in (m.lora_A, m.lora_B)]
    return sum(w.numel() for w in weights if w.requires_grad or not trainable_only)


def training_flops(step, *args, **kwargs) -> int:
    """The floating-point operations ``step(*args, **kwargs)`` runs (a forward and backward pass, say), counted
    by ``torch.utils.flop_counter.FlopCounterMode``: every matmul, convolution and attention kernel that has a
    FLOP formula (a multiply-add is 2). PyTorch's CPU fused attention has none: on the CPU, run the model's
    explicit attention (``fused_attention=False``) to count the attention scores as well."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(*args, **kwargs)
    return int(counter.get_total_flops())


def analytic_training_flops(n_params: int, n_tokens: int, n_trainable: int | None = None) -> int:
    """6·N·tokens: per token, a forward pass costs 2N (a multiply and an add per weight), the backward pass 2N
    for the gradient of the activations and 2N for the gradient of the weights. With frozen weights
    (``n_trainable`` < N, as in LoRA) the weight gradients cost only 2·n_trainable: 4N + 2·n_trainable."""
    if n_trainable is None:
        n_trainable = n_params
    return int((4 * n_params + 2 * n_trainable) * n_tokens)


# --- association tests -----------------------------------------------------------------------------------------


def weat(X: torch.Tensor, Y: torch.Tensor, A: torch.Tensor, B: torch.Tensor, n_permutations: int = 10_000,
         seed: int = 0) -> dict:
    """The Word Embedding Association Test (Caliskan et al., 2017) on embeddings (rows): target sets X, Y and
    attribute sets A, B. s(w) = mean cos(w, A) - mean cos(w, B); the effect size is
    (mean s over X - mean s over Y) / std of s over X and Y; the p-value is the share of random equal-size
    re-splits of X and Y whose statistic sum s(X) - sum s(Y) is at least the observed one."""
    def unit(m):
        return torch.nn.functional.normalize(torch.as_tensor(m, dtype=torch.float64), dim=-1)

    X, Y, A, B = map(unit, (X, Y, A, B))
    if min(len(X), len(Y), len(A), len(B)) < 2:
        raise ValueError("each of the four word sets needs at least 2 embeddings")
    targets = torch.cat([X, Y])
    s = (targets @ A.T).mean(1) - (targets @ B.T).mean(1)
    sx, sy = s[: len(X)], s[len(X):]
    stat = sx.sum() - sy.sum()
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(len(s), generator=g) for _ in range(n_permutations)])
    in_x = perms[:, : len(X)]
    perm_stat = 2 * s[in_x].sum(1) - s.sum()  # sum over the new X minus sum over the new Y
    return {"effect_size": float((sx.mean() - sy.mean()) / s.std()), "statistic": float(stat),
            "p_value": float((perm_stat >= stat - 1e-12).double().mean()), "s": s}
