"""The lab's models, one self-contained file each (config dataclass -> layers -> model).

``gpt``: decoder-only language model (GPT-2 architecture, copyable from Hugging Face).
``bert``: encoder with a masked-LM head, plus ``mask_tokens`` (BERT's 80/10/10 masking) and ``mlm_loss``.
``seq2seq``: the original encoder-decoder transformer for translation, from ``labkit.layers``' stacks.
``classify``: ``SequenceClassifier``, a classification head on a BERT's or a GPT's hidden states, and
``DigitClassifier``, the small CNN that judges generated digits.
``unet``: the denoising network of notebook 13 (``TextConditionedUNet``: conditioned on a caption, notebook 14).
``clip``: a small CLIP (CNN or ViT image encoder, transformer text encoder, symmetric InfoNCE).

One vocabulary and one convention for every model (Hugging Face's names appear only in the ``from_hf`` copies):

* Config fields: ``d_model`` (width of the residual stream), ``n_heads``, ``n_layers`` (depth; ``n_encoder_layers``
  and ``n_decoder_layers`` for the encoder-decoder), ``d_ff`` (the feed-forward inner width; GPT's is 4 x d_model),
  ``context_length`` (the longest input), ``dropout``, ``vocab_size``.
* ``model(...)`` returns a named tuple with ``logits`` and ``loss`` (``logits, loss = model(x, y)`` unpacks it):
  ``GPTOutput``, ``BERTOutput``, ``Seq2SeqOutput``, ``ClassifierOutput`` (CLIP's has the logits both ways);
  ``model.encode(...)`` the last hidden states (B, T, d), for pooling and task heads.
* Attention weights: ``model(..., return_attention=True).attentions``, one (B, n_heads, T_q, T_k) tensor per layer
  (for the encoder-decoder a dict of its encoder, decoder and cross-attention lists, for CLIP of its text and image
  encoders'), taken before dropout; built on
  ``labkit.attention.capture_attention(model)``, which works on any module that attends.
* Masks: a boolean mask is True where attention is allowed (a key is a real token, a query may see a key), as in
  ``F.scaled_dot_product_attention`` and Hugging Face's ``attention_mask`` (``labkit.attention`` says more).
* Shared parts come from ``labkit.layers`` (``RotaryEmbedding``, ``FeedForward``, ``normal_init``); the optimizers
  for them from ``labkit.optim``.
"""

from labkit.models.bert import BERT, BERTConfig, BERTOutput, mask_tokens, mlm_loss
from labkit.models.classify import ClassifierOutput, SequenceClassifier
from labkit.models.gpt import GPT, GPTConfig, GPTOutput
from labkit.models.seq2seq import Seq2SeqConfig, Seq2SeqOutput, Seq2SeqTransformer

__all__ = ["GPT", "GPTConfig", "GPTOutput", "BERT", "BERTConfig", "BERTOutput", "mask_tokens", "mlm_loss",
           "Seq2SeqConfig", "Seq2SeqOutput", "Seq2SeqTransformer", "SequenceClassifier", "ClassifierOutput"]
