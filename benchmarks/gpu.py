"""Notebook 16's GPU checks in one script: run it on the accelerator and record what it prints in the README.

    .venv/bin/python benchmarks/gpu.py                         # every part on the GPU (about 10 minutes, H100)
    .venv/bin/python benchmarks/gpu.py --only gpt2 triton      # some parts
    .venv/bin/python benchmarks/gpu.py --device cpu --quick    # the code paths at toy sizes on a CPU (the test)

Parts (``--only``):

``gpt2``
    A GPT of GPT-2 small's shape (12 layers, 12 heads, width 768, context 1,024, vocabulary 50,257: 124 M
    parameters) trained on random tokens with bf16 autocast, ``torch.compile`` and fused attention (SDPA), AdamW
    (fused), batch ``--batch-size``. Tokens per second after the warm-up and compilation steps, and **MFU**: tokens
    per second times the model FLOPs per token (6 per matmul parameter plus attention's 12·L·T·d) over the GPU's
    dense bf16 peak (``labkit.perf.peak_flops``). Target: at least 40% on an H100/H200-class GPU.
``triton``
    ``labkit.flash_triton``'s FlashAttention kernel against ``F.scaled_dot_product_attention`` (causal, bf16, 16
    heads of size 64): the largest difference, and the forward time of each at sequence lengths 1,024 to 8,192.
``notebook16``
    Notebook 16 executed on the GPU (``LABKIT_DEVICE=cuda``): its profile, roofline, levers, MFU, torchrun cells
    (``nccl``) and inference, saved with its outputs to ``benchmarks/results/16_scaling_up.gpu.ipynb``.
``series``
    A short run of the whole series on the GPU: every notebook under nbval's lax mode (``pytest --nbval-lax``),
    with its time and whether it passed.

One line per measurement to stdout, and everything (with the GPU's name and the software versions) to
``benchmarks/results/gpu.json`` (``--out``), written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("gpt2", "triton", "notebook16", "series")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpt2_benchmark(device: torch.device, quick: bool, batch_size: int, steps: int) -> dict:
    from labkit.models.gpt import GPT, GPTConfig
    from labkit.perf import matmul_params, peak_flops

    shape = (dict(vocab_size=65, context_length=64, n_layers=2, n_heads=2, d_model=64) if quick else
             dict(vocab_size=50257, context_length=1024, n_layers=12, n_heads=12, d_model=768))
    torch.manual_seed(0)
    model = GPT(GPTConfig(**shape, dropout=0.0, fused_attention=True)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=device.type == "cuda")
    compiled = torch.compile(model) if device.type == "cuda" or not quick else model
    dtype = torch.bfloat16
    T = shape["context_length"]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, shape["vocab_size"], (batch_size, T + 1), generator=g).to(device)

    def step():
        with torch.autocast(device.type, dtype=dtype):
            loss = compiled(x[:, :-1], x[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    t0 = time.perf_counter()
    for _ in range(3):  # compilation and warm-up
        step()
    sync(device)
    warmup = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync(device)
    seconds = time.perf_counter() - t0
    tokens_per_s = steps * batch_size * T / seconds
    flops_per_token = 6 * matmul_params(model) + 12 * shape["n_layers"] * T * shape["d_model"]
    peak = peak_flops(device)
    result = {"shape": shape, "batch_size": batch_size, "steps": steps, "dtype": "bfloat16",
              "compiled": compiled is not model, "warmup_and_compile_s": warmup, "seconds": seconds,
              "tokens_per_s": tokens_per_s, "flops_per_token": flops_per_token, "peak_flops": peak,
              "mfu": tokens_per_s * flops_per_token / peak if peak else None, "final_loss": loss.item(),
              "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    mfu = f"MFU {result['mfu']:.1%}" if result["mfu"] is not None else "MFU n/a (no data-sheet peak)"
    print(f"gpt2: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, batch {batch_size} x {T}: "
          f"{tokens_per_s:,.0f} tokens/s, {mfu}, compile+warm-up {warmup:.0f} s")
    return result


def triton_benchmark(device: torch.device, quick: bool) -> dict:
    from labkit import flash_triton

    if not flash_triton.HAVE_TRITON:
        print("triton: not installed")
        return {"skipped": "triton is not installed"}
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = []
    for T in ([64, 128] if quick else [1024, 2048, 4096, 8192]):
        B, H, d = (1, 2, 32) if quick else (4, 16, 64)
        g = torch.Generator().manual_seed(T)
        q, k, v = (torch.randn(B, H, T, d, generator=g).to(device, dtype) for _ in range(3))
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
        ours = flash_triton.triton_attention(q, k, v, causal=True, block_m=64, block_n=64)
        fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        row = {"T": T, "max_diff_triton": (ours.float() - ref).abs().max().item(),
               "max_diff_sdpa": (fused.float() - ref).abs().max().item()}
        for name, fn in (("triton", lambda: flash_triton.triton_attention(q, k, v, causal=True)),
                         ("sdpa", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))):
            fn()
            sync(device)
            best = math.inf
            for _ in range(2 if quick else 10):
                t0 = time.perf_counter()
                fn()
                sync(device)
                best = min(best, time.perf_counter() - t0)
            row[f"{name}_ms"] = 1000 * best
            row[f"{name}_tflops"] = 2 * 2 * B * H * T * T * d / 2 / best / 1e12  # causal: half the (T, T) pairs
        rows.append(row)
        print(f"triton: T={T}: Triton {row['triton_ms']:.3f} ms ({row['triton_tflops']:.1f} TFLOP/s), SDPA "
              f"{row['sdpa_ms']:.3f} ms; largest difference from float32: Triton {row['max_diff_triton']:.1e}, "
              f"SDPA {row['max_diff_sdpa']:.1e}")
    return {"dtype": str(dtype), "interpreted": flash_triton.interpreted(), "rows": rows}


def run_notebooks(paths: list[Path], out_dir: Path, device: torch.device, lax: bool, timeout: int) -> list[dict]:
    env = {**os.environ, "LABKIT_DEVICE": device.type, "LABKIT_PROGRESS": "off"}
    rows = []
    for nb in paths:
        t0 = time.perf_counter()
        if lax:
            cmd = [sys.executable, "-m", "pytest", str(nb), "--nbval-lax", "--nbval-current-env", "-q", "-p",
                   "no:cacheprovider", f"--nbval-cell-timeout={timeout}"]
        else:
            cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                   f"--ExecutePreprocessor.timeout={timeout}", "--output-dir", str(out_dir),
                   "--output", nb.stem + ".gpu.ipynb", str(nb)]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        rows.append({"notebook": nb.name, "passed": done.returncode == 0, "seconds": time.perf_counter() - t0,
                     "tail": (done.stdout + done.stderr)[-1500:] if done.returncode else ""})
        print(f"{'series' if lax else 'notebook16'}: {nb.name} {'passed' if done.returncode == 0 else 'FAILED'} "
              f"in {rows[-1]['seconds']:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> dict:
    from labkit._io import atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu with --quick, to test the code paths")
    p.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--quick", action="store_true", help="toy sizes (seconds on a CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="gpt2's batch (default 16; 2 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="gpt2's timed steps (default 20; 2 with --quick)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per notebook cell")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this on the accelerator, or try the code paths with --device cpu --quick")
    if device.type != "cuda" and not args.quick:
        raise SystemExit(f"--device {args.device} without --quick would time a GPU benchmark on a CPU: add --quick")
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda, "quick": args.quick,
              "date": time.strftime("%Y-%m-%d")}
    if "gpt2" in args.only:
        result["gpt2"] = gpt2_benchmark(device, args.quick, args.batch_size or (2 if args.quick else 16),
                                        args.steps or (2 if args.quick else 20))
    if "triton" in args.only:
        result["triton"] = triton_benchmark(device, args.quick)
    out_dir = Path(args.out).parent
    if "notebook16" in args.only:
        result["notebook16"] = run_notebooks([ROOT / "notebooks" / "16_scaling_up.ipynb"], out_dir, device, False,
                                             args.timeout)
    if "series" in args.only:
        result["series"] = run_notebooks(sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), out_dir, device,
                                         True, args.timeout)
    atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
