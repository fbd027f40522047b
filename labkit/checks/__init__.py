"""Exercise checkers with hints: ``from labkit import checks; checks.check_softmax(my_softmax)``.

``_core`` holds the pattern (``check_close``, ``check_true``, ``Case``, typical mistakes
matched to their own hint) and the record of which exercises passed (``progress()``,
``reset_progress()``); the other modules hold the checkers for each concept's exercises.
"""

from ._core import *  # noqa: F401,F403
from ._core import __all__ as _core_all
from .adaptation import *  # noqa: F401,F403
from .adaptation import __all__ as _adaptation_all
from .assistant import *  # noqa: F401,F403
from .assistant import __all__ as _assistant_all
from .attention import *  # noqa: F401,F403
from .attention import __all__ as _attention_all
from .blocks import *  # noqa: F401,F403
from .blocks import __all__ as _blocks_all
from .diffusion import *  # noqa: F401,F403
from .diffusion import __all__ as _diffusion_all
from .evaluation import *  # noqa: F401,F403
from .evaluation import __all__ as _evaluation_all
from .icl import *  # noqa: F401,F403
from .icl import __all__ as _icl_all
from .multimodal import *  # noqa: F401,F403
from .multimodal import __all__ as _multimodal_all
from .positions import *  # noqa: F401,F403
from .positions import __all__ as _positions_all
from .pretraining import *  # noqa: F401,F403
from .pretraining import __all__ as _pretraining_all
from .sampling import *  # noqa: F401,F403
from .sampling import __all__ as _sampling_all
from .scaling import *  # noqa: F401,F403
from .scaling import __all__ as _scaling_all
from .tokens import *  # noqa: F401,F403
from .tokens import __all__ as _tokens_all
from .training import *  # noqa: F401,F403
from .training import __all__ as _training_all
from .translation import *  # noqa: F401,F403
from .translation import __all__ as _translation_all

__all__ = [*_core_all, *_adaptation_all, *_assistant_all, *_attention_all, *_blocks_all, *_diffusion_all, *_evaluation_all, *_icl_all, *_multimodal_all, *_positions_all, *_pretraining_all, *_sampling_all, *_scaling_all, *_tokens_all,
           *_training_all, *_translation_all]
