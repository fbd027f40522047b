"""Notebook 14's checkers (InfoNCE, one cross-attention fusion step): solutions a learner writes pass, typical
mistakes get their own hint, stubs say what to write."""

import math

import pytest
import torch
import torch.nn.functional as F

from labkit import checks
from labkit.checks.multimodal import _fusion_mistake, _one_sided, _scale_not_exp, _unnormalised

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _todo(*args, **kwargs):
    raise NotImplementedError


def info_nce(image_features, text_features, logit_scale):  # a learner's version, from the formula
    img = image_features / image_features.norm(dim=-1, keepdim=True)
    txt = text_features / text_features.norm(dim=-1, keepdim=True)
    logits = img @ txt.T * logit_scale.exp()
    n = len(logits)
    i2t = -torch.log_softmax(logits, dim=1)[range(n), range(n)].mean()
    t2i = -torch.log_softmax(logits, dim=0)[range(n), range(n)].mean()
    return (i2t + t2i) / 2


def fuse(h, context, context_mask, w_q, w_k, w_v, w_o, n_heads):  # a learner's version, one head at a time
    B, C, H, W = h.shape
    d = C // n_heads
    q, k, v = h.flatten(2).transpose(1, 2) @ w_q.T, context @ w_k.T, context @ w_v.T
    heads = []
    for i in range(n_heads):
        s = slice(i * d, (i + 1) * d)
        scores = q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(d)
        scores = scores.masked_fill(~context_mask[:, None, :], float("-inf"))  # context_mask: True = token
        heads.append(F.softmax(scores, dim=-1) @ v[..., s])
    out = torch.cat(heads, dim=-1) @ w_o.T  # (B, H*W, C)
    return h + out.transpose(1, 2).reshape(B, C, H, W)


def test_solutions_pass(capsys):
    assert checks.check_info_nce(info_nce)
    assert checks.check_cross_attention_fusion(fuse)
    assert checks.check_cross_attention_fusion(_fusion_mistake())  # the checker's own explicit form
    out = capsys.readouterr().out
    assert "✅ info_nce: all 3 cases pass" in out and "✅ cross_attention_fusion: all 3 cases pass" in out


@pytest.mark.parametrize("wrong, hint", [(_one_sided, "symmetric"), (_unnormalised, "cosine"), (_scale_not_exp, "log")])
def test_info_nce_mistakes_get_their_hint(wrong, hint, capsys):
    assert not checks.check_info_nce(wrong)
    assert hint in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, hint", [({"mask": False}, "padding"), ({"scale": False}, "sqrt(head_dim)"),
                                          ({"residual": False}, "residual")])
def test_fusion_mistakes_get_their_hint(kwargs, hint, capsys):
    assert not checks.check_cross_attention_fusion(_fusion_mistake(**kwargs))
    assert hint in capsys.readouterr().out


def test_stubs_say_what_to_write(capsys):
    assert not checks.check_info_nce(_todo)
    assert not checks.check_cross_attention_fusion(_todo)
    out = capsys.readouterr().out
    assert out.count("not implemented yet") == 2 and "Hint" not in out
