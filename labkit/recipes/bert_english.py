"""The zoo's ``bert-english``: a small BERT pretrained by masked language modelling on everyday English.

The data are the English sentences of the Tatoeba English-French pairs (the ones
notebook 07 translates), each kept once (many repeat) and shuffled with a fixed
seed; the first ``n_val`` are held out. A byte-level BPE tokenizer with BERT's
special tokens is trained on the training sentences, every sentence becomes
``[CLS] tokens [SEP]``, and each step masks a fresh random batch 80/10/10
(``labkit.models.bert.mask_tokens``):

    recipe = BERT_ENGLISH
    data = mlm_data(recipe)                       # tokenizer, train and val sentences as id lists
    model, meta = train_bert_english(recipe)      # what ``zoo.load("bert-english")`` runs once
    tok = load_bert_tokenizer(meta)

The loss is computed on the masked positions only (``labkit.models.bert.mlm_loss``:
the output layer runs on the ~15% of positions that have a label, which is most of
the saving on a CPU); it equals ``BERT(...).loss``. ``labkit.metrics.evaluate_mlm``
scores a fixed, seeded masking of the held-out sentences, so that every evaluation
sees the same blanks. The batches are ``labkit.models.bert.masked_batch`` over
``labkit.data.length_grouped_batches``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import NamedTuple

import torch

from ..data import length_grouped_batches, load_fra_eng
from ..device import get_device
from ..metrics import evaluate_mlm, unigram_baseline
from ..models.bert import BERT, BERTConfig, masked_batch, mlm_loss
from ..optim import MuonAdamW, decay_groups, split_params
from ..tokenizers import BERT_SPECIAL_TOKENS, BPETokenizer
from ..train import TrainConfig, make_optimizer, train
from . import Recipe

__all__ = ["BERTRecipe", "BERT_ENGLISH", "MLMData", "english_sentences", "split_sentences", "encode_sentences",
           "mlm_data", "bert_config", "bert_optimizer", "bert_train_config", "build_bert_english", "load_bert_tokenizer",
           "train_bert_english", "RECIPE"]


@dataclass(frozen=True)
class BERTRecipe:
    """Everything that decides how ``bert-english`` is trained (one field per lever)."""
    # the data and tokenizer
    vocab_size: int = 3000  # byte-level BPE vocabulary, special tokens included
    context_length: int = 32  # longest input in tokens, [CLS] and [SEP] included (longer sentences are cut)
    n_val: int = 3000  # held-out sentences (never trained on)
    # the model (see BERTConfig)
    n_layers: int = 3  # 3 blocks beat 4 in the same CPU time (40% vs 37% held-out accuracy)
    n_heads: int = 4
    d_model: int = 128
    d_ff: int = 512
    dropout: float = 0.0  # no dropout: three passes over 95k sentences do not overfit a model this small
    # the optimisation
    mlm_probability: float = 0.15  # fraction of tokens chosen for prediction (BERT: 15%)
    steps: int = 600  # optimizer steps
    batch_size: int = 512  # sentences per step
    optimizer: str = "muon"  # "muon": Muon on the blocks' weight matrices + AdamW on the rest; "adamw": AdamW on all
    lr: float = 2e-3  # peak AdamW learning rate
    muon_lr: float = 0.02  # peak Muon learning rate
    warmup_steps: int = 50  # linear warmup, then cosine decay
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01  # BERT's decay
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float | None = 1.0
    eval_every: int = 50  # steps between held-out evaluations (on the first 1,000 val sentences)
    seed: int = 0  # data split, initialisation, batch order and masking


BERT_ENGLISH = BERTRecipe()


# --- data ---------------------------------------------------------------------------

def english_sentences() -> list[str]:
    """The English side of the Tatoeba English-French pairs, each distinct sentence once, in file order."""
    return list(dict.fromkeys(en for en, _ in load_fra_eng()))


def split_sentences(sentences: list[str], n_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed`` and return (train, val), the first ``n_val`` being val."""
    order = list(sentences)
    random.Random(seed).shuffle(order)
    return order[n_val:], order[:n_val]


def encode_sentences(tok: BPETokenizer, sentences: list[str], context_length: int) -> list[list[int]]:
    """``[CLS] ids [SEP]`` for each sentence, cut to ``context_length`` tokens in all."""
    cls_id, sep_id = tok.special_ids["[CLS]"], tok.special_ids["[SEP]"]
    return [[cls_id] + ids[: context_length - 2] + [sep_id] for ids in tok.encode_batch(sentences)]


class MLMData(NamedTuple):
    tokenizer: BPETokenizer
    train: list[list[int]]  # training sentences as [CLS] ids [SEP]
    val: list[list[int]]  # held-out sentences as [CLS] ids [SEP]
    train_text: list[str]
    val_text: list[str]


@lru_cache(maxsize=2)
def mlm_data(recipe: BERTRecipe = BERT_ENGLISH) -> MLMData:
    """Split the sentences, train the tokenizer on the training part, encode both parts.
    The result is cached per recipe (one tokenizer training per session): treat it as read-only."""
    train_text, val_text = split_sentences(english_sentences(), recipe.n_val, recipe.seed)
    tok = BPETokenizer.train(train_text, recipe.vocab_size, special_tokens=BERT_SPECIAL_TOKENS)
    return MLMData(tok, encode_sentences(tok, train_text, recipe.context_length),
                   encode_sentences(tok, val_text, recipe.context_length), train_text, val_text)


def bert_config(recipe: BERTRecipe, vocab_size: int) -> BERTConfig:
    """The BERTConfig that ``recipe`` describes."""
    return BERTConfig(vocab_size=vocab_size, context_length=recipe.context_length, n_layers=recipe.n_layers,
                      n_heads=recipe.n_heads, d_model=recipe.d_model, d_ff=recipe.d_ff, dropout=recipe.dropout)


def build_bert_english(meta: dict) -> BERT:
    """An untrained BERT of the shape saved in ``meta["config"]`` (a BERTConfig as a dict)."""
    return BERT(BERTConfig(**meta["config"]))


def load_bert_tokenizer(meta: dict) -> BPETokenizer:
    """The tokenizer saved in ``meta["tokenizer"]`` (a Hugging Face tokenizer.json string)."""
    from tokenizers import Tokenizer

    return BPETokenizer(Tokenizer.from_str(meta["tokenizer"]))


def bert_optimizer(model: BERT, recipe: BERTRecipe) -> torch.optim.Optimizer:
    """AdamW (decaying matrices and embeddings, not biases or norm gains), or with
    ``optimizer="muon"`` Muon on the encoder blocks' weight matrices and AdamW on the rest."""
    if recipe.optimizer == "adamw":
        return make_optimizer(model, recipe.lr, recipe.weight_decay, recipe.betas)
    if recipe.optimizer != "muon":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {recipe.optimizer!r}")

    muon, rest = split_params(model, model.blocks)
    return MuonAdamW(muon, decay_groups(rest, recipe.weight_decay), muon_lr=recipe.muon_lr, adamw_lr=recipe.lr,
                     betas=recipe.betas)


def bert_train_config(recipe: BERTRecipe, progress: bool = True) -> TrainConfig:
    """The ``labkit.train.TrainConfig`` that ``recipe`` describes (steps, schedule, clipping, evaluations)."""
    return TrainConfig(max_steps=recipe.steps, lr=recipe.lr, min_lr_ratio=recipe.min_lr_ratio,
                       warmup_steps=recipe.warmup_steps, weight_decay=recipe.weight_decay,
                       betas=recipe.betas, grad_clip=recipe.grad_clip, eval_every=recipe.eval_every,
                       log_every=10, progress=progress, desc="pretraining bert-english")


def train_bert_english(recipe: BERTRecipe = BERT_ENGLISH, progress: bool = True,
                       device: torch.device | str | None = None) -> tuple[BERT, dict]:
    """Pretrain ``bert-english`` with ``recipe`` on ``device`` (default ``get_device()``). ``meta`` holds the
    BERTConfig as a dict, the tokenizer (JSON), the recipe, the training curves and the final held-out MLM loss
    and accuracy."""
    data = mlm_data(recipe)
    tok = data.tokenizer
    torch.manual_seed(recipe.seed)
    model = BERT(bert_config(recipe, tok.vocab_size)).to(get_device(device))
    gen = torch.Generator().manual_seed(recipe.seed)
    eval_subset = data.val[:1000]  # a quick look during training; the end uses all of val

    batches = length_grouped_batches(data.train, recipe.batch_size, gen)

    def get_batch(step: int):
        return masked_batch(next(batches), tok, recipe.mlm_probability, gen)

    def loss_fn(model, batch):
        return mlm_loss(model, *batch)[0]

    def eval_fn(model):
        r = evaluate_mlm(model, eval_subset, tok, recipe.mlm_probability)
        return {"val_loss": r["mlm_loss"], "val_accuracy": r["mlm_accuracy"]}

    history = train(model, get_batch, bert_train_config(recipe, progress), eval_fn=eval_fn, loss_fn=loss_fn,
                    optimizer=bert_optimizer(model, recipe))
    final = evaluate_mlm(model, data.val, tok, recipe.mlm_probability)
    baseline = unigram_baseline(data.train, data.val, tok, recipe.mlm_probability)
    recipe_dict = asdict(recipe)
    recipe_dict["betas"] = list(recipe.betas)
    meta = {
        "config": asdict(model.config),
        "tokenizer": tok.hf_tokenizer.to_str(),
        "recipe": recipe_dict,
        "history": {"steps": history.steps, "train_loss": history.train_loss, "eval_steps": history.eval_steps,
                    "val_loss": history.eval["val_loss"], "val_accuracy": history.eval["val_accuracy"]},
        "val": final,
        "unigram": baseline,
        "train_seconds": history.seconds,
        "train_sentences": len(data.train),
    }
    return model.eval(), meta


RECIPE = Recipe(
    name="bert-english",
    description="small BERT (3 layers, 128 wide, 3000-token byte-level BPE) pretrained by masked "
                "language modelling on the English sentences of the Tatoeba English-French pairs",
    build=f"{__name__}:build_bert_english", train=f"{__name__}:train_bert_english",
    version=2, minutes_cpu=2.5,
)  # fmt: skip
