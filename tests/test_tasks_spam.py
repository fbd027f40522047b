"""labkit.tasks.spam (notebook 10's task, for notebook 15): the split is stratified and disjoint, fit() trains a
classifier and records its batch shapes, stored_bytes measures what a task costs on disk."""

import torch

from labkit.models.bert import BERT, BERTConfig
from labkit.models.classify import SequenceClassifier
from labkit.tasks import spam

ROWS = [("spam" if i % 7 == 0 else "ham", f"message {i} " + ("win cash now" if i % 7 == 0 else "see you soon"))
        for i in range(700)]


def test_split_is_notebook_10s_stratified_70_10_20():
    task = spam.spam_task(ROWS)
    assert (len(task.train), len(task.val), len(task.test)) == (490, 70, 140)
    assert not set(task.train) & set(task.test) and not set(task.val) & (set(task.train) | set(task.test))
    for part in (task.train, task.val, task.test):
        assert abs(task.labels[part].float().mean().item() - 1 / 7) < 0.02
    assert spam.spam_task(ROWS).test == task.test  # seeded


def test_fit_learns_the_words_and_records_its_batches():
    torch.manual_seed(0)
    task = spam.spam_task(ROWS)
    vocab = {w: i + 3 for i, w in enumerate(sorted({w for t in task.texts for w in t.split()}))}
    encoded = [[1] + [vocab[w] for w in t.split()] + [2] for t in task.texts]
    cfg = BERTConfig(vocab_size=len(vocab) + 3, context_length=16, n_layers=1, n_heads=2, d_model=32, d_ff=64, dropout=0.0)
    model = SequenceClassifier(BERT(cfg), 2, pooling="mean")
    shapes = []
    history = spam.fit(model, task, task.train, encoded, steps=60, lr=3e-3, shapes=shapes)
    assert len(shapes) == 60 and all(s[0] == 32 for s in shapes)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    probs = spam.class_probs(model, [encoded[i] for i in task.test])
    assert torch.allclose(probs.sum(-1), torch.ones(len(task.test)))
    assert (probs.argmax(-1) == task.labels[task.test]).float().mean() > 0.95
    state = {k: v for k, v in model.state_dict().items() if k.startswith("head")}
    assert spam.stored_bytes(state) < spam.stored_bytes(model.state_dict())
