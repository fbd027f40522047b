"""Pretrain a character-level GPT on Tiny Shakespeare on the CPU and report val loss and time.

    /usr/bin/time -f %e .venv/bin/python benchmarks/pretrain_gpt_cpu.py --recipe nanogpt
    /usr/bin/time -f %e .venv/bin/python benchmarks/pretrain_gpt_cpu.py --recipe lab

Train/val are the first 90% / last 10% of the text; the vocabulary is every character of
the whole text. The val loss is the mean over EVERY non-overlapping window of the context
length in the validation split (not a sample of batches). Progress goes to stderr; the last
line of stdout is the summary:

    val_loss=<x> wall_s=<y> tokens_per_s=<z> params=<n>

wall_s is the whole process's wall time up to the summary, interpreter start-up included
(read from /proc on Linux; elsewhere it is measured from this file's first statement, so
start-up is left out). tokens_per_s is training tokens over the time in the training loop.
See benchmarks/README.md for every flag.
"""

import time

_T0 = time.perf_counter()  # first statement: everything below, imports included, is timed


def _process_age() -> float | None:
    """Seconds since this process started (Linux /proc), or None elsewhere."""
    try:
        import os

        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # the name in (...) may hold spaces
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


import argparse  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402

import torch  # noqa: E402

from labkit.recipes.gpt_shakespeare import LAB, NANOGPT, build_lm, evaluate_lm, shakespeare_data, train_lm  # noqa: E402

RECIPES = {"nanogpt": NANOGPT, "lab": LAB}

# flag -> LMRecipe field; a flag left out keeps the chosen recipe's value
LEVERS = {
    "optimizer": "optimizer", "pos_emb": "pos_emb", "mlp": "mlp", "batch_size": "batch_size",
    "steps": "steps", "lr": "lr", "muon_lr": "muon_lr", "context_length": "context_length",
    "n_layers": "n_layers", "n_heads": "n_heads", "d_model": "d_model", "seed": "seed",
    "warmup": "warmup_steps", "min_lr_ratio": "min_lr_ratio", "weight_decay": "weight_decay",
    "muon_weight_decay": "muon_weight_decay", "muon_momentum": "muon_momentum", "tie_weights": "tie_weights",
    "zero_init": "zero_init", "head_lr": "head_lr",
}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="lab", help="starting settings (default: lab)")
    p.add_argument("--optimizer", choices=["adamw", "muon"], help="adamw: AdamW on all; muon: Muon on block matrices + AdamW on the rest")
    p.add_argument("--pos-emb", choices=["learned", "rope"], help="learned position table (GPT-2) or rotary")
    p.add_argument("--mlp", choices=["gelu", "relu2"], help="GELU (GPT-2) or squared ReLU")
    p.add_argument("--batch-size", type=int, help="windows per optimizer step")
    p.add_argument("--steps", type=int, help="optimizer steps; the warmup-cosine schedule spans them")
    p.add_argument("--lr", type=float, help="AdamW peak lr (with muon: embeddings, head, norms, biases)")
    p.add_argument("--head-lr", type=float, help="with muon: AdamW peak lr for an untied output layer (default: --lr)")
    p.add_argument("--muon-lr", type=float, help="Muon peak lr (torch's 'original' shape adjustment)")
    p.add_argument("--context-length", type=int, help="context length in characters (training and evaluation)")
    p.add_argument("--n-layers", type=int, help="transformer blocks")
    p.add_argument("--n-heads", type=int, help="attention heads per block")
    p.add_argument("--d-model", type=int, help="model width (d_model)")
    p.add_argument("--warmup", type=int, help="linear warmup steps")
    p.add_argument("--min-lr-ratio", type=float, help="the cosine ends at this fraction of the peak lr")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (matrices and embeddings)")
    p.add_argument("--muon-weight-decay", type=float, help="Muon decoupled weight decay")
    p.add_argument("--muon-momentum", type=float, help="Muon Nesterov momentum")
    p.add_argument("--tie-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="share the token embedding with the output layer")
    p.add_argument("--zero-init", action=argparse.BooleanOptionalAction, default=None,
                   help="start the blocks' output projections and the output layer at zero")
    p.add_argument("--seed", type=int, help="seed for initialisation and batch order")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: PyTorch's choice)")
    p.add_argument("--compile", action="store_true", help="train through torch.compile(model) (compile time is in wall_s)")
    p.add_argument("--max-seconds", type=float, help="stop training after this many seconds in the loop, then evaluate")
    p.add_argument("--eval-batch-size", type=int, default=256, help="windows per evaluation batch")
    p.add_argument("--log-every", type=int, default=100, help="steps between progress lines on stderr")
    return p.parse_args(argv)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {field: getattr(args, flag) for flag, field in LEVERS.items() if getattr(args, flag) is not None}
    recipe = replace(RECIPES[args.recipe], **overrides)
    log(f"recipe {args.recipe}: " + ", ".join(f"{k}={v}" for k, v in asdict(recipe).items()))
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    t = time.perf_counter()
    tok, train_data, val_data = shakespeare_data()
    model = build_lm(recipe, tok.vocab_size)
    log(f"data {len(train_data):,} train / {len(val_data):,} val characters, vocab {tok.vocab_size}; "
        f"model {model.num_params():,} parameters; set-up {time.perf_counter() - t:.1f} s "
        f"(imports {t - _T0:.1f} s)")

    trained = torch.compile(model) if args.compile else model  # shares the parameters with `model`
    result = train_lm(trained, train_data, recipe, max_seconds=args.max_seconds, progress=False, log=log,
                      log_every=args.log_every)
    if result.stopped_early:
        log(f"max-seconds reached: stopped after {result.steps} of {recipe.steps} steps")

    t = time.perf_counter()
    val_loss = evaluate_lm(model, val_data, recipe.context_length, args.eval_batch_size)
    log(f"training {result.seconds:.1f} s ({result.steps} steps, {result.tokens:,} tokens); "
        f"whole-split evaluation {time.perf_counter() - t:.1f} s")

    age = _process_age()
    wall_s = age if age is not None else time.perf_counter() - _T0
    print(f"val_loss={val_loss:.4f} wall_s={wall_s:.1f} tokens_per_s={result.tokens_per_s:.0f} "
          f"params={model.num_params()}", flush=True)


if __name__ == "__main__":
    main()
