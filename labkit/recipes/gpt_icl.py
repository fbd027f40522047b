"""The zoo's ``gpt-icl``: a small GPT that learns a new task from the examples in its context (notebook 11).

The tasks (random permutations shown as input→output examples, split into training and held-out tasks) and their
measures (accuracy by number of examples, copying vs inference, induction scores) are ``labkit.tasks.icl``'s; this
module is the model and its training::

    model, meta = train_gpt_icl()           # or zoo.load("gpt-icl"); about 45 s on a 2-core CPU
    seqs, _ = sample_sequences(ICL, 512, torch.Generator().manual_seed(0), held_out=True)
    icl_accuracy(model, seqs, ICL)["by_shot"]     # accuracy after 0, 1, 2, ... examples
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..device import get_device
from ..models.gpt import GPT, GPTConfig
from ..optim import MuonAdamW, decay_groups, split_params
from ..tasks.icl import icl_accuracy, icl_batch, icl_loss, induction_scores, sample_sequences
from ..train import TrainConfig, make_optimizer, train
from . import Recipe

__all__ = ["ICLRecipe", "ICL", "icl_config", "build_icl_model", "icl_optimizer", "icl_train_config", "train_gpt_icl",
           "build_gpt_icl", "RECIPE"]


@dataclass(frozen=True)
class ICLRecipe:
    """The task family, the model and its training (one field per lever)."""

    # the tasks
    n_symbols: int = 8  # symbols per side: a task is a permutation of them (8! = 40,320 tasks)
    n_pairs: int = 16  # input→output examples per sequence (2 * n_pairs tokens)
    held_out_every: int = 10  # permutations whose lexicographic rank is a multiple of this are held out
    # the model (see GPTConfig)
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 128
    pos_emb: str = "rope"  # rotary: "the token before me" is one relative offset, whatever the position
    mlp: str = "none"  # attention only, as in Olsson et al.: copying has to be done by attention
    # the optimisation
    optimizer: str = "muon"  # "muon": Muon on the blocks' matrices + AdamW on the rest; or "adamw" on everything
    muon_lr: float = 0.02  # Muon's peak lr (with optimizer="muon")
    muon_weight_decay: float = 0.5  # decoupled decay on the blocks' matrices: one sharp head, not many soft ones
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0
    eval_every: int = 50  # steps between looks at the held-out tasks (loss, accuracy, induction scores)
    n_eval: int = 256  # held-out sequences per look
    seed: int = 0

    @property
    def vocab_size(self) -> int:
        return 2 * self.n_symbols

    @property
    def context_length(self) -> int:
        return 2 * self.n_pairs - 1  # the model reads every token but the last output


ICL = ICLRecipe()


# --- the model -----------------------------------------------------------------------


def icl_config(recipe: ICLRecipe) -> GPTConfig:
    return GPTConfig(vocab_size=recipe.vocab_size, context_length=recipe.context_length + 1, n_layers=recipe.n_layers,
                     n_heads=recipe.n_heads, d_model=recipe.d_model, pos_emb=recipe.pos_emb, mlp=recipe.mlp,
                     dropout=0.0, bias=True, tie_weights=False)


def build_icl_model(recipe: ICLRecipe) -> GPT:
    torch.manual_seed(recipe.seed)
    return GPT(icl_config(recipe))


# --- training ----------------------------------------------------------------------


def icl_optimizer(model: GPT, recipe: ICLRecipe) -> torch.optim.Optimizer:
    """AdamW on everything, or (``optimizer="muon"``) Muon on the blocks' weight matrices and AdamW on the rest."""
    if recipe.optimizer == "adamw":
        return make_optimizer(model, recipe.lr, recipe.weight_decay, (0.9, 0.98))
    if recipe.optimizer != "muon":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {recipe.optimizer!r}")
    muon, rest = split_params(model)
    return MuonAdamW(muon, decay_groups(rest, recipe.weight_decay), muon_lr=recipe.muon_lr, adamw_lr=recipe.lr,
                     betas=(0.9, 0.98), muon_weight_decay=recipe.muon_weight_decay)


def icl_train_config(recipe: ICLRecipe, progress: bool = True) -> TrainConfig:
    return TrainConfig(max_steps=recipe.steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                       min_lr_ratio=recipe.min_lr_ratio, weight_decay=recipe.weight_decay, betas=(0.9, 0.98),
                       grad_clip=recipe.grad_clip, eval_every=recipe.eval_every, log_every=10, progress=progress,
                       desc="training gpt-icl")


def train_gpt_icl(recipe: ICLRecipe = ICL, progress: bool = True, on_eval=None,
                  device: torch.device | str | None = None) -> tuple[GPT, dict]:
    """Train ``gpt-icl``. At every evaluation, on the same held-out tasks: the loss, the accuracy on queries
    seen / unseen in the context (8 or more examples in), and every head's prefix-matching score (keys
    ``"induction.<layer>.<head>"``), so the history shows when the induction head forms. It trains on ``device``
    (default ``get_device()``)."""
    model = build_icl_model(recipe).to(get_device(device))
    gen = torch.Generator().manual_seed(recipe.seed)
    eval_seqs, _ = sample_sequences(recipe, recipe.n_eval, torch.Generator().manual_seed(recipe.seed + 1),
                                    held_out=True)

    def get_batch(step: int):
        return icl_batch(sample_sequences(recipe, recipe.batch_size, gen)[0], recipe.n_symbols)

    def eval_fn(model):
        acc = icl_accuracy(model, eval_seqs, recipe)
        late = slice(8, None)
        seen, n_seen = torch.tensor(acc["seen"][late]), torch.tensor(acc["n_seen"][late], dtype=torch.float)
        metrics = {"val_loss": icl_loss(model, eval_seqs, recipe),
                   "seen_acc_8plus": float((seen * n_seen).sum() / n_seen.sum()),
                   "unseen_acc": acc["unseen_overall"]}
        scores = induction_scores(model, eval_seqs, recipe)
        for layer in range(scores.size(0)):
            for head in range(scores.size(1)):
                metrics[f"induction.{layer}.{head}"] = float(scores[layer, head])
        return metrics

    optimizer = icl_optimizer(model, recipe)
    history = train(model, get_batch, icl_train_config(recipe, progress), eval_fn=eval_fn, optimizer=optimizer,
                    on_eval=on_eval)
    final_seqs, _ = sample_sequences(recipe, 2048, torch.Generator().manual_seed(recipe.seed + 2), held_out=True)
    meta = {"config": asdict(model.config), "recipe": asdict(recipe),
            "history": {"steps": history.steps, "train_loss": history.train_loss,
                        "eval_steps": history.eval_steps, "eval": history.eval},
            "final": icl_accuracy(model, final_seqs, recipe),
            "induction": induction_scores(model, final_seqs, recipe).tolist(),
            "train_seconds": history.seconds}
    return model.eval(), meta


def build_gpt_icl(meta: dict) -> GPT:
    """An untrained ``gpt-icl`` of the shape saved in ``meta["config"]``."""
    return GPT(GPTConfig(**meta["config"]))


RECIPE = Recipe(
    name="gpt-icl",
    description="2-layer attention-only GPT trained on in-context tasks (random permutations of 8 symbols, shown as "
                "input-output examples); tasks split by permutation, so evaluation is on unseen mappings",
    build=f"{__name__}:build_gpt_icl", train=f"{__name__}:train_gpt_icl",
    version=3, minutes_cpu=1,
)  # fmt: skip
