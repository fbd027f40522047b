"""labkit.lora: adapters that start as a no-op, train alone, merge exactly, and compute what peft computes."""

import pytest
import torch
from torch import nn

from labkit.lora import LoRALinear, apply_lora, lora_parameters, merge_lora, trainable_parameters
from labkit.models.bert import BERT, BERTConfig
from labkit.models.gpt import GPT, GPTConfig


def gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, n_layers=2, n_heads=2, d_model=32, context_length=16))


def bert():
    torch.manual_seed(0)
    return BERT(BERTConfig(vocab_size=60, n_layers=2, n_heads=2, d_model=32, d_ff=64, context_length=16))


def randomise_adapters(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


X = torch.randint(0, 50, (3, 12), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("build", [gpt, bert])
def test_apply_lora_leaves_outputs_unchanged_at_init_and_freezes_the_rest(build):
    model = build().eval()
    before = model(X).logits
    apply_lora(model, rank=4, alpha=8, targets=("attn",))
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert wrapped and all(".attn." in n for n in wrapped)
    torch.testing.assert_close(model(X).logits, before, atol=0, rtol=0)  # B = 0: exactly the pretrained model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert trainable_parameters(model) == sum(p.numel() for p in lora_parameters(model))
    assert trainable_parameters(model) < 0.2 * sum(p.numel() for p in model.parameters())


def test_trainable_keeps_a_new_head_trainable():
    model = bert()
    model.head = nn.Linear(32, 2)
    apply_lora(model, targets=("attn",), rank=2, trainable=("head",))
    assert model.head.weight.requires_grad and model.head.bias.requires_grad
    assert not model.blocks[0].ffn.linear1.weight.requires_grad


def test_a_training_step_changes_only_the_adapters():
    model = apply_lora(gpt(), rank=4, targets=("attn",))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(lora_parameters(model), lr=1e-2, weight_decay=0.1)
    for _ in range(2):  # two steps: after the first B has moved, so A gets gradients too
        loss = model(X, X).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
            assert p.grad is None, n
        else:
            assert not torch.equal(p, adapters[n]), n


@pytest.mark.parametrize("build", [gpt, bert])
def test_merge_lora_gives_plain_linears_with_the_same_outputs(build):
    model = apply_lora(build().eval(), rank=4, alpha=8, targets=("attn", "mlp", "ffn"))
    randomise_adapters(model)
    adapted = model(X).logits
    assert (adapted - apply_lora(build().eval(), rank=4, targets=("attn", "mlp", "ffn"))(X).logits).abs().max() > 1e-3
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(X).logits, adapted, atol=1e-5, rtol=1e-5)


def test_lora_forward_equals_peft_on_the_same_weights():
    peft = pytest.importorskip("peft")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Linear(16, 24)
            self.mlp = nn.Linear(24, 8)

        def forward(self, x):
            return self.mlp(torch.relu(self.attn(x)))

    torch.manual_seed(0)
    base = Block()
    ours = Block()
    ours.load_state_dict(base.state_dict())
    apply_lora(ours, rank=4, alpha=12, targets=("attn",))
    randomise_adapters(ours)
    theirs = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=12, target_modules=["attn"], lora_dropout=0.0))
    layer = theirs.base_model.model.attn
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(ours.attn.lora_A)
        layer.lora_B["default"].weight.copy_(ours.attn.lora_B)
    x = torch.randn(5, 16)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-6)
    assert ours.attn.scaling == layer.scaling["default"] == 3.0
    # the same trainable parameter count
    assert trainable_parameters(ours) == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="no nn.Linear module's name contains any of \\('nothing',\\).*attn"):
        apply_lora(gpt(), targets=("nothing",))
    with pytest.raises(TypeError, match="targets=\\('attn',\\)"):
        apply_lora(gpt(), targets="attn")
    with pytest.raises(ValueError, match="rank=40 is more than"):
        LoRALinear(nn.Linear(32, 16), rank=40)
    with pytest.raises(ValueError, match="rank must be an integer"):
        LoRALinear(nn.Linear(32, 16), rank=0)
