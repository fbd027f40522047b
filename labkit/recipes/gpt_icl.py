"""The zoo's ``gpt-icl``: a small GPT that learns a new task from the examples in its context (notebook 11).

Every training sequence is one **task**, a random permutation π of ``n_symbols`` symbols, shown as
``n_pairs`` input→output examples side by side::

    x1 π(x1) x2 π(x2) ... x16 π(x16)        inputs are tokens 0..n-1, outputs n..2n-1

The inputs are drawn at random (with repeats), so π is never written down: to predict π(x_k) the model
must read it off the examples before it. Nothing else can help — over all tasks every output is
equally likely — so a model that ignores its context scores 1/n, and a model that does better has
learned in context. A query whose input already appeared in the context can be answered by
**copying** (find the earlier x, output what followed it: an induction head); one whose input did not
can only be **inferred** (by elimination: a permutation never repeats an output).

Tasks are split by permutation: every ``held_out_every``-th permutation in lexicographic order (4,032
of the 40,320 for 8 symbols) is held out, never drawn for training, and all evaluation uses them.

    model, meta = train_gpt_icl()           # or zoo.load("gpt-icl"); about 45 s on a 2-core CPU
    seq, perms = sample_sequences(ICL, 512, torch.Generator().manual_seed(0), held_out=True)
    icl_accuracy(model, seq, ICL)["by_shot"]     # accuracy after 0, 1, 2, ... examples
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import capture_attention, prefix_matching_score
from ..models.gpt import GPT, GPTConfig
from ..optim import MuonAdamW, decay_groups, split_params
from ..train import TrainConfig, make_optimizer, train

__all__ = ["ICLRecipe", "ICL", "all_permutations", "task_ranks", "sample_sequences", "icl_batch", "gpt_config",
           "few_shot_prompt", "build_model", "build_optimizer", "icl_accuracy", "icl_loss", "induction_scores", "train_config", "train_gpt_icl",
           "build_gpt_icl", "register"]


@dataclass(frozen=True)
class ICLRecipe:
    """The task family, the model and its training (one field per lever)."""

    # the tasks
    n_symbols: int = 8  # symbols per side: a task is a permutation of them (8! = 40,320 tasks)
    n_pairs: int = 16  # input→output examples per sequence (2 * n_pairs tokens)
    held_out_every: int = 10  # permutations whose lexicographic rank is a multiple of this are held out
    # the model (see GPTConfig)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
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
    def block_size(self) -> int:
        return 2 * self.n_pairs - 1  # the model reads every token but the last output


ICL = ICLRecipe()


# --- the tasks ---------------------------------------------------------------------


@lru_cache(maxsize=4)
def all_permutations(n: int) -> torch.Tensor:
    """Every permutation of range(n), in lexicographic order: (n!, n); row r is the permutation of rank r."""
    if not 2 <= n <= 9:
        raise ValueError(f"n_symbols must be between 2 and 9 (n! tasks are listed in memory), got {n}")
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)


@lru_cache(maxsize=8)
def task_ranks(n: int, held_out_every: int, held_out: bool) -> torch.Tensor:
    """The ranks of the training tasks (``held_out=False``) or of the held-out ones; the two never overlap."""
    if held_out_every < 2:
        raise ValueError(f"held_out_every must be at least 2 (1 would hold out every task), got {held_out_every}")
    ranks = torch.arange(math.factorial(n))
    chosen = (ranks % held_out_every == 0) if held_out else (ranks % held_out_every != 0)
    return ranks[chosen]


def sample_sequences(recipe: ICLRecipe, batch_size: int, generator: torch.Generator, held_out: bool = False,
                     n_pairs: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` sequences ``x1 π(x1) x2 π(x2) ...``, one task each -> (seqs (B, 2 n_pairs), perms (B, n)).

    Training tasks unless ``held_out``; inputs drawn uniformly with repeats; outputs are token ``n + π(x)``."""
    n, P = recipe.n_symbols, n_pairs or recipe.n_pairs
    ranks = task_ranks(n, recipe.held_out_every, held_out)
    perms = all_permutations(n)[ranks[torch.randint(len(ranks), (batch_size,), generator=generator)]]  # (B, n)
    x = torch.randint(n, (batch_size, P), generator=generator)  # (B, P) inputs
    y = perms.gather(1, x) + n  # (B, P) outputs, as tokens n..2n-1
    return torch.stack([x, y], dim=2).view(batch_size, 2 * P), perms


def few_shot_prompt(examples, query: int, n_symbols: int) -> list[int]:
    """The token ids of a few-shot prompt: each ``(x, y)`` example as ``x, n_symbols + y``, then the query's
    input ``query`` alone (the model writes its output). Symbols are ``0..n_symbols-1`` on both sides."""
    for x, y in examples:
        if not (0 <= x < n_symbols and 0 <= y < n_symbols):
            raise ValueError(f"example ({x}, {y}): inputs and outputs must be symbols 0..{n_symbols - 1}")
    if not 0 <= query < n_symbols:
        raise ValueError(f"query {query}: must be an input symbol 0..{n_symbols - 1}")
    ids = []
    for x, y in examples:
        ids += [int(x), n_symbols + int(y)]
    return ids + [int(query)]


def icl_batch(seqs: torch.Tensor, n_symbols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx, targets) for next-token training: every token but the last in, the next one out, and only
    the outputs scored (an input is random: there is nothing to learn in predicting it)."""
    idx, targets = seqs[:, :-1], seqs[:, 1:].clone()
    targets[targets < n_symbols] = -100  # the next token is an input: not scored
    return idx, targets


# --- the model -----------------------------------------------------------------------


def gpt_config(recipe: ICLRecipe) -> GPTConfig:
    return GPTConfig(vocab_size=recipe.vocab_size, block_size=recipe.block_size + 1, n_layer=recipe.n_layer,
                     n_head=recipe.n_head, n_embd=recipe.n_embd, pos_emb=recipe.pos_emb, mlp=recipe.mlp,
                     dropout=0.0, bias=True, tie_weights=False)


def build_model(recipe: ICLRecipe) -> GPT:
    torch.manual_seed(recipe.seed)
    return GPT(gpt_config(recipe))


# --- measuring in-context learning -------------------------------------------------------------


@torch.no_grad()
def icl_accuracy(model: nn.Module, seqs: torch.Tensor, recipe: ICLRecipe = ICL, batch_size: int = 512) -> dict:
    """How often the model's most likely *output* symbol is right, by the number of examples before the query.

    ``by_shot[k]``: accuracy on the query that follows k examples; ``seen[k]`` / ``unseen[k]``: the same over
    queries whose input did / did not appear among those k (copying vs inference), with their counts
    ``n_seen[k]`` / ``n_unseen[k]``; ``unseen_ceiling[k]``: the best an ideal reasoner can do on the unseen
    ones, 1 / (symbols whose output has not appeared yet)."""
    was_training = model.training
    model.eval()
    n = recipe.n_symbols
    correct = []
    for i in range(0, len(seqs), batch_size):
        s = seqs[i:i + batch_size]
        logits = model(s[:, :-1]).logits[:, 0::2, n:2 * n]  # (B, P, n): at each input, scores of the outputs
        correct.append(logits.argmax(-1) == s[:, 1::2] - n)
    model.train(was_training)
    correct = torch.cat(correct).float()  # (N, P)
    x, y = seqs[:, 0::2], seqs[:, 1::2]  # (N, P)
    P = x.size(1)
    earlier = torch.ones(P, P, dtype=torch.bool).tril(-1)  # [k, j]: example j comes before query k
    seen = ((x.unsqueeze(2) == x.unsqueeze(1)) & earlier).any(-1)  # (N, P)
    distinct_out = torch.stack([torch.tensor([len(set(row[:k].tolist())) for k in range(P)]) for row in y])
    ceiling = 1.0 / (n - distinct_out).clamp(min=1).float()  # (N, P)

    def mean_where(mask):
        count = mask.sum(0)
        return ((correct * mask).sum(0) / count.clamp(min=1)).tolist(), count.tolist()

    seen_acc, n_seen = mean_where(seen.float())
    unseen_acc, n_unseen = mean_where((~seen).float())
    unseen_ceiling = (((~seen).float() * ceiling).sum(0) / (~seen).float().sum(0).clamp(min=1)).tolist()
    return {"by_shot": correct.mean(0).tolist(), "seen": seen_acc, "unseen": unseen_acc, "n_seen": n_seen,
            "n_unseen": n_unseen, "unseen_ceiling": unseen_ceiling, "chance": 1.0 / n,
            "seen_overall": float((correct * seen).sum() / seen.sum().clamp(min=1)),
            "unseen_overall": float((correct * ~seen).sum() / (~seen).sum().clamp(min=1))}


@torch.no_grad()
def icl_loss(model: nn.Module, seqs: torch.Tensor, recipe: ICLRecipe = ICL) -> float:
    """Mean cross-entropy on the outputs of ``seqs`` (what training minimises)."""
    idx, targets = icl_batch(seqs, recipe.n_symbols)
    logits = model(idx).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100).item()


@torch.no_grad()
def induction_scores(model: nn.Module, seqs: torch.Tensor, recipe: ICLRecipe = ICL) -> torch.Tensor:
    """(n_layer, n_head) prefix-matching scores on ``seqs``: at each input that appeared before, the attention
    on the output that followed its earlier occurrence (``labkit.attention.prefix_matching_score``)."""
    idx = seqs[:, :-1]
    with capture_attention(model, detach=True) as attn:
        model(idx)
    inputs = idx < recipe.n_symbols  # score the queries at inputs only (the ones that predict an output)
    return torch.stack([prefix_matching_score(a, idx, inputs) for a in attn.layers()])


# --- training ----------------------------------------------------------------------


def build_optimizer(model: GPT, recipe: ICLRecipe) -> torch.optim.Optimizer:
    """AdamW on everything, or (``optimizer="muon"``) Muon on the blocks' weight matrices and AdamW on the rest."""
    if recipe.optimizer == "adamw":
        return make_optimizer(model, recipe.lr, recipe.weight_decay, (0.9, 0.98))
    if recipe.optimizer != "muon":
        raise ValueError(f"optimizer must be 'adamw' or 'muon', got {recipe.optimizer!r}")
    muon, rest = split_params(model)
    return MuonAdamW(muon, decay_groups(rest, recipe.weight_decay), muon_lr=recipe.muon_lr, adamw_lr=recipe.lr,
                     betas=(0.9, 0.98), muon_weight_decay=recipe.muon_weight_decay)


def train_config(recipe: ICLRecipe, progress: bool = True) -> TrainConfig:
    return TrainConfig(max_steps=recipe.steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                       min_lr_ratio=recipe.min_lr_ratio, weight_decay=recipe.weight_decay, betas=(0.9, 0.98),
                       grad_clip=recipe.grad_clip, eval_every=recipe.eval_every, log_every=10, progress=progress,
                       desc="training gpt-icl")


def train_gpt_icl(recipe: ICLRecipe = ICL, progress: bool = True, on_eval=None) -> tuple[GPT, dict]:
    """Train ``gpt-icl``. At every evaluation, on the same held-out tasks: the loss, the accuracy on queries
    seen / unseen in the context (8 or more examples in), and every head's prefix-matching score (keys
    ``"induction.<layer>.<head>"``), so the history shows when the induction head forms."""
    model = build_model(recipe)
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

    optimizer = build_optimizer(model, recipe)
    history = train(model, get_batch, train_config(recipe, progress), eval_fn=eval_fn, optimizer=optimizer,
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


def register() -> None:
    """Register ``gpt-icl`` with ``labkit.zoo`` (safe to call more than once)."""
    from .. import zoo

    zoo.register(zoo.Recipe(
        name="gpt-icl",
        description="2-layer attention-only GPT trained on in-context tasks (random permutations of 8 symbols, shown as "
                    "input-output examples); tasks split by permutation, so evaluation is on unseen mappings",
        build=f"{__name__}:build_gpt_icl", train=f"{__name__}:train_gpt_icl",
        version=2, minutes_cpu=1,
    ), overwrite=True)  # fmt: skip
