"""Notebook 10's spam task as functions, for the notebooks that measure it again (notebook 15).

Notebook 10 builds these step by step; here they are in one place, with the same choices: the SMS Spam
Collection split 70/10/20 (train/validation/test, stratified, seed 0: 3,901 / 558 / 1,115 messages),
classifiers trained with ``labkit.train`` on a class-weighted cross-entropy (scikit-learn's "balanced"
weights) with AdamW, batches of 32 messages drawn with a seeded generator and padded to their longest::

    task = spam_task()                                     # texts, labels and the split
    encoded = encode_sentences(tok, task.texts, 32)        # BERT's [CLS] ids [SEP]
    history = fit(model, task, task.train, encoded, pad=0) # 300 steps
    probs = class_probs(model, [encoded[i] for i in task.test], pad=0)
"""

from __future__ import annotations

import io
import pickle
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_sms_spam, pad_batch
from ..device import module_device, to_device
from ..metrics import macro_f1
from ..train import History, TrainConfig, train

__all__ = ["SpamTask", "spam_task", "class_probs", "fit", "stored_bytes", "CLASSES"]

CLASSES = ("ham", "spam")


class SpamTask(NamedTuple):
    texts: list[str]
    labels: torch.Tensor  # 1 = spam
    train: list[int]  # indices into texts
    val: list[int]
    test: list[int]


def spam_task(rows: Sequence[tuple[str, str]] | None = None, seed: int = 0) -> SpamTask:
    """The messages, their labels and notebook 10's split (20% test, then 12.5% of the rest for validation)."""
    from sklearn.model_selection import train_test_split

    if rows is None:
        rows = load_sms_spam()
    texts = [t for _, t in rows]
    labels = [int(lab == "spam") for lab, _ in rows]
    train_idx, test_idx = train_test_split(list(range(len(rows))), test_size=0.2, stratify=labels, random_state=seed)
    train_idx, val_idx = train_test_split(train_idx, test_size=0.125, stratify=[labels[i] for i in train_idx],
                                          random_state=seed)
    return SpamTask(texts, torch.tensor(labels), train_idx, val_idx, test_idx)


@torch.no_grad()
def class_probs(model: nn.Module, token_lists: Sequence[Sequence[int]], pad: int = 0, batch_size: int = 500,
                logits: bool = False) -> torch.Tensor:
    """(n, 2) probabilities of ham and spam (or the logits) for n token-id lists, padded on the right."""
    was_training = model.training
    model.eval()
    device = module_device(model)
    out = torch.cat([model(*to_device(pad_batch(list(token_lists[i:i + batch_size]), pad), device)).logits.float().cpu()
                     for i in range(0, len(token_lists), batch_size)])
    model.train(was_training)
    return out if logits else out.softmax(-1)


def fit(model: nn.Module, task: SpamTask, ids: Sequence[int], token_lists: Sequence[Sequence[int]], pad: int = 0,
        steps: int = 300, lr: float = 3e-4, batch_size: int = 32, seed: int = 0, eval_every: int = 0,
        shapes: list | None = None) -> History:
    """Train ``model`` (a ``SequenceClassifier``, its trainable parameters) on the messages ``ids``, as notebook
    10 does; with ``eval_every``, validation macro-F1 is recorded. ``shapes``, a list, gets each batch's
    (batch, length): what the step cost, for counting FLOPs afterwards."""
    y = task.labels
    counts = torch.bincount(y[list(ids)], minlength=2).float()
    class_weight = len(ids) / (2 * counts.clamp(min=1))  # scikit-learn's class_weight="balanced"
    g = torch.Generator().manual_seed(seed)

    def get_batch(step):
        pick = [ids[j] for j in torch.randint(len(ids), (min(batch_size, len(ids)),), generator=g).tolist()]
        x, mask = pad_batch([list(token_lists[i]) for i in pick], pad)
        if shapes is not None:
            shapes.append(tuple(x.shape))
        return x, mask, y[pick]

    def loss_fn(model, batch):
        x, mask, target = batch
        return F.cross_entropy(model(x, mask).logits, target, weight=class_weight.to(target.device))

    def val_f1(model):
        probs = class_probs(model, [token_lists[i] for i in task.val], pad)
        return {"val_macro_f1": macro_f1(probs.argmax(-1), y[task.val], 2)}

    config = TrainConfig(max_steps=steps, lr=lr, warmup_steps=10, weight_decay=0.01, eval_every=eval_every,
                         progress=False)
    return train(model, get_batch, config, eval_fn=val_f1 if eval_every else None, loss_fn=loss_fn)


def stored_bytes(obj) -> int:
    """What one more task costs on disk: a state dict through ``torch.save``, anything else pickled."""
    buf = io.BytesIO()
    torch.save(obj, buf) if isinstance(obj, dict) else pickle.dump(obj, buf)
    return buf.getbuffer().nbytes
