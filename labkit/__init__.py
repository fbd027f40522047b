"""labkit: the reference version of every piece the Foundation Models Lab builds.

Split by concept, not by notebook: ``device``, ``data``, ``tokenizers``,
``attention``, ``layers``, ``models``, ``optim``, ``generate``, ``train``,
``evaluate``, ``lora``, ``recipes`` (one module per zoo model), ``zoo``, ``viz`` and
``checks``. Notebooks build a piece by hand, check it against the version here,
and later notebooks import it from here.
"""

__version__ = "0.1.0"
