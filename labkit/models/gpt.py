"""A GPT (decoder-only transformer language model), read top to bottom.

Order: config -> rotary positions -> causal self-attention -> MLP -> block -> GPT.
The defaults are the GPT-2 architecture (learned absolute positions, GELU with
the tanh approximation, pre-norm LayerNorm, output layer tied to the token
embedding), so ``GPT.from_hf`` can copy a Hugging Face ``GPT2LMHeadModel`` and
give the same logits. Options for a fast CPU recipe: rotary positions
(``pos_emb="rope"``), squared-ReLU MLP (``mlp="relu2"``), untied output layer.

Attention has two paths chosen by ``GPTConfig.fused_attention``: the explicit
masked softmax (to read and to visualise) and ``F.scaled_dot_product_attention``
(to be fast). They compute the same function.

Generation keeps a **KV cache** (``KVCache``): the keys and values of the tokens already read, one
buffer per layer, so each new token costs one position's work instead of the whole context's.
``model.generate(..., use_cache=True)`` (the default) gives the same tokens as ``use_cache=False``.

``model(idx, targets)`` returns a ``GPTOutput``: it unpacks as ``logits, loss`` (``model(x, y).loss`` works too);
``model.encode(idx)`` gives the last hidden states (after ``ln_f``), for heads of one's own.

Attention weights, as every labkit model gives them: ``model(idx, return_attention=True).attentions``, a list with
one (B, n_heads, T, T) tensor per layer (rows are queries, columns keys, each row sums to 1; taken before dropout),
built on ``labkit.attention.capture_attention(model)`` (keys ``"transformer.h.0.attn"``, ...). Asking for them uses
the explicit path for that call, whatever ``fused_attention`` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attention import capture_attention, is_capturing, record_attention
from ..generate import KVCache, sample_next
from ..layers import RotaryEmbedding, normal_init
from ..optim import decay_groups

__all__ = ["GPTConfig", "GPT", "GPTOutput", "CausalSelfAttention", "MLP", "Block", "Rotary", "ReLUSquared"]


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # number of token ids (GPT-2's BPE: 50257)
    context_length: int = 1024  # longest context the model can attend over
    n_layers: int = 12  # number of transformer blocks
    n_heads: int = 12  # attention heads per block
    d_model: int = 768  # width of the residual stream (d_model)
    dropout: float = 0.0  # dropout on embeddings, attention weights and residual branches
    bias: bool = True  # biases in Linear and LayerNorm layers (GPT-2: True)
    pos_emb: str = "learned"  # "learned" absolute position table (GPT-2) or "rope" (rotary, in attention)
    mlp: str = "gelu"  # "gelu" (tanh approximation, as GPT-2), "relu2" (squared ReLU) or "none" (attention only)
    tie_weights: bool = True  # output layer shares the token-embedding matrix (GPT-2: True)
    fused_attention: bool = True  # F.scaled_dot_product_attention (fast) vs explicit masked softmax
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon (GPT-2: 1e-5)
    rope_base: float = 10000.0  # RoPE frequency base (only used when pos_emb == "rope")

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.pos_emb not in ("learned", "rope"):
            raise ValueError(f"pos_emb must be 'learned' or 'rope', got {self.pos_emb!r}")
        if self.mlp not in ("gelu", "relu2", "none"):
            raise ValueError(f"mlp must be 'gelu', 'relu2' or 'none' (attention only), got {self.mlp!r}")
        if self.pos_emb == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError("rotary positions need an even head size (d_model // n_heads)")

    @classmethod
    def tiny(cls, **overrides) -> "GPTConfig":
        """A seconds-on-CPU preset for tests: 2 layers, 2 heads, width 32, context 32."""
        kw = dict(vocab_size=64, context_length=32, n_layers=2, n_heads=2, d_model=32)
        kw.update(overrides)
        return cls(**kw)


class _GPTFields(NamedTuple):
    logits: torch.Tensor  # (B, T, V) next-token scores
    loss: torch.Tensor | None = None  # mean cross-entropy against ``targets`` (None without targets)


class GPTOutput(_GPTFields):
    """What ``GPT.forward`` returns. It unpacks as nanoGPT's pair, ``logits, loss = model(x, y)``; the attention
    weights asked for with ``return_attention=True`` are the ``attentions`` attribute (None otherwise)."""

    attentions: list | None = None  # per layer (B, n_heads, T, T)


class Rotary(RotaryEmbedding):
    """Rotary position embedding (RoPE, Su et al. 2021), "rotate half" layout as in GPT-NeoX/Llama:
    ``labkit.layers.RotaryEmbedding`` with nanoGPT's argument names (head_size, context_length)."""

    def __init__(self, head_size: int, context_length: int, base: float = 10000.0):
        super().__init__(head_size, context_length, base)


class ReLUSquared(torch.autograd.Function):
    """relu(x)^2 with a hand-written backward, 2 relu(x) * grad: the same numbers as
    ``F.relu(x).square()`` from fewer passes over memory (it keeps only relu(x) for the backward)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return grad * r * 2  # d/dx relu(x)^2 = 2 relu(x) (0 where x < 0)


class CausalSelfAttention(nn.Module):
    captures_attention = True  # labkit.attention.capture_attention collects its weights

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.fused = config.fused_attention
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        hs = config.d_model // config.n_heads
        self.rotary = Rotary(hs, config.context_length, config.rope_base) if config.pos_emb == "rope" else None
        mask = torch.tril(torch.ones(config.context_length, config.context_length, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, config.context_length, config.context_length), persistent=False)

    def forward(self, x: torch.Tensor, need_weights: bool = False, cache: KVCache | None = None, layer: int = 0):
        """x (B, T, C) -> (output (B, T, C), attention weights or None). With ``cache``, x holds the tokens
        after the ``cache.length`` already cached, and their keys and values join the cache (layer ``layer``)."""
        B, T, C = x.size()
        nh, hs = self.n_heads, C // self.n_heads
        offset = cache.length if cache is not None else 0  # absolute position of x's first token
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if self.rotary is not None:
            q, k = self.rotary(q, offset), self.rotary(k, offset)
        if cache is not None:
            k, v = cache.update(layer, k, v, offset)  # (B, nh, offset + T, hs): the past and the new
        S = k.size(-2)  # keys: offset + T
        att = None
        if self.fused and not need_weights and not is_capturing(self):
            p = self.dropout if self.training else 0.0
            if offset == 0 or T == 1:  # a plain causal square, or one query that may see every key
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=offset == 0)
            else:  # queries offset..S-1 against keys 0..S-1: rows offset.. of the causal mask
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask[:, :, offset:S, :S], dropout_p=p)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, S)
            att = att.masked_fill(~self.mask[:, :, offset:S, :S], float("-inf"))  # no peeking ahead
            att = F.softmax(att, dim=-1)  # each query's weights over keys sum to 1
            record_attention(self, att)  # for capture_attention, if one is listening
            y = self.attn_dropout(att) @ v  # (B, nh, T, S) @ (B, nh, S, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y)), att


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.kind = config.mlp
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, 4C)
        h = F.gelu(h, approximate="tanh") if self.kind == "gelu" else ReLUSquared.apply(h)
        return self.dropout(self.c_proj(h))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x)). With ``mlp="none"`` the block is attention
    only (no ln_2, no mlp): the setting in which Olsson et al. (2022) took induction heads apart."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        if config.mlp != "none":
            self.ln_2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)
            self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, need_weights: bool = False, cache: KVCache | None = None, layer: int = 0):
        a, att = self.attn(self.ln_1(x), need_weights, cache, layer)
        x = x + a
        if hasattr(self, "mlp"):
            x = x + self.mlp(self.ln_2(x))
        return x, att


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layers)]),
                ln_f=nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias),
            )
        )
        if config.pos_emb == "learned":
            self.transformer["wpe"] = nn.Embedding(config.context_length, config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one matrix, two uses
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 n_layers)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    _init_weights = staticmethod(normal_init)  # N(0, 0.02^2) weights, zero biases (labkit.layers.normal_init)

    def encode(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> the last hidden states (B, T, d_model), after the final LayerNorm ``ln_f``.
        With ``cache`` (``new_cache()``), idx continues the cached tokens and joins them."""
        B, T = idx.size()
        offset = cache.length if cache is not None else 0
        if offset + T > self.config.context_length:
            raise ValueError(f"sequence length {offset + T} exceeds context_length {self.config.context_length}")
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.pos_emb == "learned":
            x = x + self.transformer.wpe(torch.arange(offset, offset + T, device=idx.device))  # (B, T, C) + (T, C)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x, _ = block(x, cache=cache, layer=i)
        if cache is not None:
            cache.length = offset + T
        return self.transformer.ln_f(x)  # (B, T, C)

    def new_cache(self) -> KVCache:
        """An empty KV cache for this model (up to ``context_length`` positions)."""
        return KVCache(self.config.n_layers, self.config.context_length)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, return_attention: bool = False,
                cache: KVCache | None = None) -> GPTOutput:
        """idx (B, T) token ids -> ``GPTOutput``: ``logits`` (B, T, V), ``loss`` (or None), ``attentions``; ``targets``
        (B, T): -100 is ignored. ``return_attention``: ``attentions`` holds each layer's weights (B, n_heads, T, T)
        (``labkit.attention.capture_attention`` underneath). With ``cache`` (a ``KVCache``), idx continues the
        cached tokens (see ``generate``)."""
        if return_attention:
            with capture_attention(self) as attn:
                out = self.forward(idx, targets, cache=cache)
            out.attentions = attn.layers()
            return out
        logits = self.lm_head(self.encode(idx, cache))  # (B, T, V)
        loss = None
        if targets is not None:
            B, T = idx.size()
            loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-100)
        return GPTOutput(logits, loss)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (B, T) -> (B, T + max_new_tokens).

        Each step sees at most the last ``context_length`` tokens. With ``use_cache`` (the default) the keys
        and values of the tokens read are kept (``KVCache``), so a step reads only the newest token;
        once the text is longer than ``context_length`` the window slides, every position changes, and each
        step recomputes its window as without the cache. The tokens are the same either way. Call
        ``model.eval()`` first if the model has dropout. ``top_k=1`` is greedy (argmax) decoding.
        """
        cache = self.new_cache() if use_cache else None
        for _ in range(max_new_tokens):
            if cache is not None and idx.size(1) <= self.config.context_length:
                logits = self(idx[:, cache.length :], cache=cache).logits  # only the tokens not cached yet
            else:
                cache = None  # the window slides: positions shift, the cache no longer applies
                logits = self(idx[:, -self.config.context_length :]).logits  # (B, <=context_length, V)
            next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat((idx, next_id), dim=1)  # (B, T+1)
        return idx

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (a tied matrix counts once); ``non_embedding`` leaves out the
        position table and the token embedding (the usual count in scaling-law plots)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel()
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                n -= self.lm_head.weight.numel()
        return n

    def configure_optimizers(
        self, weight_decay: float = 0.1, learning_rate: float = 6e-4, betas: tuple[float, float] = (0.9, 0.95)
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on matrices (>= 2-D) only, not on biases and LayerNorm gains
        (nanoGPT's name for ``labkit.optim.decay_groups`` in an AdamW)."""
        groups = decay_groups((p for p in self.parameters() if p.requires_grad), weight_decay)
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)

    # ------------------------------------------------------------------------
    # loading published weights

    @classmethod
    def from_hf(cls, hf_model, **overrides) -> "GPT":
        """Copy a ``transformers.GPT2LMHeadModel`` into a new GPT (``overrides`` change config
        fields such as ``fused_attention`` or ``dropout``). HF's Conv1D stores weights as
        (in, out), the transpose of ``nn.Linear``'s (out, in)."""
        hc = hf_model.config
        if hc.activation_function not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise ValueError(f"unsupported activation {hc.activation_function!r} (GPT-2 uses gelu_new)")
        if hc.n_inner not in (None, 4 * hc.n_embd) or getattr(hc, "scale_attn_by_inverse_layer_idx", False):
            raise ValueError("only the standard GPT-2 architecture can be copied")
        kw = dict(
            vocab_size=hc.vocab_size, context_length=hc.n_positions, n_layers=hc.n_layer, n_heads=hc.n_head,
            d_model=hc.n_embd, dropout=hc.resid_pdrop, bias=True, pos_emb="learned", mlp="gelu",
            tie_weights=bool(getattr(hc, "tie_word_embeddings", True)), layer_norm_eps=hc.layer_norm_epsilon,
        )  # fmt: skip
        kw.update(overrides)
        model = cls(GPTConfig(**kw))
        src = dict(hf_model.state_dict())  # our names are HF's names
        src["lm_head.weight"] = hf_model.lm_head.weight.detach()  # may be left out of HF's dict when tied
        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        new = {}
        for name in model.state_dict():
            new[name] = src[name].t() if name.endswith(conv1d) else src[name]  # Conv1D (in, out) -> (out, in)
        model.load_state_dict(new)
        return model

    @classmethod
    def from_pretrained(cls, name: str = "gpt2", **overrides) -> "GPT":
        """Load published GPT-2 weights ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl") via
        ``transformers``; needs the Hugging Face hub or a copy already in the local HF cache."""
        try:
            from transformers import GPT2LMHeadModel
        except ImportError as e:  # pragma: no cover - transformers is a test extra
            raise RuntimeError("GPT.from_pretrained needs `transformers`: pip install transformers") from e
        try:
            hf_model = GPT2LMHeadModel.from_pretrained(name)
        except OSError as e:
            raise RuntimeError(
                f"Could not load the GPT-2 weights {name!r}: the Hugging Face hub is offline or unreachable "
                "from here and no copy was found in the local Hugging Face cache.\n"
                "What to do: run this where the internet is available (e.g. Colab or Binder), or "
                "pre-download once on a connected machine with\n"
                f"    python -c \"from transformers import AutoTokenizer, GPT2LMHeadModel; "
                f"GPT2LMHeadModel.from_pretrained('{name}'); AutoTokenizer.from_pretrained('{name}')\"\n"
                "and copy the Hugging Face cache (~/.cache/huggingface, or $HF_HOME) to this machine.\n"
                f"(underlying error: {type(e).__name__}: {e})"
            ) from e
        return cls.from_hf(hf_model, **overrides)
