"""Notebook 15's extrinsic table checks each recomputed figure against ``REPORTED``, the figure the earlier
notebook reported. This test checks that ``REPORTED`` says what those notebooks' saved outputs say, so that the
table cannot drift from them (a notebook re-run with new figures makes this test fail until notebook 15 follows)."""

import ast
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# figure -> (the notebook that reports it, a pattern over that notebook's saved outputs, which group)
SOURCES = {
    "translation: BLEU, greedy (07)": ("07_translation_transformer", r"corpus BLEU, greedy\s+≈ ([\d.]+)", 1),
    "spam: macro-F1, TF-IDF + logistic regression (10)": ("10_fine_tuning", r"TF-IDF \+ logistic regression\s+([\d.]+)\s", 1),
    "spam: macro-F1, linear probe (10)": ("10_fine_tuning", r"\nlinear probe\s+([\d.]+)\s", 1),
    "spam: macro-F1, LoRA rank 4 (10)": ("10_fine_tuning", r"LoRA \(rank 4, all linear layers\)\s+([\d.]+)\s", 1),
    "spam: macro-F1, full fine-tuning (10)": ("10_fine_tuning", r"\nfull fine-tuning\s+([\d.]+)\s", 1),
    "in-context: accuracy with 8 examples (11)": ("11_prompting_and_icl", r"\b8 examples: accuracy ≈ ([\d.]+)", 1),
    "in-context: copying accuracy, 8+ examples (11)": ("11_prompting_and_icl", r"8\+ examples, copying: ≈ ([\d.]+)", 1),
    "instructions: exact match, trained phrasings (12)": ("12_instruction_tuning_and_chat", r"SFT\s+trained phrasings: mean ([\d.]+)", 1),
    "diffusion: class accuracy, DDIM 20 steps (13)": ("13_diffusion", r"DDIM, 20 steps\s+[\d.]+\s+([\d.]+)\s+([\d.]+)", 1),
    "diffusion: Fréchet distance, DDIM 20 steps (13)": ("13_diffusion", r"DDIM, 20 steps\s+[\d.]+\s+([\d.]+)\s+([\d.]+)", 2),
    "CLIP: zero-shot accuracy (14)": ("14_multimodal", r"zero-shot CLIP \('a photo of the digit \.\.\.'\): accuracy ≈ ([\d.]+)", 1),
}


def reported() -> dict:
    nb = json.loads((NOTEBOOKS / "15_evaluation.ipynb").read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and src.lstrip().startswith("REPORTED = {"):
            return ast.literal_eval(ast.parse(src).body[0].value)
    raise AssertionError("notebook 15 has no cell that starts with 'REPORTED = {'")


def saved_output(name: str) -> str:
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", "")))
    return "\n" + "\n".join(texts)


def test_every_reported_figure_has_a_source():
    assert set(reported()) == set(SOURCES)


@pytest.mark.parametrize("figure", sorted(SOURCES))
def test_reported_figure_matches_its_notebook(figure):
    value, tolerance = reported()[figure]
    notebook, pattern, group = SOURCES[figure]
    match = re.search(pattern, saved_output(notebook))
    assert match, f"notebook {notebook} no longer prints {pattern!r}"
    assert float(match.group(group)) == pytest.approx(value, abs=1e-9), (figure, match.group(0))
    assert 0 < tolerance < max(abs(value), 1e-9)  # a tolerance, not a blank cheque
