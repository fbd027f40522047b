"""How the lab's training copes with a busy machine: time alone against time beside a CPU-bound neighbour.

    .venv/bin/python benchmarks/threads_cpu.py            # both policies, alone and beside a neighbour
    .venv/bin/python benchmarks/threads_cpu.py --steps 300 --policies adaptive

The workload is nanoGPT's Tiny Shakespeare recipe (``labkit.recipes.NANOGPT``) for ``--steps`` steps,
trained with ``recipes.train_lm`` (so through ``labkit.train``, as in every notebook), each run in a
fresh process. The neighbour is another PyTorch process training a small MLP on 2 threads forever, as a
second notebook, a test suite or a busy browser tab would. Policies (``LABKIT_THREAD_POLICY``):

- ``fixed``: PyTorch's threads as configured at start (one per usable CPU), whatever else runs;
- ``adaptive``: ``labkit.threads.ThreadGovernor`` re-measures every 2 s how many CPUs other processes
  keep busy and gives PyTorch only the rest (at least one thread).

Targets: beside the neighbour, at most 2.5x the alone time; alone, at most 10% slower than ``fixed``.
Last line of stdout:

    alone_fixed_s=<a> alone_adaptive_s=<b> busy_fixed_s=<c> busy_adaptive_s=<d>
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

NEIGHBOUR = """
import torch
torch.set_num_threads(2)
m = torch.nn.Sequential(torch.nn.Linear(512, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 512))
opt = torch.optim.AdamW(m.parameters())
x = torch.randn(256, 512)
while True:
    loss = m(x).square().mean(); opt.zero_grad(); loss.backward(); opt.step()
"""

WORKLOAD = """
import sys, time
from dataclasses import replace
import torch
from labkit.recipes import gpt_shakespeare as recipes
tok, train_data, _ = recipes.shakespeare_data()
recipe = replace(recipes.NANOGPT, steps=int(sys.argv[1]))
model = recipes.build_lm(recipe, tok.vocab_size)
t0 = time.perf_counter()
result = recipes.train_lm(model, train_data, recipe, progress=False)
print(f"{time.perf_counter() - t0:.2f} {result.train_loss:.4f} {torch.get_num_threads()}")
"""


def run_workload(steps: int, policy: str) -> tuple[float, str]:
    env = {**os.environ, "LABKIT_THREAD_POLICY": policy}
    out = subprocess.run([sys.executable, "-c", WORKLOAD, str(steps)], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), out[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--policies", nargs="+", default=["fixed", "adaptive"], choices=["fixed", "adaptive"])
    args = p.parse_args(argv)
    times: dict[tuple[str, str], float] = {}
    for policy in args.policies:
        times["alone", policy], loss = run_workload(args.steps, policy)
        print(f"alone,  {policy:>8}: {times['alone', policy]:6.1f} s (train loss {loss})", flush=True)
    for policy in args.policies:
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR])
        try:
            time.sleep(3)  # let it get going
            times["busy", policy], loss = run_workload(args.steps, policy)
        finally:
            neighbour.kill()
            neighbour.wait()
        ratio = times["busy", policy] / times["alone", policy]
        print(f"beside, {policy:>8}: {times['busy', policy]:6.1f} s ({ratio:.2f}x its alone time; "
              f"train loss {loss})", flush=True)
    if "fixed" in args.policies and "adaptive" in args.policies:
        cost = times["alone", "adaptive"] / times["alone", "fixed"] - 1
        print(f"adaptive alone costs {cost:+.1%} against fixed; beside the neighbour it takes "
              f"{times['busy', 'adaptive'] / times['alone', 'adaptive']:.2f}x its alone time "
              f"(fixed: {times['busy', 'fixed'] / times['alone', 'fixed']:.2f}x)")
    print(" ".join(f"{where}_{policy}_s={t:.1f}" for (where, policy), t in times.items()))


if __name__ == "__main__":
    main()
