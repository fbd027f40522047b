import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from labkit import viz


def test_heatmap_labels_and_title():
    fig = viz.heatmap(torch.rand(3, 4), ["a", "b", "c"], list("wxyz"), title="T", xlabel="key", ylabel="query")
    ax = fig.axes[0]
    assert ax.get_title() == "T" and ax.get_xlabel() == "key" and ax.get_ylabel() == "query"
    assert [t.get_text() for t in ax.get_xticklabels()] == list("wxyz")
    with pytest.raises(ValueError, match="2-D"):
        viz.heatmap(torch.rand(2, 3, 4))


def test_attention_heatmap_squeezes_batch():
    fig = viz.attention_heatmap(torch.softmax(torch.rand(1, 1, 3, 3), -1), ["I", "am", "here"])
    assert fig.axes[0].get_ylabel().startswith("query")
    with pytest.raises(ValueError, match="one batch item and head"):
        viz.attention_heatmap(torch.rand(2, 3, 3))


def test_loss_curves_and_image_grid():
    fig = viz.loss_curves({"train": ([1, 2, 3], [3.0, 2.0, 1.0])}, title="L")
    assert len(fig.axes[0].lines) == 1 and fig.axes[0].get_ylabel() == "loss"
    fig = viz.image_grid(torch.rand(10, 1, 8, 8), nrow=5, titles=[str(i) for i in range(10)], title="digits")
    assert len(fig.axes) == 10 and fig._suptitle.get_text() == "digits"


def test_annotations_are_readable_on_light_and_dark_cells():
    fig = viz.attention_heatmap(torch.tensor([[0.0, 1.0], [0.5, 0.5]]), ["a", "b"], annotate=True)
    colors = {t.get_text(): t.get_color() for t in fig.axes[0].texts}
    assert colors["0.00"] == "black" and colors["1.00"] == "white"  # Blues: white at 0, dark blue at 1
