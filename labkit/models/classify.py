"""Classification heads on a pretrained backbone: a BERT (notebook 09) or a GPT (notebook 08).

``SequenceClassifier(backbone, n_classes, pooling)`` turns the backbone's last hidden states
(``backbone.encode``) into one vector per sequence and a linear layer into class logits:

* ``"cls"``: the hidden state of the first token (BERT's ``[CLS]``);
* ``"pooled"``: BERT's pooler on it, tanh(dense(h_[CLS])), pretrained by nothing in this lab's BERT
  (no next-sentence task) but what ``BertForSequenceClassification`` uses;
* ``"mean"``: the mean over the real (non-padding) tokens;
* ``"last"``: the hidden state of the last real token — for a GPT the only position that has read
  the whole sequence (causal attention), so right padding never reaches it.

``model(input_ids, attention_mask, labels)`` returns ``ClassifierOutput(logits, loss)``.
``features(...)`` gives the pooled vectors alone (a linear probe trains on them, frozen).
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import capture_attention

__all__ = ["ClassifierOutput", "SequenceClassifier", "POOLINGS"]

POOLINGS = ("cls", "pooled", "mean", "last")


class _ClassifierFields(NamedTuple):
    logits: Tensor  # (B, n_classes)
    loss: Tensor | None  # cross-entropy, if labels were given


class ClassifierOutput(_ClassifierFields):
    """Unpacks as ``logits, loss``; ``attentions`` is set with ``return_attention=True`` (None otherwise)."""

    attentions: list | None = None


def _width(backbone: nn.Module) -> int:
    return backbone.config.d_model


class SequenceClassifier(nn.Module):
    """A backbone with ``encode`` and a linear classification head on a pooled vector; see the module docstring."""

    def __init__(self, backbone: nn.Module, n_classes: int, pooling: str = "mean", dropout: float = 0.0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if not hasattr(backbone, "encode"):
            raise TypeError(f"{type(backbone).__name__} has no encode(...) returning hidden states (B, T, d); "
                            "labkit's BERT and GPT have one")
        if pooling == "pooled" and not hasattr(backbone, "pooler"):
            raise ValueError(f"pooling='pooled' needs a backbone with a pooler (BERT); "
                             f"{type(backbone).__name__} has none: use 'mean', 'last' or 'cls'")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        self.backbone, self.pooling, self.n_classes = backbone, pooling, n_classes
        self._encode_takes_mask = "attention_mask" in inspect.signature(backbone.encode).parameters
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(_width(backbone), n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def _hidden(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        if self._encode_takes_mask:
            return self.backbone.encode(input_ids, attention_mask)  # BERT: padding masked inside
        return self.backbone.encode(input_ids)  # GPT: causal, so right padding never reaches a real token

    def features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """input_ids (B, T), attention_mask (B, T) (1 = token, 0 = right padding) -> (B, d) pooled vectors."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                             f"{tuple(input_ids.shape)}")
        h = self._hidden(input_ids, attention_mask)  # (B, T, d)
        if self.pooling == "cls":
            return h[:, 0]
        if self.pooling == "pooled":
            return self.backbone.pooler(h)
        m = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
        if self.pooling == "mean":
            return (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        last = attention_mask.sum(1).clamp(min=1) - 1  # (B,): index of the last real token
        return h[torch.arange(h.size(0), device=h.device), last]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, return_attention: bool = False) -> ClassifierOutput:
        """``ClassifierOutput(logits (B, n_classes), loss)``; ``return_attention``: the backbone's attention weights
        as its ``attentions`` attribute, one (B, n_heads, T, T) tensor per layer."""
        if return_attention:
            with capture_attention(self) as attn:
                out = self.forward(input_ids, attention_mask, labels)
            out.attentions = attn.layers()
            return out
        logits = self.head(self.dropout(self.features(input_ids, attention_mask)))  # (B, n_classes)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return ClassifierOutput(logits, loss)


class DigitClassifier(nn.Module):
    """A small CNN for ``size`` x ``size`` digits in [-1, 1] (8: scikit-learn's; 28: MNIST's): two 3x3
    convolutions and a 2x2 max-pool (twice for 28x28), a 128-wide hidden layer (``features``: what the Fréchet
    distance compares) and the 10 logits."""

    def __init__(self, width: int = 32, hidden: int = 128, size: int = 8):
        super().__init__()
        self.size = size
        layers = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        if size > 16:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.conv = nn.Sequential(*layers)
        side = size // 4 if size > 16 else size // 2
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (1, self.size, self.size):
            raise ValueError(f"expected digits of shape (B, 1, {self.size}, {self.size}), got {tuple(x.shape)}")
        return self.hidden(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        was = self.training
        self.eval()
        out = self(x).argmax(-1)
        self.train(was)
        return out
