"""labkit.perf: FLOPs counted against 6·N·tokens (and 4N + 2N_trainable for LoRA), measured peaks, throughput and memory meters."""

import pytest
import torch

from labkit import perf
from labkit.lora import apply_lora
from labkit.models.gpt import GPT, GPTConfig


def _gpt(fused, T=32, d=128, L=4):
    return GPT(GPTConfig(vocab_size=512, context_length=T, n_layers=L, n_heads=4, d_model=d, pos_emb="rope", bias=False,
                         tie_weights=False, fused_attention=fused))



def _step(model, x):
    model(x, x).loss.backward()


def test_flop_counter_agrees_with_6_n_tokens_for_the_gpt():
    torch.manual_seed(0)
    B, T, d, L = 4, 32, 128, 4
    x = torch.randint(512, (B, T))
    model = _gpt(fused=True, T=T, d=d, L=L)
    N = perf.matmul_params(model)
    assert N == L * 12 * d * d + d * 512  # q, k, v, out (4 d^2) + MLP (8 d^2) per block, and the output layer
    counted = perf.training_flops(_step, model, x)
    analytic = perf.analytic_training_flops(N, B * T)
    assert abs(counted / analytic - 1) < 0.10  # the target: within 10% of 6·N·tokens
    # the explicit attention adds the scores and the weighted values: 12·L·T·d per token (forward 4·T·d per layer)
    unfused = perf.training_flops(_step, _gpt(fused=False, T=T, d=d, L=L), x)
    assert unfused == pytest.approx(analytic + 12 * L * T * d * B * T, rel=0.01)
    assert unfused > counted  # the counter does see the attention when it is written out


def test_lora_training_flops_are_4n_plus_2_n_trainable():
    torch.manual_seed(0)
    model = _gpt(fused=True)
    for p in model.parameters():
        p.requires_grad_(False)
    apply_lora(model, rank=4, alpha=8, targets=("attn", "mlp"))
    x = torch.randint(512, (4, 32))
    N, trainable = perf.matmul_params(model), perf.matmul_params(model, trainable_only=True)
    assert 0 < trainable < 0.1 * N
    counted = perf.training_flops(_step, model, x)
    assert counted == pytest.approx(perf.analytic_training_flops(N, x.numel(), trainable), rel=0.05)
    assert counted < 0.75 * perf.analytic_training_flops(N, x.numel())  # not 6N: no gradient for frozen weights


def test_throughput_counts_tokens():
    meter = perf.Throughput(flops_per_token=6 * 1000, device="cpu")
    with meter:
        torch.randn(200, 200) @ torch.randn(200, 200)
        meter.add(5000)
    assert meter.tokens == 5000 and meter.seconds > 0
    assert meter.tokens_per_s == pytest.approx(5000 / meter.seconds)
    assert meter.mfu is None  # no peak figure for a CPU
    assert "tokens/s" in str(meter)


def test_peak_memory_sees_a_large_temporary_tensor():
    from labkit.perf import PeakMemory

    with PeakMemory() as small:
        torch.ones(10)
    with PeakMemory() as big:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x.add_(1)
        import time

        time.sleep(0.2)  # many samples while it lives, even on a busy machine
        del x
    assert big.peak_mib > 48 and big.peak_mib > small.peak_mib + 40


def test_measured_peaks_and_mfu_against_a_given_peak():
    flops = perf.measured_matmul_flops("cpu", n=256, repeats=2)
    bandwidth = perf.measured_bandwidth("cpu", mib=8, repeats=2)
    assert 1e8 < flops < 1e14 and 1e8 < bandwidth < 1e13
    meter = perf.Throughput(flops_per_token=6.0, device="cpu", peak=100.0)
    meter.tokens, meter.seconds = 10, 2.0  # 5 tokens/s x 6 FLOPs = 30 FLOP/s of a 100 FLOP/s peak
    assert meter.mfu == pytest.approx(0.3)
    assert perf.Throughput(flops_per_token=6.0, device="cpu").mfu is None  # a CPU has no data-sheet peak


# --- the GPU-only paths, with the CUDA queries faked --------------------------------------------------------

def test_the_mfu_peak_is_chosen_by_device_and_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    measured = 5e13
    # bf16 or fp16 on a known GPU: its data sheet's dense tensor-core peak
    assert perf.mfu_peak("cuda", torch.bfloat16, measured) == (989e12, "data-sheet bf16/fp16 peak")
    assert perf.mfu_peak("cuda:0", torch.float16, measured)[0] == 989e12
    # float32 on the same GPU: the measured float32 matmul rate, never the bf16 peak
    assert perf.mfu_peak("cuda", torch.float32, measured) == (measured, "measured float32 matmul rate")
    # an unknown GPU, and every CPU: the measured rate in that dtype
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert perf.mfu_peak("cuda", torch.bfloat16, measured) == (measured, "measured bfloat16 matmul rate")
    assert perf.mfu_peak("cpu", torch.bfloat16, 1e11) == (1e11, "measured bfloat16 matmul rate")


def test_peak_memory_on_a_gpu_resets_the_peak_and_counts_from_what_was_allocated(monkeypatch):
    calls, state = [], {"allocated": 300, "peak": 10_000}  # a peak left over from earlier work

    def reset(device=None):
        calls.append("reset")
        state["peak"] = state["allocated"]

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    with perf.PeakMemory("cuda") as mem:
        state["peak"] = 300 + 2**20  # the block allocates 1 MiB at its peak
    assert calls == ["reset"] and mem.peak_bytes == 2**20 and mem.peak_mib == 1.0
