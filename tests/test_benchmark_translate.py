"""benchmarks/translate_cpu.py: the reference model it trains is PyTorch's stack started from the lab model's weights."""

import importlib.util
from pathlib import Path

import torch

from labkit.models.seq2seq import Seq2SeqConfig, Seq2SeqTransformer

SPEC = importlib.util.spec_from_file_location("translate_cpu", Path(__file__).parents[1] / "benchmarks" / "translate_cpu.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def test_the_reference_starts_from_the_lab_models_weights_and_computes_the_same():
    cfg = Seq2SeqConfig(src_vocab_size=50, tgt_vocab_size=40, d_model=32, n_heads=4, d_ff=64, dropout=0.0)
    torch.manual_seed(0)
    lab = Seq2SeqTransformer(cfg)
    ref = bench.TorchTransformerSeq2Seq(cfg)
    assert isinstance(ref.torch_encoder, torch.nn.TransformerEncoder) and not hasattr(ref, "encoder")
    src = torch.tensor([[5, 6, 7, 2, 0], [8, 9, 10, 11, 2]])
    tgt = torch.tensor([[1, 5, 6], [1, 7, 8]])
    assert (ref(src, tgt).logits - lab(src, tgt).logits).abs().max() > 0.1  # different weights before the copy
    ref.copy_from(lab)
    assert ref.num_params() == lab.num_params()
    for mode in ("eval", "train"):
        getattr(lab, mode)(), getattr(ref, mode)()
        out_lab, out_ref = lab(src, tgt, tgt), ref(src, tgt, tgt)
        torch.testing.assert_close(out_ref.logits, out_lab.logits, atol=1e-5, rtol=1e-5)
        out_lab.loss.backward()
        out_ref.loss.backward()
    # the same gradients reach the shared parts (embeddings) through either stack
    torch.testing.assert_close(ref.src_embed.weight.grad, lab.src_embed.weight.grad, atol=1e-5, rtol=1e-4)
    # and decoding works through the reference's encode/decode
    from labkit.generate import seq2seq_greedy

    ref.eval(), lab.eval()
    assert seq2seq_greedy(ref, src, max_new_tokens=5) == seq2seq_greedy(lab, src, max_new_tokens=5)


def test_flags_override_the_recipe():
    args = bench.parse_args(["--model", "lab", "--steps", "7", "--d-model", "64", "--shared-vocab"])
    assert args.model == "lab" and args.steps == 7 and args.d_model == 64 and args.shared_vocab is True
    assert bench.parse_args([]).max_seconds == 300.0
