"""Sweep gpt-icl's learning rate and seed: when does in-context learning (and its induction head) form?

    .venv/bin/python benchmarks/icl_sweep.py                                  # Muon's lr x 3 seeds
    .venv/bin/python benchmarks/icl_sweep.py --field muon_weight_decay --values 0 0.5 --seeds 0 1 2 3
    .venv/bin/python benchmarks/icl_sweep.py --field lr --values 1e-3 2e-3 --set optimizer=adamw mlp=gelu

Each run trains ``labkit.recipes.gpt_icl`` with one value of one field (``--field``, default Muon's learning
rate) and one seed, every other field of the recipe as it is (or as ``--set field=value ...`` says), and
scores it on 2,048 held-out sequences (tasks never trained on): accuracy on
queries whose pair already appeared in the context after 8 or more examples (copying), on queries
whose pair did not (inference), and the best head's prefix-matching score. In-context learning in
models like this appears after a loss plateau whose length depends on the learning rate and the seed:
a run that is still on the plateau at the end scores near chance.

Progress goes to stderr; one line per run to stdout::

    <field>=<value> seed=<s> seen_8plus=<a> unseen=<b> induction=<c> (layer <l> head <h>) plateau_end=<step> seconds=<t>

and the whole table to ``benchmarks/results/icl_sweep.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch


def main(argv=None) -> None:
    from labkit.recipes import gpt_icl as ri
    from labkit.tasks.icl import icl_accuracy, induction_scores, sample_sequences

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--field", default="muon_lr", help="the recipe field to sweep (muon_lr, lr, n_heads, ...)")
    p.add_argument("--values", nargs="+", default=["0.01", "0.02", "0.04"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="other recipe fields to change for every run (steps=2000 optimizer=adamw mlp=gelu ...)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "icl_sweep.json"))
    args = p.parse_args(argv)

    def typed(field: str, value: str):
        if not hasattr(ri.ICL, field):
            p.error(f"ICLRecipe has no field {field!r}")
        kind = type(getattr(ri.ICL, field))
        return kind(float(value)) if kind in (int, float) else kind(value)

    overrides = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set takes FIELD=VALUE pairs, got {item!r}")
        overrides[field] = typed(field, value)
    final_seqs, _ = sample_sequences(ri.ICL, 2048, torch.Generator().manual_seed(12345), held_out=True)
    rows = []
    for value in (typed(args.field, v) for v in args.values):
        for seed in args.seeds:
            recipe = replace(ri.ICL, **overrides, seed=seed, **{args.field: value})
            t0 = time.perf_counter()
            model, meta = ri.train_gpt_icl(recipe, progress=False)
            seconds = time.perf_counter() - t0
            r = icl_accuracy(model, final_seqs, recipe)
            late = slice(8, None)
            seen = torch.tensor(r["seen"][late])
            n_seen = torch.tensor(r["n_seen"][late], dtype=torch.float)
            scores = induction_scores(model, final_seqs, recipe)
            layer, head = divmod(int(scores.argmax()), scores.size(1))
            h = meta["history"]
            acc = h["eval"]["seen_acc_8plus"]
            plateau_end = next((s for s, a in zip(h["eval_steps"], acc) if a > 0.5), None)
            row = {args.field: value, **overrides, "seed": seed, "steps": recipe.steps,
                   "seen_8plus": float((seen * n_seen).sum() / n_seen.sum()),
                   "unseen": r["unseen_overall"], "induction": float(scores.max()), "layer": layer, "head": head,
                   "plateau_end": plateau_end, "seconds": seconds}
            rows.append(row)
            print(f"{args.field}={value} seed={seed} seen_8plus={row['seen_8plus']:.3f} unseen={row['unseen']:.3f} "
                  f"induction={row['induction']:.3f} (layer {layer} head {head}) plateau_end={plateau_end} "
                  f"seconds={seconds:.1f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads()}, indent=1))
    tmp.replace(out)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
