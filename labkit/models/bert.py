"""A BERT (bidirectional transformer encoder with a masked-LM head), read top to bottom.

Order: config -> embeddings -> self-attention -> block (with ``labkit.layers.FeedForward``)
-> MLM head -> pooler -> BERT, then ``mlm_loss`` and ``mask_tokens``, the 80/10/10
masking that makes the training data. The architecture is the original BERT's (post-norm blocks, exact
erf GELU, output layer tied to the word embeddings), so ``BERT.from_hf`` copies a
Hugging Face ``BertForMaskedLM`` (or ``BertForPreTraining`` / ``BertModel``) and
gives the same numbers.

``model(input_ids, attention_mask)`` returns a ``BERTOutput`` named tuple whose
first element is the MLM logits (B, T, V); it also carries ``loss``,
``hidden_states`` (last layer, (B, T, d_model)), ``pooled`` (B, d_model) and,
with ``return_attention=True``, ``attentions``: one (B, n_heads, T, T) tensor per
layer (rows are queries; padded keys get weight 0; taken before dropout), the
format bertviz's ``head_view`` expects after ``[a for a in out.attentions]``.
``return_attention`` is ``labkit.attention.capture_attention(model)`` underneath (keys
``"blocks.0.attn"``, ...). ``model.encode(input_ids, attention_mask)`` gives the
hidden states alone: the masked-LM loss (``mlm_loss``), pooling and fine-tuning
heads build on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attention import capture_attention, is_capturing, record_attention
from ..data import pad_batch
from ..device import module_device, to_device
from ..layers import FeedForward, normal_init

__all__ = ["BERTConfig", "BERT", "BERTOutput", "mask_tokens", "special_tokens_mask", "masked_batch", "mlm_loss",
           "mean_pool"]


@dataclass
class BERTConfig:
    vocab_size: int = 30522  # number of token ids (bert-base-uncased WordPiece: 30522)
    context_length: int = 512  # longest input (size of the learned position table)
    n_layers: int = 12  # number of encoder blocks
    n_heads: int = 12  # attention heads per block
    d_model: int = 768  # width of the hidden states
    d_ff: int = 3072  # inner width of the feed-forward network
    dropout: float = 0.1  # dropout on embeddings, attention weights and residual branches
    type_vocab_size: int = 2  # number of segment (token type) ids: sentence A / sentence B
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon (BERT: 1e-12)
    pad_token_id: int = 0  # id of [PAD]; its embedding row starts at 0 and gets no gradient
    fused_attention: bool = True  # F.scaled_dot_product_attention (fast) vs explicit masked softmax

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    @classmethod
    def tiny(cls, **overrides) -> "BERTConfig":
        """A seconds-on-CPU preset for tests: 2 layers, 2 heads, width 32, no dropout."""
        kw = dict(vocab_size=64, context_length=64, n_layers=2, n_heads=2, d_model=32, d_ff=64, dropout=0.0)
        kw.update(overrides)
        return cls(**kw)


class BERTOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V) masked-LM scores
    loss: torch.Tensor | None  # cross-entropy over positions whose label != -100
    hidden_states: torch.Tensor  # (B, T, d_model) last encoder layer
    pooled: torch.Tensor  # (B, d_model) tanh(dense(hidden of [CLS]))
    attentions: list | None  # per layer (B, n_heads, T, T), with return_attention=True


class Embeddings(nn.Module):
    def __init__(self, config: BERTConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.context_length, config.d_model)
        self.token_type = nn.Embedding(config.type_vocab_size, config.d_model)
        self.ln = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        T = input_ids.size(1)
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.position(pos) + self.token_type(token_type_ids)  # (B, T, d)
        return self.dropout(self.ln(x))


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention; padded keys (attention_mask == 0) are masked out."""

    captures_attention = True  # labkit.attention.capture_attention collects its weights

    def __init__(self, config: BERTConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.fused = config.fused_attention
        self.dropout = config.dropout
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key = nn.Linear(config.d_model, config.d_model)
        self.value = nn.Linear(config.d_model, config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)
        self.attn_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, need_weights: bool = False):
        B, T, C = x.size()  # keep: (B, 1, 1, T) bool, True = a real token
        nh, hs = self.n_heads, C // self.n_heads
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        att = None
        if self.fused and not need_weights and not is_capturing(self):
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)  # (B, nh, T, hs)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, T)
            att = att.masked_fill(~keep, torch.finfo(att.dtype).min)  # padded keys get weight 0
            att = F.softmax(att, dim=-1)
            record_attention(self, att)  # for capture_attention, if one is listening
            y = self.attn_dropout(att) @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.out(y), att


class Block(nn.Module):
    """Post-norm block (as in BERT and the original transformer): ln(x + sublayer(x))."""

    def __init__(self, config: BERTConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.ln_1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config.d_model, config.d_ff, activation="gelu")  # exact (erf) GELU, as BERT
        self.ln_2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor, need_weights: bool = False):
        a, att = self.attn(x, keep, need_weights)
        x = self.ln_1(x + self.dropout(a))
        x = self.ln_2(x + self.dropout(self.ffn(x)))
        return x, att


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder (weight tied to the word embeddings) + per-token bias."""

    def __init__(self, config: BERTConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.ln = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.ln(F.gelu(self.dense(h)))  # (B, T, d)
        return self.decoder(h) + self.bias  # (B, T, V)


class Pooler(nn.Module):
    """A sentence vector for classification: tanh(dense(hidden state of the first token, [CLS]))."""

    def __init__(self, config: BERTConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))  # (B, d)


class BERT(nn.Module):
    def __init__(self, config: BERTConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.mlm = MLMHead(config)
        self.pooler = Pooler(config)
        self.apply(self._init_weights)
        self.mlm.decoder.weight = self.embeddings.word.weight  # tied: one matrix, two uses
        with torch.no_grad():
            self.embeddings.word.weight[config.pad_token_id].zero_()

    _init_weights = staticmethod(normal_init)  # N(0, 0.02^2) weights, zero biases (labkit.layers.normal_init)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T); attention_mask (B, T) with 1 = token, 0 = padding -> the last encoder
        layer's hidden states (B, T, d_model)."""
        B, T = input_ids.size()
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = attention_mask.bool().view(B, 1, 1, T)  # (B, 1, 1, T): broadcast over heads and queries
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, d)
        for block in self.blocks:
            x, _ = block(x, keep)
        return x

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> BERTOutput:
        """input_ids (B, T); attention_mask (B, T) with 1 = token, 0 = padding; labels (B, T)
        with -100 where no loss is wanted. Returns ``BERTOutput(logits, loss, hidden_states, pooled, attentions)``."""
        if return_attention:
            with capture_attention(self) as attn:
                out = self.forward(input_ids, attention_mask, labels, token_type_ids)
            return out._replace(attentions=attn.layers())
        x = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, d)
        logits = self.mlm(x)  # (B, T, V)
        loss = None
        if labels is not None:
            B, T = input_ids.size()
            loss = F.cross_entropy(logits.view(B * T, -1), labels.reshape(B * T), ignore_index=-100)
        return BERTOutput(logits, loss, x, self.pooler(x), None)

    def num_params(self) -> int:
        """Number of parameters (the tied word-embedding matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_hf(cls, hf_model, **overrides) -> "BERT":
        """Copy a ``transformers`` ``BertForMaskedLM``, ``BertForPreTraining`` or ``BertModel``.

        Parts the source lacks keep their fresh initialisation: ``BertForMaskedLM`` has no
        pooler, ``BertModel`` no MLM head. ``overrides`` change config fields (e.g. ``dropout``).
        """
        hc = hf_model.config
        if hc.hidden_act != "gelu":
            raise ValueError(f"unsupported activation {hc.hidden_act!r} (BERT uses 'gelu')")
        kw = dict(
            vocab_size=hc.vocab_size, context_length=hc.max_position_embeddings, n_layers=hc.num_hidden_layers,
            n_heads=hc.num_attention_heads, d_model=hc.hidden_size, d_ff=hc.intermediate_size,
            dropout=hc.hidden_dropout_prob, type_vocab_size=hc.type_vocab_size,
            layer_norm_eps=hc.layer_norm_eps, pad_token_id=hc.pad_token_id or 0,
        )  # fmt: skip
        kw.update(overrides)
        model = cls(BERTConfig(**kw))
        bert = getattr(hf_model, "bert", hf_model)  # the encoder inside the task model
        e = bert.embeddings
        pairs = [  # (our module, HF module) with the same weight / bias layout
            (model.embeddings.word, e.word_embeddings), (model.embeddings.position, e.position_embeddings),
            (model.embeddings.token_type, e.token_type_embeddings), (model.embeddings.ln, e.LayerNorm),
        ]  # fmt: skip
        for ours, theirs in zip(model.blocks, bert.encoder.layer):
            a = theirs.attention
            pairs += [
                (ours.attn.query, a.self.query), (ours.attn.key, a.self.key), (ours.attn.value, a.self.value),
                (ours.attn.out, a.output.dense), (ours.ln_1, a.output.LayerNorm),
                (ours.ffn.linear1, theirs.intermediate.dense), (ours.ffn.linear2, theirs.output.dense),
                (ours.ln_2, theirs.output.LayerNorm),
            ]  # fmt: skip
        if getattr(bert, "pooler", None) is not None:
            pairs.append((model.pooler.dense, bert.pooler.dense))
        head = getattr(getattr(hf_model, "cls", None), "predictions", None)
        if head is not None:
            pairs += [(model.mlm.dense, head.transform.dense), (model.mlm.ln, head.transform.LayerNorm)]
        with torch.no_grad():
            for ours, theirs in pairs:
                ours.weight.copy_(theirs.weight)
                if getattr(ours, "bias", None) is not None:
                    ours.bias.copy_(theirs.bias)
            if head is not None:
                if head.decoder.weight.data_ptr() != e.word_embeddings.weight.data_ptr():
                    raise ValueError("the source's MLM decoder is not tied to its word embeddings")
                bias = head.decoder.bias if head.decoder.bias is not None else head.bias  # what HF adds
                model.mlm.bias.copy_(bias)
        return model


def mlm_loss(model: BERT, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits at the labelled positions (N, V)): ``model(input_ids, attention_mask, labels).loss``,
    with the output layer applied only where ``labels != -100`` (most of the cost of a step, on a CPU)."""
    x = model.encode(input_ids, attention_mask)  # (B, T, d)
    chosen = labels != -100  # (B, T)
    logits = model.mlm(x[chosen])  # (N, V): only the positions with a label
    return F.cross_entropy(logits, labels[chosen]), logits


def mask_tokens(
    input_ids: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    special_tokens_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (Devlin et al. 2019, sec. 3.1) -> (masked_input_ids, labels).

    Each non-special position is chosen with probability ``mlm_probability``; a chosen
    token becomes [MASK] 80% of the time, a random token 10%, stays unchanged 10%.
    ``labels`` hold the original id at chosen positions and -100 elsewhere.
    """
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability!r}")
    shape, dev = input_ids.shape, input_ids.device

    def coin(p: float) -> torch.Tensor:  # independent Bernoulli(p) per position
        return torch.bernoulli(torch.full(shape, p, device=dev), generator=generator).bool()

    # 1. choose positions to predict, never special tokens ([CLS], [SEP], [PAD], ...)
    chosen = coin(mlm_probability)
    if special_tokens_mask is not None:
        chosen &= ~special_tokens_mask.bool()
    labels = input_ids.masked_fill(~chosen, -100)
    # 2. 80% of the chosen become [MASK]
    to_mask = chosen & coin(0.8)
    masked = input_ids.masked_fill(to_mask, mask_token_id)
    # 3. half of the remaining 20% (10% overall) become a random token; the rest stay as they are
    to_random = chosen & ~to_mask & coin(0.5)
    random_ids = torch.randint(vocab_size, shape, device=dev, generator=generator, dtype=input_ids.dtype)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


@torch.no_grad()
def mean_pool(model: nn.Module, seqs: list[list[int]], pad_id: int = 0, batch_size: int = 500) -> torch.Tensor:
    """One vector per sentence (N, d_model): the mean of ``model.encode``'s last hidden states over
    the sentence's real tokens ([CLS] and [SEP] included, padding left out)."""
    was_training = model.training
    model.eval()
    out, device = [], module_device(model)
    for i in range(0, len(seqs), batch_size):
        ids, attn = to_device(pad_batch(seqs[i:i + batch_size], pad_id), device)
        h = model.encode(ids, attn)  # (B, T, d)
        m = attn.unsqueeze(-1).float()  # (B, T, 1): 1 on real tokens, 0 on padding
        out.append(((h * m).sum(1) / m.sum(1)).cpu())  # (B, d)
    model.train(was_training)
    return torch.cat(out)


def special_tokens_mask(input_ids: torch.Tensor, tok) -> torch.Tensor:
    """True where ``input_ids`` holds one of ``tok``'s special tokens ([PAD], [CLS], [SEP], ...), which
    are never masked; ``tok`` is a ``labkit.tokenizers.BPETokenizer`` (its special tokens take the first ids)."""
    return input_ids.lt(len(tok.special_ids))


def masked_batch(seqs: list[list[int]], tok, mlm_probability: float = 0.15,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad ``seqs`` and mask them 80/10/10 (``mask_tokens``) -> (masked input_ids, attention_mask, labels)."""
    ids, attn = pad_batch(seqs, tok.special_ids["[PAD]"])
    masked, labels = mask_tokens(ids, tok.special_ids["[MASK]"], tok.vocab_size, mlm_probability,
                                 special_tokens_mask(ids, tok), generator)
    return masked, attn, labels
