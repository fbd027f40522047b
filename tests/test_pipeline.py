"""``labkit.pipeline``: the GPT cut into stages computes what the whole model computes."""

import pytest
import torch

from labkit.models.gpt import GPT, GPTConfig
from labkit.pipeline import split_gpt


def test_stages_chained_are_the_whole_model():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.tiny(n_layers=3, tie_weights=False))
    x = torch.randint(0, 64, (2, 16))
    stages = split_gpt(gpt, 2)
    assert [len(s.blocks) for s in stages] == [2, 1]
    assert {id(p) for s in stages for p in s.parameters()} == {id(p) for p in gpt.parameters()}  # shared, each once
    h = x
    for stage in stages:
        h = stage(h)
    assert torch.equal(h, gpt(x).logits)


def test_bad_splits_say_why():
    with pytest.raises(ValueError, match="tie_weights=False"):
        split_gpt(GPT(GPTConfig.tiny(tie_weights=True)), 2)
    with pytest.raises(ValueError, match="between 1 and 2"):
        split_gpt(GPT(GPTConfig.tiny(tie_weights=False)), 3)
