"""The old home of the zoo's ``bert-english`` recipe, kept so that old imports keep working.

Everything here now lives in ``labkit.recipes.bert_english`` (the recipe), ``labkit.data``
(``pad_batch``, ``masked_batch``, ...), ``labkit.evaluate`` (``evaluate_mlm``, ``unigram_baseline``,
``mean_pool``) and ``labkit.models.bert`` (``mlm_loss``); ``register_bert`` is
``labkit.recipes.bert_english.register``. New code imports from those.
"""

from .recipes.bert_english import *  # noqa: F401,F403
from .recipes.bert_english import __all__ as _recipe_all
from .recipes.bert_english import register as register_bert

__all__ = [name for name in _recipe_all if name != "register"] + ["register_bert"]
