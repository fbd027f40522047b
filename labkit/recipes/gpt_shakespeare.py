"""The zoo's ``gpt-shakespeare``: its recipes, data, build, train and register, shared with ``benchmarks/``.

``gpt-shakespeare`` is a character-level GPT trained on Tiny Shakespeare with the
lab's fast CPU recipe (``LAB``): rotary positions, a squared-ReLU MLP, and the
Muon optimizer on the transformer blocks' weight matrices with AdamW on the
rest. ``NANOGPT`` is the well-known nanoGPT ``shakespeare_char`` CPU recipe in
the same terms, kept as the baseline. ``benchmarks/pretrain_gpt_cpu.py`` runs
either one and imports everything it needs from here, so the zoo model and the
benchmark train the same way:

    tok, train_data, val_data = shakespeare_data()
    model = build_lm(LAB, tok.vocab_size)
    result = train_lm(model, train_data, LAB)
    evaluate_lm(model, val_data, LAB.context_length)  # mean loss over the whole split

``train_lm`` is ``labkit.train.train`` with ``lm_train_config(recipe)``, the recipe's
optimizer (``lm_optimizer``: ``labkit.optim.MuonAdamW`` or AdamW) and seeded
random windows (``batches``); a notebook can call the same pieces with its own
evaluation and callbacks and get the very same weights.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from ..data import random_windows, read_text, train_val_split
from ..device import get_device
from ..metrics import lm_loss
from ..models.gpt import GPT, GPTConfig
from ..optim import MuonAdamW, decay_groups, split_params
from ..tokenizers import CharTokenizer
from ..train import History, TrainConfig, make_optimizer, train
from . import Recipe

__all__ = ["LMRecipe", "NANOGPT", "LAB", "shakespeare_data", "lm_config", "build_lm", "lm_optimizer",
           "lm_train_config", "batches", "TrainResult", "train_lm",
           "evaluate_lm", "zoo_meta", "build_gpt_shakespeare", "train_gpt_shakespeare", "RECIPE"]


# --- the recipes ------------------------------------------------------------------

@dataclass(frozen=True)
class LMRecipe:
    """Everything that decides how a character-level GPT is trained (one field per lever)."""
    # the model (see GPTConfig)
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads per block
    d_model: int = 128  # width of the residual stream (d_model)
    context_length: int = 64  # context length, in characters
    pos_emb: str = "rope"  # "learned" (GPT-2) or "rope" (rotary)
    mlp: str = "relu2"  # "gelu" (GPT-2) or "relu2" (squared ReLU)
    tie_weights: bool = False  # output layer shares the token-embedding matrix
    bias: bool = False  # biases in Linear and LayerNorm layers
    dropout: float = 0.0
    zero_init: bool = False  # start each block's output projections (c_proj) and the output layer at zero
    # the optimisation
    optimizer: str = "muon"  # "muon": Muon on the blocks' 2-D weights + AdamW on the rest; "adamw": AdamW on all
    steps: int = 500  # optimizer steps (the LR schedule is laid out over these)
    batch_size: int = 48  # windows per step
    lr: float = 3e-3  # AdamW's peak lr (with "muon": embeddings, head, norms and biases only)
    head_lr: float | None = None  # with "muon": a peak lr of its own for an untied output layer (None: lr)
    muon_lr: float = 0.05  # Muon's peak lr (torch's "original" shape adjustment: x sqrt(max(1, rows/cols)))
    muon_momentum: float = 0.95  # Muon's Nesterov momentum
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW's betas
    weight_decay: float = 0.1  # AdamW's decay, on matrices and embeddings only
    muon_weight_decay: float = 0.0  # Muon's decoupled decay (torch's default would be 0.1)
    warmup_steps: int = 50  # linear warmup, then cosine decay
    min_lr_ratio: float = 0.1  # the cosine ends at min_lr_ratio x the peak lr
    grad_clip: float | None = 1.0  # max global gradient norm
    seed: int = 1337  # model initialisation and batch order


# nanoGPT's config/train_shakespeare_char.py with its README's CPU overrides
# (--context_length=64 --batch_size=12 --n_layers=4 --n_heads=4 --d_model=128 --max_iters=2000
# --lr_decay_iters=2000 --dropout=0.0), in GPT-2's architecture.
NANOGPT = LMRecipe(
    pos_emb="learned", mlp="gelu", tie_weights=True, bias=False, dropout=0.0,
    optimizer="adamw", steps=2000, batch_size=12, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1,
    warmup_steps=100, min_lr_ratio=0.1, grad_clip=1.0,
)  # fmt: skip

# The lab's fast recipe: nanoGPT's width and context with 3 blocks of 2 heads instead of 4 of 4
# (cheaper steps: at this budget more steps beat more depth); rotary positions, ReLU^2, an untied
# output layer and zero-initialised output projections; Muon on the blocks' matrices and AdamW at
# a high lr on the rest; a 4x bigger batch to spread Muon's per-step cost over more tokens, and
# 500 steps (the same 1,536,000 training tokens as NANOGPT), which fit in NANOGPT's wall time on a
# 2-core CPU. Each choice is measured against the others in benchmarks/README.md.
LAB = LMRecipe(
    n_layers=3, n_heads=2, d_model=128, context_length=64,
    pos_emb="rope", mlp="relu2", tie_weights=False, bias=False, dropout=0.0, zero_init=True,
    optimizer="muon", steps=500, batch_size=48, lr=3e-2, muon_lr=0.025, muon_momentum=0.9,
    betas=(0.9, 0.99), weight_decay=0.1, muon_weight_decay=0.0, warmup_steps=50, min_lr_ratio=0.1,
    grad_clip=1.0,
)  # fmt: skip


# --- data and model ---------------------------------------------------------------

def shakespeare_data() -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    """The character tokenizer (vocabulary from the whole text) and the first 90% / last 10%
    of Tiny Shakespeare as 1-D long tensors of ids."""
    text = read_text("tinyshakespeare")
    tok = CharTokenizer.from_text(text)
    data = torch.tensor(tok.encode(text), dtype=torch.long)
    train_data, val_data = train_val_split(data, 0.9)
    return tok, train_data, val_data


def lm_config(recipe: LMRecipe, vocab_size: int) -> GPTConfig:
    """The GPTConfig that ``recipe`` describes."""
    return GPTConfig(
        vocab_size=vocab_size, context_length=recipe.context_length, n_layers=recipe.n_layers,
        n_heads=recipe.n_heads, d_model=recipe.d_model, dropout=recipe.dropout, bias=recipe.bias,
        pos_emb=recipe.pos_emb, mlp=recipe.mlp, tie_weights=recipe.tie_weights,
    )  # fmt: skip


def build_lm(recipe: LMRecipe, vocab_size: int) -> GPT:
    """A freshly initialised GPT for ``recipe``, seeded with ``recipe.seed``."""
    torch.manual_seed(recipe.seed)
    model = GPT(lm_config(recipe, vocab_size))
    if recipe.zero_init:  # every block starts as the identity and the first predictions are uniform
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("c_proj.weight") or (name == "lm_head.weight" and not recipe.tie_weights):
                    p.zero_()
    return model


# --- the optimizer (MuonAdamW and split_params live in labkit.optim) -------------------

def lm_optimizer(model: GPT, recipe: LMRecipe) -> torch.optim.Optimizer:
    """AdamW on everything (``optimizer="adamw"``, as nanoGPT) or MuonAdamW (``"muon"``).
    AdamW decays matrices and embeddings but not norm gains or biases, in both."""
    if recipe.optimizer == "adamw":
        return make_optimizer(model, recipe.lr, recipe.weight_decay, recipe.betas)
    if recipe.optimizer != "muon":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {recipe.optimizer!r}")
    muon, rest = split_params(model)
    head = [p for p in rest if p is model.lm_head.weight and not recipe.tie_weights and recipe.head_lr is not None]
    rest = [p for p in rest if not any(p is h for h in head)]
    adamw_groups = decay_groups(rest, recipe.weight_decay) + [
        {"params": head, "weight_decay": recipe.weight_decay, "lr": recipe.head_lr}]
    adamw_groups = [g for g in adamw_groups if g["params"]]
    return MuonAdamW(muon, adamw_groups, muon_lr=recipe.muon_lr, adamw_lr=recipe.lr, betas=recipe.betas,
                     muon_momentum=recipe.muon_momentum, muon_weight_decay=recipe.muon_weight_decay)


# --- training and evaluation ---------------------------------------------------------

@dataclass
class TrainResult:
    """What ``train_lm`` did: steps taken (fewer than planned if time ran out) and time in the loop."""
    steps: int
    seconds: float  # wall time in the training loop (no data preparation, no final evaluation)
    tokens: int  # training tokens seen (steps x batch_size x context_length)
    train_loss: float | None  # mean train loss over the last logged window
    stopped_early: bool  # True when max_seconds ran out before recipe.steps

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def lm_train_config(recipe: LMRecipe, max_seconds: float | None = None, progress: bool = True,
                 eval_every: int = 0, log_every: int = 10) -> TrainConfig:
    """The ``labkit.train.TrainConfig`` that ``recipe`` describes: its steps, warmup-cosine schedule,
    clipping and AdamW settings. ``max_seconds`` is a wall-time budget (the schedule stays laid out
    over ``recipe.steps``); ``eval_every`` 0 evaluates only at the end."""
    return TrainConfig(
        max_steps=recipe.steps, lr=recipe.lr, min_lr_ratio=recipe.min_lr_ratio,
        warmup_steps=recipe.warmup_steps, weight_decay=recipe.weight_decay, betas=recipe.betas,
        grad_clip=recipe.grad_clip, eval_every=eval_every, log_every=log_every, progress=progress,
        desc=f"training ({recipe.optimizer})", max_seconds=max_seconds,
    )  # fmt: skip


def batches(train_data: torch.Tensor, recipe: LMRecipe) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """``get_batch(step)`` for ``labkit.train``: random windows (x, y) of ``train_data``, (batch_size,
    context_length) each, in an order fixed by ``recipe.seed`` alone (evaluation or sampling cannot change it)."""
    gen = torch.Generator().manual_seed(recipe.seed)
    return lambda step: random_windows(train_data, recipe.context_length, recipe.batch_size, gen)


def train_lm(model: GPT, train_data: torch.Tensor, recipe: LMRecipe, max_seconds: float | None = None,
             progress: bool = True, log: Callable[[str], None] | None = None,
             log_every: int = 100) -> TrainResult:
    """Train ``model`` on random windows of ``train_data`` with ``labkit.train`` and the recipe's
    optimizer and warmup-cosine schedule. ``max_seconds`` stops the loop early (the schedule is
    still laid out over ``recipe.steps``). ``log(line)`` gets a progress line every ``log_every`` steps."""
    t0 = time.perf_counter()

    def report(step: int, model: nn.Module, history: History) -> None:
        if step % log_every == 0:
            s = time.perf_counter() - t0
            tps = step * recipe.batch_size * recipe.context_length / s
            log(f"step {step:5d}/{recipe.steps}  train loss {history.train_loss[-1]:.4f}  "
                f"lr {history.lr[-1]:.2e}  {s:6.1f} s  {tps:,.0f} tok/s")

    config = lm_train_config(recipe, max_seconds, progress, log_every=10 if log_every % 10 == 0 else log_every)
    model.train()
    history = train(model, batches(train_data, recipe), config, optimizer=lm_optimizer(model, recipe),
                    on_step=report if log is not None else None)
    seconds = time.perf_counter() - t0
    model.eval()
    steps = history.completed_steps
    last = history.train_loss[-1] if history.train_loss else None
    return TrainResult(steps, seconds, steps * recipe.batch_size * recipe.context_length, last,
                       history.stop_reason == "max_seconds")


def evaluate_lm(model: nn.Module, data: torch.Tensor, context_length: int, batch_size: int = 256) -> float:
    """Mean next-token cross-entropy over every non-overlapping ``context_length`` window of ``data``
    (the whole split, each token predicted once): ``labkit.metrics.lm_loss`` with bigger batches."""
    return lm_loss(model, data, context_length, batch_size)


# --- the zoo's gpt-shakespeare --------------------------------------------------------

def build_gpt_shakespeare(meta: dict) -> GPT:
    """An untrained GPT of the shape saved in ``meta["config"]`` (a GPTConfig as a dict)."""
    return GPT(GPTConfig(**meta["config"]))


def zoo_meta(model: GPT, tok: CharTokenizer, recipe: LMRecipe, val_data: torch.Tensor,
             train_steps: int | None = None) -> dict:
    """What the zoo saves with ``gpt-shakespeare`` (plain types, loadable with ``weights_only=True``): the
    GPTConfig as a dict, the tokenizer's characters, the recipe, the whole-split val loss and the steps taken."""
    recipe_dict = asdict(recipe)
    recipe_dict["betas"] = list(recipe.betas)
    return {"config": asdict(model.config), "chars": list(tok.chars), "recipe": recipe_dict,
            "val_loss": evaluate_lm(model, val_data, recipe.context_length),
            "train_steps": recipe.steps if train_steps is None else train_steps}


def train_gpt_shakespeare(recipe: LMRecipe = LAB, device: torch.device | str | None = None) -> tuple[GPT, dict]:
    """Train the character-level Shakespeare GPT with the lab's recipe on ``device`` (default ``get_device()``);
    ``meta`` is ``zoo_meta``'s."""
    tok, train_data, val_data = shakespeare_data()
    model = build_lm(recipe, tok.vocab_size).to(get_device(device))
    result = train_lm(model, train_data, recipe)
    return model, zoo_meta(model, tok, recipe, val_data, result.steps)


RECIPE = Recipe(
    name="gpt-shakespeare",
    description="character-level GPT (3 layers, 2 heads, 128 wide, 64-character context) trained "
                "on Tiny Shakespeare with the lab's fast CPU recipe (RoPE, ReLU^2, zero init, Muon)",
    build=f"{__name__}:build_gpt_shakespeare", train=f"{__name__}:train_gpt_shakespeare",
    version=3, minutes_cpu=1.5,
)  # fmt: skip
