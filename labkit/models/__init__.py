"""The lab's models, one self-contained file each (config dataclass -> layers -> model).

``gpt``: decoder-only language model (GPT-2 architecture, copyable from Hugging Face).
``bert``: encoder with a masked-LM head, plus ``mask_tokens`` (BERT's 80/10/10 masking) and ``mlm_loss``.
``seq2seq``: the original encoder-decoder transformer for translation, from ``labkit.layers``' stacks.
``classify``: ``SequenceClassifier``, a classification head on a BERT's or a GPT's hidden states.

One convention for every model:

* ``model(...)`` returns a named tuple: ``GPTOutput(logits, loss)`` (so ``logits, loss = gpt(x, y)``
  still unpacks), ``BERTOutput(logits, loss, hidden_states, pooled, attentions)`` and
  ``Seq2SeqOutput(logits, loss)``.
* ``model.encode(...)`` returns the last hidden states (B, T, d), for pooling and task heads.
* Attention weights come out with ``labkit.attention.capture_attention(model)``, keyed by module
  name (``"transformer.h.0.attn"``, ``"blocks.0.attn"``); ``return_attn=True`` is built on it.
* Shared parts come from ``labkit.layers`` (``RotaryEmbedding``, ``FeedForward``, ``normal_init``);
  the optimizers for them from ``labkit.optim``.

Config field names: GPT keeps GPT-2's (``n_embd``, ``n_head``, ``block_size``); everything else,
and all new code, uses the paper's (``d_model``, ``n_heads``, ``max_len``). The mapping::

    GPTConfig.n_embd     = BERTConfig.d_model = layers' d_model      (width of the residual stream)
    GPTConfig.n_head     = BERTConfig.n_head  = layers' n_heads      (attention heads)
    GPTConfig.n_layer    = BERTConfig.n_layer = Encoder's n_layers   (blocks)
    GPTConfig.block_size = BERTConfig.max_position = layers' max_len (longest input)
    GPT's MLP width 4 * n_embd = BERTConfig.d_ff = layers' d_ff      (feed-forward inner width)
"""

from labkit.models.bert import BERT, BERTConfig, BERTOutput, mask_tokens, mlm_loss
from labkit.models.classify import ClassifierOutput, SequenceClassifier
from labkit.models.gpt import GPT, GPTConfig, GPTOutput
from labkit.models.seq2seq import Seq2SeqConfig, Seq2SeqOutput, Seq2SeqTransformer

__all__ = ["GPT", "GPTConfig", "GPTOutput", "BERT", "BERTConfig", "BERTOutput", "mask_tokens", "mlm_loss",
           "Seq2SeqConfig", "Seq2SeqOutput", "Seq2SeqTransformer", "SequenceClassifier", "ClassifierOutput"]
