"""The lab's models, one self-contained file each (config dataclass -> layers -> model).

``gpt``: decoder-only language model (GPT-2 architecture, copyable from Hugging Face).
``bert``: encoder with a masked-LM head, plus ``mask_tokens`` (BERT's 80/10/10 masking).
Other models (``seq2seq``, ``unet``) are imported by module: ``from labkit.models.seq2seq import ...``.
"""

from labkit.models.bert import BERT, BERTConfig, BERTOutput, mask_tokens
from labkit.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "BERT", "BERTConfig", "BERTOutput", "mask_tokens"]
