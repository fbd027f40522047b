"""Notebook 10's checkers (LoRA): solutions pass; typical mistakes get their hint; stubs say what to write."""

import pytest
import torch

from labkit import checks
from labkit.lora import LoRALinear

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _todo(*args, **kwargs):
    raise NotImplementedError


def test_lora_forward_solution_and_labkits_module_pass(capsys):
    assert checks.check_lora_forward(lambda x, W, b, A, B, s: torch.nn.functional.linear(x, W, b) + s * (x @ A.T) @ B.T)

    def via_module(x, W, b, A, B, s):  # labkit.lora.LoRALinear with these weights
        base = torch.nn.Linear(W.size(1), W.size(0))
        with torch.no_grad():
            base.weight.copy_(W), base.bias.copy_(b)
        m = LoRALinear(base, rank=A.size(0), alpha=s * A.size(0))
        with torch.no_grad():
            m.lora_A.copy_(A), m.lora_B.copy_(B)
        return m(x).detach()

    assert checks.check_lora_forward(via_module)
    assert "✅ lora_forward: all 3 cases pass" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, W, b, A, B, s: x @ W.T + b + x @ A.T @ B.T, "multiplied by the scaling"),
    (lambda x, W, b, A, B, s: (x @ A.T @ B.T) * s, "the update alone"),
    (lambda x, W, b, A, B, s: x @ W.T + (x @ A.T @ B.T) * s, "bias b"),
    (lambda x, W, b, A, B, s: x @ W.T + b + (x @ B @ A) * s, "projects down with A"),
])
def test_lora_forward_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_lora_forward(wrong)
    assert hint in capsys.readouterr().out


def test_freeze_for_lora(capsys):
    def solution(model):
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(("lora_A", "lora_B")) or name.startswith("head"))

    assert checks.check_freeze_for_lora(solution)
    assert "✅ freeze_for_lora" in capsys.readouterr().out
    assert not checks.check_freeze_for_lora(lambda m: [p.requires_grad_(False) for p in m.parameters()] and None)
    assert "nothing would train" in capsys.readouterr().out

    def forgot_base(model):
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(("embed", "mlp")))

    assert not checks.check_freeze_for_lora(forgot_base)
    assert "attn.base.weight" in capsys.readouterr().out

    def froze_head(model):
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(("lora_A", "lora_B")))

    assert not checks.check_freeze_for_lora(froze_head)
    assert "should train but are frozen: head.bias, head.weight" in capsys.readouterr().out


def test_stubs_say_what_to_write(capsys):
    assert not checks.check_lora_forward(_todo)
    assert not checks.check_freeze_for_lora(_todo)
    out = capsys.readouterr().out
    assert out.count("not implemented yet") == 2 and "Hint" not in out
