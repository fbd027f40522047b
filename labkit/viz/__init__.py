"""Visualisation helpers: matplotlib plots (``plots``) and bertviz's head and model views that also
work offline (``bertviz``). The interactive widgets live in the notebooks that use them."""

from .plots import attention_heatmap, heatmap, image_grid, loss_curves

__all__ = ["attention_heatmap", "heatmap", "image_grid", "loss_curves", "head_view", "model_view"]


def __getattr__(name):  # bertviz is imported only when a view is asked for
    if name in ("head_view", "model_view"):
        from . import bertviz as _bv

        return getattr(_bv, name)
    raise AttributeError(f"module 'labkit.viz' has no attribute {name!r}")
