"""Generation with and without the KV cache: tokens per second, the same tokens, and time per token by position.

    .venv/bin/python benchmarks/kv_cache_cpu.py                          # GPT-2-small shape, 64 / 256 / 512 tokens
    .venv/bin/python benchmarks/kv_cache_cpu.py --shape lab --new-tokens 32 56

``--shape gpt2`` is GPT-2 small (12 layers, 12 heads, width 768, context 1,024, vocabulary 50,257: 124 M
parameters) and ``--shape lab`` the zoo's ``gpt-shakespeare`` (3 layers, 2 heads, width 128, context 64), both
with random weights (the cost of a forward pass does not depend on what the weights are, so this runs offline).
For every length it generates greedily (``top_k=1``) from the same prompt, once with ``use_cache=True`` and once
without, checks that the tokens are identical, and reports tokens per second. Then, per position, the time of
one generation step: a cached step (one token against the cache) against a step without the cache (a forward
pass over the whole context so far).

One line per length to stdout::

    new_tokens=<n> cached=<tok/s> uncached=<tok/s> speedup=<x> same_tokens=True

and everything to ``benchmarks/results/kv_cache_cpu.json`` (``--out``), written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

SHAPES = {
    "gpt2": dict(vocab_size=50257, context_length=1024, n_layers=12, n_heads=12, d_model=768),
    "lab": dict(vocab_size=65, context_length=64, n_layers=3, n_heads=2, d_model=128, pos_emb="rope", mlp="relu2",
                tie_weights=False, bias=False),
}


def step_times(model, prompt: torch.Tensor, positions: list[int]) -> tuple[list[float], list[float]]:
    """Seconds for one generation step at each position: with the cache (prefilled up to it) and without."""
    cached, uncached = [], []
    V = model.config.vocab_size
    with torch.no_grad():
        for p in positions:
            context = torch.randint(V, (1, p), generator=torch.Generator().manual_seed(p))
            cache = model.new_cache()
            model(context[:, :-1], cache=cache)  # the p - 1 tokens before
            t0 = time.perf_counter()
            model(context[:, -1:], cache=cache)  # the step: one token against the cache
            cached.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model(context)  # the same step without a cache: the whole context again
            uncached.append(time.perf_counter() - t0)
    return cached, uncached


def main(argv=None) -> None:
    from labkit.models.gpt import GPT, GPTConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="gpt2")
    p.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256, 512])
    p.add_argument("--prompt-len", type=int, default=8)
    p.add_argument("--positions", type=int, nargs="*", default=None,
                   help="positions for the per-step timing (default: 8 points up to the longest length)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "kv_cache_cpu.json"))
    args = p.parse_args(argv)
    config = GPTConfig(**SHAPES[args.shape])
    longest = args.prompt_len + max(args.new_tokens)
    torch.manual_seed(0)
    model = GPT(config).eval()
    prompt = torch.randint(config.vocab_size, (1, args.prompt_len), generator=torch.Generator().manual_seed(1))
    model.generate(prompt, 4, top_k=1)  # warm up
    rows = []
    for n in args.new_tokens:
        timed = {}
        for use_cache in (True, False):
            t0 = time.perf_counter()
            out = model.generate(prompt, n, top_k=1, use_cache=use_cache)
            timed[use_cache] = (time.perf_counter() - t0, out)
        (tc, out_c), (tu, out_u) = timed[True], timed[False]
        row = {"new_tokens": n, "cached_tok_s": n / tc, "uncached_tok_s": n / tu, "speedup": tu / tc,
               "cached_seconds": tc, "uncached_seconds": tu, "same_tokens": bool(torch.equal(out_c, out_u))}
        rows.append(row)
        print(f"new_tokens={n} cached={row['cached_tok_s']:.1f} uncached={row['uncached_tok_s']:.1f} "
              f"speedup={row['speedup']:.2f} same_tokens={row['same_tokens']}", flush=True)
    top = min(longest, config.context_length)
    positions = args.positions or sorted({max(2, round(top * k / 8)) for k in range(1, 9)})
    cached, uncached = step_times(model, prompt, positions)
    for pos, c, u in zip(positions, cached, uncached):
        print(f"  step at position {pos}: {c * 1e3:.1f} ms cached, {u * 1e3:.1f} ms without", file=sys.stderr)
    result = {"shape": args.shape, "config": SHAPES[args.shape], "parameters": sum(q.numel() for q in model.parameters()),
              "prompt_len": args.prompt_len, "rows": rows,
              "per_position": {"positions": positions, "cached_s": cached, "uncached_s": uncached},
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
