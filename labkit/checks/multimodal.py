"""Checkers for notebook 14 (modality: CLIP's contrastive loss, one cross-attention fusion step); see
labkit.checks._core."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ._core import Case, CheckResult, check_close

__all__ = ["check_info_nce", "check_cross_attention_fusion"]


# --- exercise: the symmetric InfoNCE loss ------------------------------------------------------------------


def _info_nce_reference(image_features, text_features, logit_scale):
    from labkit.models.clip import info_nce

    logits = logit_scale.exp() * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).t()
    return info_nce(logits)


def _info_nce_cases() -> list[Case]:
    g = torch.Generator().manual_seed(140)

    def case(n, d, scale):
        return (torch.randn(n, d, generator=g) * 3, torch.randn(n, d, generator=g), torch.tensor(math.log(scale)))

    return [Case("4 pairs in 8 dimensions, temperature 0.07", case(4, 8, 1 / 0.07)),
            Case("16 pairs in 32 dimensions, scale 10", case(16, 32, 10.0)),
            Case("one pair (the loss is 0)", case(1, 5, 1 / 0.07))]


def _one_sided(image_features, text_features, logit_scale):
    logits = logit_scale.exp() * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).t()
    return F.cross_entropy(logits, torch.arange(len(logits)))


def _unnormalised(image_features, text_features, logit_scale):
    from labkit.models.clip import info_nce

    return info_nce(logit_scale.exp() * image_features @ text_features.t())


def _scale_not_exp(image_features, text_features, logit_scale):
    from labkit.models.clip import info_nce

    return info_nce(logit_scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).t())


def check_info_nce(learner_fn: Callable) -> CheckResult:
    """Notebook 14: ``info_nce(image_features, text_features, logit_scale)`` for N matching pairs (N, d) -> the
    symmetric InfoNCE loss of the similarities exp(logit_scale) * cos(image_i, text_j): the mean of the
    cross-entropy over each row (image -> its caption) and over each column (caption -> its image)."""
    return check_close(
        "info_nce", learner_fn, _info_nce_reference, _info_nce_cases(),
        hint=("Hint: normalise both with F.normalize(..., dim=-1); logits = logit_scale.exp() * img @ txt.T; "
              "targets = torch.arange(N); loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2."),
        mistakes=[(_one_sided, "Hint: CLIP's loss is symmetric: add the cross-entropy of the columns (logits.T), "
                               "each caption picking its image, and average the two."),
                  (_unnormalised, "Hint: the similarity is a cosine: F.normalize both feature sets before the product."),
                  (_scale_not_exp, "Hint: logit_scale is a log: multiply by logit_scale.exp() (1 / temperature).")],
        atol=1e-5, rtol=1e-5,
    )


# --- exercise: one cross-attention fusion step -------------------------------------------------------------


def _fusion_reference(h, context, context_mask, w_q, w_k, w_v, w_o, n_heads):
    from labkit.attention import MultiHeadAttention

    B, C, H, W = h.shape
    attn = MultiHeadAttention(C, n_heads, bias=False)
    with torch.no_grad():
        for lin, w in [(attn.q_proj, w_q), (attn.k_proj, w_k), (attn.v_proj, w_v), (attn.out_proj, w_o)]:
            lin.weight.copy_(w)
        q = h.flatten(2).transpose(1, 2)
        out, _ = attn(q, context, context, key_mask=context_mask)
    return h + out.transpose(1, 2).reshape(B, C, H, W)


def _fusion_cases() -> list[Case]:
    g = torch.Generator().manual_seed(141)

    def case(B, C, H, T, n_heads, pads):
        w = [torch.randn(C, C, generator=g) / math.sqrt(C) for _ in range(4)]
        mask = torch.ones(B, T, dtype=torch.bool)  # True at the caption's tokens
        for b, p in enumerate(pads):
            if p:
                mask[b, T - p:] = False  # the padding
        return (torch.randn(B, C, H, H, generator=g), torch.randn(B, T, C, generator=g), mask, *w, n_heads)

    return [Case("one image 4x4 with 8 channels, a 5-token caption, 1 head", case(1, 8, 4, 5, 1, [0])),
            Case("2 images, 2 heads, the second caption padded by 3 tokens", case(2, 8, 4, 6, 2, [0, 3])),
            Case("3 images 2x2 with 12 channels, 4 heads, padding", case(3, 12, 2, 7, 4, [2, 0, 5]))]


def _fusion_mistake(mask: bool = True, scale: bool = True, residual: bool = True):
    def fuse(h, context, context_mask, w_q, w_k, w_v, w_o, n_heads):
        B, C, H, W = h.shape
        hd = C // n_heads
        q = (h.flatten(2).transpose(1, 2) @ w_q.t()).view(B, -1, n_heads, hd).transpose(1, 2)
        k = (context @ w_k.t()).view(B, -1, n_heads, hd).transpose(1, 2)
        v = (context @ w_v.t()).view(B, -1, n_heads, hd).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / (math.sqrt(hd) if scale else 1.0)
        if mask:
            scores = scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, H * W, C) @ w_o.t()
        out = out.transpose(1, 2).reshape(B, C, H, W)
        return h + out if residual else out
    return fuse


def check_cross_attention_fusion(learner_fn: Callable) -> CheckResult:
    """Notebook 14: ``fuse(h, context, context_mask, w_q, w_k, w_v, w_o, n_heads)``: image features h (B, C, H, W)
    attend to caption features context (B, T, C): the H*W pixels are the queries (h flattened, times w_q^T),
    the tokens the keys and values (context times w_k^T, w_v^T), split into n_heads heads, scaled dot-product
    attention with the padding tokens masked out (``context_mask`` is True at real tokens, False at padding), the
    heads concatenated and projected by w_o^T, reshaped to (B, C, H, W) and added to h. Equal to ``labkit.attention.MultiHeadAttention`` (no biases)."""
    return check_close(
        "cross_attention_fusion", learner_fn, _fusion_reference, _fusion_cases(),
        hint=("Hint: q = h.flatten(2).transpose(1, 2) @ w_q.T (B, H*W, C); k, v from context; heads: .view(B, -1, "
              "n_heads, C // n_heads).transpose(1, 2); scores / sqrt(head_dim); masked_fill the padding with -inf; "
              "softmax over the tokens; back to (B, C, H, W) and add h."),
        mistakes=[(_fusion_mistake(mask=False), "Hint: mask the padding tokens (context_mask is True at the real ones): "
                                                "scores.masked_fill(~context_mask[:, None, None, :], float('-inf')) "
                                                "before the softmax."),
                  (_fusion_mistake(scale=False), "Hint: divide the scores by sqrt(head_dim) = sqrt(C // n_heads)."),
                  (_fusion_mistake(residual=False), "Hint: fusion is residual: return h + the attention's output.")],
        atol=1e-5, rtol=1e-4,
    )
