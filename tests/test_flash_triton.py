"""The Triton FlashAttention kernel (``labkit.flash_triton``) equals ``F.scaled_dot_product_attention`` in forward
and backward: in Triton's interpreter on a CPU (tests/conftest.py selects it before anything imports triton),
compiled on a GPU."""

import pytest
import torch
import torch.nn.functional as F

flash_triton = pytest.importorskip("labkit.flash_triton")
if not flash_triton.HAVE_TRITON:
    pytest.skip("triton is not installed (Linux x86-64 wheels only)", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("causal, shape", [(False, (1, 2, 64, 32, 64)), (True, (1, 2, 64, 32, 64)),
                                           (False, (2, 1, 100, 24, 100)), (True, (2, 1, 100, 24, 100)),
                                           (False, (1, 2, 50, 16, 70))])  # (B, H, T, d, T_k): cross-attention last
def test_kernel_equals_sdpa(causal, shape):
    B, H, T, d, T_k = shape
    g = torch.Generator().manual_seed(T + d)
    q = torch.randn(B, H, T, d, generator=g).to(DEVICE).requires_grad_()
    k, v = (torch.randn(B, H, T_k, d, generator=g).to(DEVICE).requires_grad_() for _ in range(2))
    ours = flash_triton.triton_attention(q, k, v, causal=causal, block_m=32, block_n=16)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert (ours - ref).abs().max() < 1e-5
    d_out = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), d_out), torch.autograd.grad(ref, (q, k, v), d_out)):
        assert (a - b).abs().max() < 1e-4


def test_bad_input_says_what_is_wrong():
    q = torch.randn(1, 1, 8, 16, device=DEVICE)
    with pytest.raises(ValueError, match="as many queries as keys"):
        flash_triton.triton_attention(q, torch.randn(1, 1, 9, 16, device=DEVICE), torch.randn(1, 1, 9, 16, device=DEVICE),
                                      causal=True)
    with pytest.raises(ValueError, match="power of two"):
        flash_triton.triton_attention(q, q, q, block_m=24)
    with pytest.raises(ValueError, match="same last dimension"):
        flash_triton.triton_attention(q, torch.randn(1, 1, 8, 8, device=DEVICE), q)
