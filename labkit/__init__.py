"""labkit: the reference version of every piece the Foundation Models Lab builds.

Split by concept, not by notebook: ``device``, ``data``, ``tokenizers``,
``attention``, ``layers``, ``models``, ``optim``, ``generate``, ``train``,
``evaluate``, ``lora``, ``recipes`` (one module per zoo model), ``zoo``, ``viz`` and
``checks``. Notebooks build a piece by hand, check it against the version here,
and later notebooks import it from here.
"""

__version__ = "0.2.0"

import logging as _logging

# torchao (notebook 16's quantization library) is imported by Hugging Face transformers too when it is installed. On a
# machine without CUDA it logs a warning for every optional CUDA extension it cannot load, and torch logs a
# deprecation warning for the enums torchao registers: nothing a learner can act on, and it would land in the output
# of every notebook cell that imports transformers. Errors from these two loggers still show.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
