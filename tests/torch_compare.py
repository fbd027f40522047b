"""Helpers shared by the tests that compare labkit modules with PyTorch's own."""

import torch
from torch import nn
from torch.testing import assert_close


def grads_in_torch_names(module: nn.Module) -> dict:
    """Parameter gradients of a labkit module, renamed and q/k/v-concatenated as in PyTorch's modules."""
    out = {n.replace("ff.", "").replace("cross_attn.", "multihead_attn."): p.grad for n, p in module.named_parameters()}
    for prefix in {n.split("q_proj.")[0] for n in out if "q_proj." in n}:
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{prefix}{x}_proj.{kind}", None) for x in "qkv"]
            if parts[0] is not None:
                out[f"{prefix}in_proj_{kind}"] = torch.cat(parts)
    return out


def assert_grads_equal(ours: nn.Module, theirs: nn.Module) -> None:
    """Every parameter gradient of ``ours`` equals the matching one of PyTorch's ``theirs``."""
    got, want = grads_in_torch_names(ours), {n: p.grad for n, p in theirs.named_parameters()}
    assert got.keys() == want.keys()
    for name in want:
        assert want[name] is not None, name
        assert_close(got[name], want[name], msg=lambda m: f"{name}: {m}")
