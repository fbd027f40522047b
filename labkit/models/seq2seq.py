"""The original transformer (Vaswani et al., 2017): an encoder reads the source, a decoder writes the target.

Built from labkit's own blocks (``labkit.layers.Encoder`` and ``Decoder``), not ``nn.Transformer``::

    src ids (B, S) --embed * sqrt(d) + sinusoids--> Encoder --> memory (B, S, d)
    tgt ids (B, T) --embed * sqrt(d) + sinusoids--> Decoder(causal self-attention,
                                                            cross-attention over memory) --> logits (B, T, V_tgt)

Teacher forcing: ``model(src, tgt_in, tgt_out)`` takes the target shifted right
(``tgt_in = [bos] y``) and the target to predict (``tgt_out = y [eos]``) and returns
a ``Seq2SeqOutput`` (``logits, loss``); the loss is label-smoothed cross-entropy over the
non-padding target positions. ``encode`` and ``decode`` are the two halves, which
decoding (``labkit.generate.seq2seq_greedy`` / ``seq2seq_beam_search``) calls
separately so that the encoder runs once per sentence.

Padding: ``pad_id`` marks padding in both languages. The encoder's self-attention and
the decoder's cross-attention are given the source's key-padding mask, so a padded
source position is never attended to. Target padding always comes after every real
token (sentences are padded on the right), so the causal mask already hides it from
them; the loss ignores the outputs at padded positions.

Attention weights, as every labkit model gives them: ``model(src, tgt_in, return_attention=True).attentions``,
here a dict of per-layer lists: ``"encoder"`` (B, h, S, S), ``"decoder"`` (B, h, T, T) and ``"cross"`` (B, h, T, S)
(``labkit.attention.capture_attention(model)`` underneath, which also sees the separate ``encode``/``decode`` calls).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labkit.attention import MultiHeadAttention, capture_attention
from labkit.layers import Decoder, Encoder, SinusoidalPositionalEncoding

__all__ = ["Seq2SeqConfig", "Seq2SeqOutput", "Seq2SeqTransformer", "shift_right"]


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 256  # width of the residual stream
    n_heads: int = 4
    n_encoder_layers: int = 2
    n_decoder_layers: int = 2
    d_ff: int = 1024  # feed-forward inner width (4 * d_model, as in the paper)
    dropout: float = 0.1  # on embeddings, attention weights, sublayer outputs
    activation: str = "relu"
    norm_first: bool = True  # pre-norm (trains without a careful warmup); False: the paper's post-norm
    context_length: int = 64  # longest source or target in tokens
    pad_id: int = 0  # padding, in both vocabularies
    bos_id: int = 1  # starts every decoder input
    eos_id: int = 2  # ends every target
    share_embeddings: bool = False  # one table for source, target and output: needs one shared vocabulary
    tie_output: bool = True  # the output layer reuses the target embedding matrix (Press & Wolf, 2017)
    label_smoothing: float = 0.1  # the paper's 0.1


class _Seq2SeqFields(NamedTuple):
    logits: Tensor  # (B, T, tgt_vocab_size)
    loss: Tensor | None  # label-smoothed cross-entropy over non-padding targets, if targets were given


class Seq2SeqOutput(_Seq2SeqFields):
    """What ``Seq2SeqTransformer.forward`` returns: unpacks as ``logits, loss``; with ``return_attention=True``
    the ``attentions`` attribute holds ``{"encoder": [...], "decoder": [...], "cross": [...]}``, one
    (B, n_heads, T_q, T_k) tensor per layer in each list (None otherwise)."""

    attentions: dict | None = None


def shift_right(tgt: Tensor, bos_id: int) -> Tensor:
    """Teacher forcing's decoder input: ``[bos] tgt[:-1]`` along the last dim."""
    bos = torch.full_like(tgt[..., :1], bos_id)
    return torch.cat((bos, tgt[..., :-1]), dim=-1)


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder transformer for translation; see the module docstring."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        c = self.config = config
        if c.share_embeddings and c.src_vocab_size != c.tgt_vocab_size:
            raise ValueError(
                f"share_embeddings=True needs one shared vocabulary, but src_vocab_size={c.src_vocab_size} "
                f"and tgt_vocab_size={c.tgt_vocab_size}; train one tokenizer on both languages or set "
                f"share_embeddings=False")
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(c, name) < min(c.src_vocab_size, c.tgt_vocab_size):
                raise ValueError(f"{name}={getattr(c, name)} is not an id of both vocabularies")
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.tgt_embed = self.src_embed if c.share_embeddings else nn.Embedding(
            c.tgt_vocab_size, c.d_model, padding_idx=c.pad_id)
        self.pos = SinusoidalPositionalEncoding(c.d_model, c.context_length, c.dropout)
        self.encoder = Encoder(c.n_encoder_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.activation,
                               c.norm_first)
        self.decoder = Decoder(c.n_decoder_layers, c.d_model, c.n_heads, c.d_ff, c.dropout, c.activation,
                               c.norm_first)
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size, bias=False)
        self._init_weights()
        if c.tie_output or c.share_embeddings:
            self.lm_head.weight = self.tgt_embed.weight

    def _init_weights(self) -> None:
        # Xavier-uniform matrices (as nn.Transformer), embeddings ~ N(0, 1/d) (fairseq) so that after the
        # sqrt(d) scaling a token vector has unit variance, like the sinusoids it is added to
        for name, p in self.named_parameters():
            if p.dim() >= 2 and "embed" not in name:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        # queries, keys and values as nn.MultiheadAttention initialises its packed (3d, d) in-projection:
        # Xavier over the stacked matrix, a bound of sqrt(6 / (d + 3d)) rather than sqrt(6 / 2d) for each
        for m in self.modules():
            if isinstance(m, MultiHeadAttention):
                bound = math.sqrt(6.0 / (4 * m.d_model))
                for proj in (m.q_proj, m.k_proj, m.v_proj):
                    nn.init.uniform_(proj.weight, -bound, bound)
        for emb in {id(e): e for e in (self.src_embed, self.tgt_embed)}.values():
            nn.init.normal_(emb.weight, mean=0.0, std=self.config.d_model ** -0.5)
            with torch.no_grad():
                emb.weight[self.config.pad_id].zero_()

    def num_params(self) -> int:
        """Parameters, a shared or tied matrix counted once."""
        return sum(p.numel() for p in self.parameters())

    def _check_ids(self, ids: Tensor, vocab_size: int, what: str) -> None:
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise ValueError(f"{what} must be a (B, T) tensor of token ids (torch.long), got "
                             f"{ids.dtype} {tuple(ids.shape)}")
        if ids.size(1) > self.config.context_length:
            raise ValueError(f"{what} has {ids.size(1)} tokens but the model takes at most context_length="
                             f"{self.config.context_length}; shorten the input or build a model with a larger context_length")
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"{what} holds ids outside 0..{vocab_size - 1} (min {int(ids.min())}, max "
                             f"{int(ids.max())}): was it encoded with the other language's tokenizer?")

    def token_mask(self, ids: Tensor) -> Tensor:
        """(B, T) bool, True at real tokens and False at padding: the key mask the attention modules take."""
        return ids.ne(self.config.pad_id)

    def _embed(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        return self.pos(table(ids) * math.sqrt(self.config.d_model))  # (B, T, d)

    def encode(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        """src ids (B, S) -> memory (B, S, d_model). The source mask (True at real tokens) defaults to
        ``src != pad_id``."""
        self._check_ids(src, self.config.src_vocab_size, "src")
        mask = self.token_mask(src) if src_mask is None else src_mask
        return self.encoder(self._embed(self.src_embed, src), key_mask=mask)

    def decode(self, tgt_in: Tensor, memory: Tensor, src_mask: Tensor | None = None,
               last_only: bool = False) -> Tensor:
        """Decoder inputs (B, T) and memory (B, S, d) -> logits (B, T, V); ``last_only``: (B, 1, V) for
        the last position only (decoding needs no more). ``src_mask`` (B, S): True at the source's real tokens."""
        self._check_ids(tgt_in, self.config.tgt_vocab_size, "tgt_in")
        h = self.decoder(self._embed(self.tgt_embed, tgt_in), memory, memory_mask=src_mask,
                         is_causal=True)  # (B, T, d)
        if last_only:
            h = h[:, -1:]
        return self.lm_head(h)

    def forward(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor | None = None,
                return_attention: bool = False) -> Seq2SeqOutput:
        """src (B, S), tgt_in (B, T) [and tgt_out (B, T)] -> ``Seq2SeqOutput``: ``logits`` (B, T, V), ``loss``, and
        with ``return_attention=True`` ``attentions`` (``labkit.attention.capture_attention`` underneath)."""
        if return_attention:
            with capture_attention(self) as attn:
                out = self.forward(src, tgt_in, tgt_out)
            out.attentions = {"encoder": attn.layers("encoder.*"), "decoder": attn.layers("decoder.*self_attn"),
                              "cross": attn.layers("decoder.*cross_attn")}
            return out
        src_mask = self.token_mask(src)
        logits = self.decode(tgt_in, self.encode(src, src_mask), src_mask)
        loss = None
        if tgt_out is not None:
            if tgt_out.shape != tgt_in.shape:
                raise ValueError(f"tgt_out {tuple(tgt_out.shape)} must have the shape of tgt_in "
                                 f"{tuple(tgt_in.shape)} (it is tgt_in shifted left by one)")
            loss = F.cross_entropy(logits.flatten(0, 1).float(), tgt_out.flatten(), ignore_index=self.config.pad_id,
                                   label_smoothing=self.config.label_smoothing)
        return Seq2SeqOutput(logits, loss)
