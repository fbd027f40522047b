"""Building blocks of a transformer: positional encodings, feed-forward network, encoder and decoder blocks.

Blocks follow ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (batch first) and can copy
their weights with ``from_torch``. Masks follow labkit's convention: bool True = may attend (a real token).

Attention weights of any block or stack (self-attention, and a decoder's cross-attention) come out with
``labkit.attention.capture_attention``: ``with capture_attention(decoder) as attn: decoder(x, memory)``
gives ``attn["layers.0.self_attn"]``, ``attn["layers.0.cross_attn"]``, ... (B, n_heads, T_q, T_k).
The models in ``labkit.models`` share ``RotaryEmbedding``, ``FeedForward`` and ``normal_init`` from here.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.attention import MultiHeadAttention

__all__ = [
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "rotate_half",
    "FeedForward",
    "normal_init",
    "EncoderBlock",
    "DecoderBlock",
    "Encoder",
    "Decoder",
]

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}  # GELU is the exact (erf) one, as F.gelu


def _check_length(x: Tensor, d_model: int, context_length: int, offset: int = 0) -> None:
    if x.dim() < 2 or x.size(-1) != d_model:
        raise ValueError(f"expected input of shape (..., T, {d_model}), got {tuple(x.shape)}")
    if offset + x.size(-2) > context_length:
        raise ValueError(
            f"sequence too long: positions {offset}..{offset + x.size(-2) - 1} but context_length={context_length}; "
            f"build the module with a larger context_length"
        )


# ---------------------------------------------------------------- positions


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoids of Vaswani et al. (2017).

    PE[pos, 2i] = sin(pos / 10000^(2i/d_model)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d_model)); buffer ``pe``.
    """

    def __init__(self, d_model: int, context_length: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model, self.context_length = d_model, context_length
        self.dropout = nn.Dropout(dropout)
        pos = torch.arange(context_length, dtype=torch.float32).unsqueeze(1)  # (context_length, 1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(d/2),) the even indices 2i
        angle = pos / 10000.0 ** (two_i / d_model)  # (context_length, ceil(d/2))
        pe = torch.zeros(context_length, d_model)
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # odd d_model: one fewer cosine column
        self.register_buffer("pe", pe, persistent=False)  # (context_length, d_model), not a parameter

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, d_model) -> dropout(x + PE[:T])."""
        _check_length(x, self.d_model, self.context_length)
        return self.dropout(x + self.pe[: x.size(-2)].to(x.dtype))


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned vector per position (GPT-2, BERT): an ``nn.Embedding`` indexed by 0..T-1."""

    def __init__(self, context_length: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model, self.context_length = d_model, context_length
        self.embedding = nn.Embedding(context_length, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, d_model) -> dropout(x + embedding(0..T-1))."""
        _check_length(x, self.d_model, self.context_length)
        pos = torch.arange(x.size(-2), device=x.device)  # (T,)
        return self.dropout(x + self.embedding(pos))


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: a 90-degree turn of each (x1[i], x2[i]) pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021), "rotate half" layout as in HF Llama / GPT-NeoX.

    Pair (x[i], x[i + dim/2]) at position m is rotated by the angle m * base^(-2i/dim).
    Buffers ``cos`` and ``sin``: (context_length, dim). GPT's rotary positions (``labkit.models.gpt``) are this module.
    """

    def __init__(self, dim: int, context_length: int = 2048, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"RotaryEmbedding needs an even dim (it rotates pairs), got dim={dim}")
        self.dim, self.context_length, self.base = dim, context_length, base
        inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
        angle = torch.arange(context_length, dtype=torch.float32)[:, None] * inv_freq  # (context_length, dim/2)
        angle = torch.cat((angle, angle), dim=-1)  # (context_length, dim): pair i and i + dim/2 share an angle
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)
        # rotate_half(x) * sin = cat(-x2, x1) * sin = cat(x2, x1) * cat(-sin, sin): a table with the sign in it
        # lets forward swap the halves without negating and fuse the add into the multiply (a pass fewer on a CPU)
        half = angle[:, : dim // 2]
        self.register_buffer("signed_sin", torch.cat((-half, half), dim=-1).sin(), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Rotate x (..., T, dim), e.g. queries (B, n_heads, T, head_dim), by positions offset..offset+T-1."""
        _check_length(x, self.dim, self.context_length, offset)
        T = x.size(-2)
        cos = self.cos[offset : offset + T].to(x.dtype)  # (T, dim), broadcasts over the leading dims
        signed_sin = self.signed_sin[offset : offset + T].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # (..., T, dim/2) each
        swapped = torch.cat((x2, x1), dim=-1)  # (..., T, dim)
        return torch.addcmul(x * cos, swapped, signed_sin)  # x cos + rotate_half(x) sin


# ---------------------------------------------------------------- initialisation and feed-forward


def normal_init(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2's and BERT's initialisation, for ``model.apply``: Linear and Embedding weights ~ N(0, std^2), biases 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class FeedForward(nn.Module):
    """Position-wise feed-forward network: linear1 -> activation -> dropout -> linear2."""

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu", bias: bool = True
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., d_model) -> (..., d_model), each position on its own."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


# ---------------------------------------------------------------- blocks


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each with a residual connection and a LayerNorm.

    ``norm_first=False``: post-norm, x = norm(x + f(x)) (original paper); True: pre-norm, x = x + f(norm(x)) (GPT-2).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, bias=bias)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)  # on the attention output, before the residual add
        self.dropout2 = nn.Dropout(dropout)  # on the feed-forward output, before the residual add

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model). key_mask (B, T): True at real tokens; bool attn_mask: True = may
        attend."""
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), key_mask, attn_mask, is_causal)
            x = x + self.dropout2(self.ff(self.norm2(x)))
        else:
            x = self.norm1(x + self._self_attention(x, key_mask, attn_mask, is_causal))
            x = self.norm2(x + self.dropout2(self.ff(x)))
        return x

    def _self_attention(self, x, key_mask, attn_mask, is_causal):
        out, _ = self.self_attn(x, x, x, attn_mask=attn_mask, key_mask=key_mask, is_causal=is_causal)
        return self.dropout1(out)

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> "EncoderBlock":
        """An EncoderBlock with the weights and settings of a batch-first ``nn.TransformerEncoderLayer``."""
        _check_torch_layer(layer, nn.TransformerEncoderLayer)
        block = cls(**_block_settings(layer))
        block.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        _copy_common(block, layer, n_norms=2)
        return block


class DecoderBlock(nn.Module):
    """Masked self-attention, cross-attention over the encoder's ``memory``, then feed-forward.

    Each has a residual connection and a LayerNorm, placed as ``norm_first`` says (see ``EncoderBlock``).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, bias=bias)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, bias=bias)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        is_causal: bool = True,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, d_model), memory (B, S, d_model) -> (B, T, d_model). ``memory_mask`` (B, S) and ``key_mask``
        (B, T): True at real tokens, False at padding."""
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), key_mask, is_causal)
            x = x + self._cross_attention(self.norm2(x), memory, memory_mask)
            x = x + self.dropout3(self.ff(self.norm3(x)))
        else:
            x = self.norm1(x + self._self_attention(x, key_mask, is_causal))
            x = self.norm2(x + self._cross_attention(x, memory, memory_mask))
            x = self.norm3(x + self.dropout3(self.ff(x)))
        return x

    def _self_attention(self, x, key_mask, is_causal):
        out, _ = self.self_attn(x, x, x, key_mask=key_mask, is_causal=is_causal)
        return self.dropout1(out)

    def _cross_attention(self, x, memory, memory_mask):
        # queries from the decoder, keys and values from the encoder
        out, _ = self.cross_attn(x, memory, memory, key_mask=memory_mask)
        return self.dropout2(out)

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> "DecoderBlock":
        """A DecoderBlock with the weights and settings of a batch-first ``nn.TransformerDecoderLayer``."""
        _check_torch_layer(layer, nn.TransformerDecoderLayer)
        block = cls(**_block_settings(layer))
        block.self_attn = MultiHeadAttention.from_torch(layer.self_attn)
        block.cross_attn = MultiHeadAttention.from_torch(layer.multihead_attn)
        _copy_common(block, layer, n_norms=3)
        return block


# ---------------------------------------------------------------- stacks


class Encoder(nn.Module):
    """``n_layers`` EncoderBlocks, then a final LayerNorm if ``final_norm``.

    ``final_norm`` defaults to ``norm_first``: pre-norm stacks need one (GPT-2's ln_f), post-norm ones do not.
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        final_norm: bool | None = None,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderBlock(d_model, n_heads, d_ff, dropout, activation, norm_first, layer_norm_eps)
            for _ in range(n_layers)
        )
        final_norm = norm_first if final_norm is None else final_norm
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if final_norm else None

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model). key_mask (B, T): True at real tokens, False at padding."""
        for layer in self.layers:
            x = layer(x, key_mask, attn_mask, is_causal)
        return x if self.norm is None else self.norm(x)


class Decoder(nn.Module):
    """``n_layers`` DecoderBlocks, then a final LayerNorm if ``final_norm`` (default: when pre-norm)."""

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        final_norm: bool | None = None,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout, activation, norm_first, layer_norm_eps)
            for _ in range(n_layers)
        )
        final_norm = norm_first if final_norm is None else final_norm
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps) if final_norm else None

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        is_causal: bool = True,
        key_mask: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, d_model), memory (B, S, d_model) -> (B, T, d_model); masks: True at real tokens."""
        for layer in self.layers:
            x = layer(x, memory, memory_mask, is_causal, key_mask)
        return x if self.norm is None else self.norm(x)


# ---------------------------------------------------------------- copying PyTorch's layers


def _check_torch_layer(layer: nn.Module, kind: type) -> None:
    if not isinstance(layer, kind):
        raise TypeError(f"expected an nn.{kind.__name__}, got {type(layer).__name__}")
    if not layer.self_attn.batch_first:
        raise ValueError(f"from_torch needs nn.{kind.__name__}(..., batch_first=True); got batch_first=False")


def _activation_name(layer: nn.Module) -> str:
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if (act is F.gelu or isinstance(act, nn.GELU)) and getattr(act, "approximate", "none") == "none":
        return "gelu"
    raise ValueError(f"from_torch supports activation 'relu' or 'gelu' (F.relu, F.gelu, nn.ReLU, nn.GELU), got {act!r}")


def _block_settings(layer: nn.Module) -> dict:
    return dict(
        d_model=layer.linear1.in_features,
        n_heads=layer.self_attn.num_heads,
        d_ff=layer.linear1.out_features,
        dropout=layer.dropout.p,
        activation=_activation_name(layer),
        norm_first=layer.norm_first,
        layer_norm_eps=layer.norm1.eps,
        bias=layer.linear1.bias is not None,
    )


def _copy_common(block: nn.Module, layer: nn.Module, n_norms: int) -> None:
    """Copy feed-forward and LayerNorm weights and the dropout rates; match device, dtype and train/eval mode."""
    block.to(device=layer.linear1.weight.device, dtype=layer.linear1.weight.dtype)
    block.ff.linear1.load_state_dict(layer.linear1.state_dict())
    block.ff.linear2.load_state_dict(layer.linear2.state_dict())
    for i in range(1, n_norms + 1):
        getattr(block, f"norm{i}").load_state_dict(getattr(layer, f"norm{i}").state_dict())
        getattr(block, f"dropout{i}").p = getattr(layer, f"dropout{i}").p
    block.train(layer.training)
