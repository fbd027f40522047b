"""Train labkit's Seq2SeqTransformer and torch.nn.Transformer side by side on English→French, on the CPU.

    .venv/bin/python benchmarks/translate_cpu.py                 # both, back to back
    .venv/bin/python benchmarks/translate_cpu.py --model lab     # one of them
    .venv/bin/python benchmarks/translate_cpu.py --shared-vocab  # one BPE vocabulary for both languages

Both models get the same everything but the encoder-decoder stack: the same data split and
tokenizer(s) (``labkit.recipes.seq2seq_fra``), embeddings (scaled by sqrt(d), sinusoidal
positions), tied output layer, size, optimiser, schedule, batches, steps, seed and wall-time
budget, and the same initial weights (the reference's are copied from the lab model's, its
packed q/k/v in-projection from the three separate ones). The lab's stack is ``labkit.layers.Encoder``/``Decoder`` (what
``Seq2SeqTransformer`` is built from); the reference is ``nn.TransformerEncoder``/``Decoder``
with the same settings. Each is then decoded greedily and with beam search (width 4) on the
held-out test sentences and scored with sacrebleu against every reference translation.

Progress goes to stderr; the training curves go to a PNG (``--curves``); the last line of stdout is

    bleu_beam=<x> bleu_greedy=<y> ref_bleu_beam=<a> ref_bleu_greedy=<b> wall_s=<s>

(``ref_``: nn.Transformer; with ``--model lab`` or ``torch`` the other's figures are ``nan``).
wall_s is the whole process's wall time (interpreter start-up included, read from /proc on Linux).
Every other flag overrides one field of the recipe (``labkit.recipes.seq2seq_fra.TranslationRecipe``).
"""

import time

_T0 = time.perf_counter()


def _process_age() -> float | None:
    """Seconds since this process started (Linux /proc), or None elsewhere."""
    try:
        import os

        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict, fields, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from labkit.data import length_grouped_batches  # noqa: E402
from labkit.models.seq2seq import Seq2SeqTransformer  # noqa: E402
from labkit.recipes import seq2seq_fra as R  # noqa: E402
from labkit.train import train  # noqa: E402


class TorchTransformerSeq2Seq(Seq2SeqTransformer):
    """``Seq2SeqTransformer`` with PyTorch's ``nn.TransformerEncoder``/``Decoder`` as its stack."""

    def __init__(self, config) -> None:
        super().__init__(config)
        c = config
        del self.encoder, self.decoder
        enc_layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.activation,
                                               batch_first=True, norm_first=c.norm_first)
        dec_layer = nn.TransformerDecoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.activation,
                                               batch_first=True, norm_first=c.norm_first)
        final = (lambda: nn.LayerNorm(c.d_model)) if c.norm_first else (lambda: None)
        self.torch_encoder = nn.TransformerEncoder(enc_layer, c.n_encoder_layers, norm=final(),
                                                   enable_nested_tensor=False)
        self.torch_decoder = nn.TransformerDecoder(dec_layer, c.n_decoder_layers, norm=final())

    @torch.no_grad()
    def copy_from(self, lab: Seq2SeqTransformer) -> "TorchTransformerSeq2Seq":
        """Start from exactly the lab model's weights: embeddings as they are, each block's q/k/v
        projections packed into nn.MultiheadAttention's in_proj, everything else one to one."""
        self.src_embed.load_state_dict(lab.src_embed.state_dict())
        self.tgt_embed.load_state_dict(lab.tgt_embed.state_dict())
        pairs = [(t, l, ("self_attn",)) for t, l in zip(self.torch_encoder.layers, lab.encoder.layers)]
        pairs += [(t, l, ("self_attn", "multihead_attn")) for t, l in zip(self.torch_decoder.layers, lab.decoder.layers)]
        for theirs, ours, attns in pairs:
            for name in attns:
                mine = getattr(ours, "cross_attn" if name == "multihead_attn" else name)
                mha = getattr(theirs, name)
                mha.in_proj_weight.copy_(torch.cat([mine.q_proj.weight, mine.k_proj.weight, mine.v_proj.weight]))
                mha.in_proj_bias.copy_(torch.cat([mine.q_proj.bias, mine.k_proj.bias, mine.v_proj.bias]))
                mha.out_proj.load_state_dict(mine.out_proj.state_dict())
            theirs.linear1.load_state_dict(ours.ff.linear1.state_dict())
            theirs.linear2.load_state_dict(ours.ff.linear2.state_dict())
            for i in range(1, 4 if len(attns) == 2 else 3):
                getattr(theirs, f"norm{i}").load_state_dict(getattr(ours, f"norm{i}").state_dict())
        for theirs, ours in ((self.torch_encoder.norm, lab.encoder.norm), (self.torch_decoder.norm, lab.decoder.norm)):
            if ours is not None:
                theirs.load_state_dict(ours.state_dict())
        return self

    def blocks(self) -> nn.Module:
        return nn.ModuleList([self.torch_encoder.layers, self.torch_decoder.layers])

    def encode(self, src, src_mask=None):
        self._check_ids(src, self.config.src_vocab_size, "src")
        mask = self.token_mask(src) if src_mask is None else src_mask  # labkit's: True at real tokens
        return self.torch_encoder(self._embed(self.src_embed, src), src_key_padding_mask=~mask)  # PyTorch's: True = pad

    def decode(self, tgt_in, memory, src_mask=None, last_only=False):
        self._check_ids(tgt_in, self.config.tgt_vocab_size, "tgt_in")
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.size(1), device=tgt_in.device)
        h = self.torch_decoder(self._embed(self.tgt_embed, tgt_in), memory, tgt_mask=causal,
                               memory_key_padding_mask=None if src_mask is None else ~src_mask, tgt_is_causal=True)
        return self.lm_head(h[:, -1:] if last_only else h)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["both", "lab", "torch"], default="both")
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="wall-time budget for each model's training loop (default 300; 0: none)")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: labkit's choice)")
    p.add_argument("--curves", default="benchmarks/translate_cpu.png", help="where to save the training curves")
    p.add_argument("--json", help="also write every figure and both curves to this JSON file")
    p.add_argument("--shared-vocab", action=argparse.BooleanOptionalAction, default=None,
                   help="one BPE vocabulary and one embedding table for both languages")
    for f in fields(R.TranslationRecipe):
        if f.name in ("shared_vocab", "betas"):
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], float)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, help=f"recipe field {f.name} "
                       f"(default {getattr(R.SEQ2SEQ_FRA, f.name)})")
    return p.parse_args(argv)


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(kind: str, recipe, data, max_seconds, beam_size, length_penalty) -> dict:
    config = R.seq2seq_config(recipe, data.src_tok.vocab_size, data.tgt_tok.vocab_size)
    torch.manual_seed(recipe.seed)
    model = Seq2SeqTransformer(config)
    if kind == "torch":  # the same starting point: the lab model's initial weights, copied into PyTorch's stack
        model = TorchTransformerSeq2Seq(config).copy_from(model)
    blocks = model.blocks() if kind == "torch" else None
    optimizer = R.translator_optimizer(model, recipe, blocks)
    gen = torch.Generator().manual_seed(recipe.seed)
    batches = length_grouped_batches(data.train, recipe.batch_size, gen, length=lambda p: len(p[0]) + len(p[1]))
    name = "labkit Seq2SeqTransformer" if kind == "lab" else "torch nn.Transformer"
    log(f"{name}: {model.num_params():,} parameters")

    def report(step, model, history):
        log(f"  {name} step {step}: val_loss {history.eval['val_loss'][-1]:.4f}")

    history = train(model, lambda step: R.pair_batch(next(batches)),
                    R.translator_train_config(recipe, progress=False, max_seconds=max_seconds or None),
                    eval_fn=lambda m: {"val_loss": R.evaluation_loss(m, data.val_ids)}, optimizer=optimizer,
                    on_eval=report)
    model.eval()
    t = time.perf_counter()
    bleu_greedy, _ = R.corpus_bleu(model, data, beam_size=1)
    t_greedy = time.perf_counter() - t
    t = time.perf_counter()
    bleu_beam, hyps = R.corpus_bleu(model, data, beam_size=beam_size, length_penalty=length_penalty)
    t_beam = time.perf_counter() - t
    log(f"{name}: {history.completed_steps} steps in {history.seconds:.1f} s ({history.stop_reason}); "
        f"val_loss {history.eval['val_loss'][-1]:.4f}; test BLEU greedy {bleu_greedy:.2f} ({t_greedy:.1f} s), "
        f"beam {beam_size} {bleu_beam:.2f} ({t_beam:.1f} s)")
    return {"steps": history.completed_steps, "train_seconds": history.seconds, "stop_reason": history.stop_reason,
            "val_loss": history.eval["val_loss"][-1], "bleu_greedy": bleu_greedy, "bleu_beam": bleu_beam,
            "greedy_seconds": t_greedy, "beam_seconds": t_beam, "params": model.num_params(),
            "curve": {"steps": history.steps, "train_loss": history.train_loss,
                      "eval_steps": history.eval_steps, "val_loss": history.eval["val_loss"]},
            "examples": list(zip(list(data.test)[:5], hyps[:5]))}


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (kind, r), color in zip(results.items(), ("C0", "C1")):
        label = "labkit Seq2SeqTransformer" if kind == "lab" else "torch nn.Transformer"
        ax.plot(r["curve"]["steps"], r["curve"]["train_loss"], color=color, alpha=0.5, label=f"{label}: train")
        ax.plot(r["curve"]["eval_steps"], r["curve"]["val_loss"], color=color, marker="o", ms=3,
                label=f"{label}: validation")
    ax.set_title("English→French: the same recipe on two encoder-decoder stacks")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per French token)")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    log(f"curves saved to {path}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {f.name: getattr(args, f.name) for f in fields(R.TranslationRecipe)
                 if getattr(args, f.name, None) is not None}
    recipe = replace(R.SEQ2SEQ_FRA, **overrides)
    log("recipe: " + ", ".join(f"{k}={v}" for k, v in asdict(recipe).items()))
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads; budget {args.max_seconds:g} s per model")
    t = time.perf_counter()
    data = R.translation_data(recipe)
    log(f"data: {len(data.train):,} training pairs, {len(data.val)} val and {len(data.test)} test English sentences; "
        f"vocabularies {data.src_tok.vocab_size} / {data.tgt_tok.vocab_size}; set-up {time.perf_counter() - t:.1f} s")
    kinds = ["lab", "torch"] if args.model == "both" else [args.model]
    results = {k: run(k, recipe, data, args.max_seconds, args.beam_size, args.length_penalty) for k in kinds}
    if args.curves:
        plot(results, args.curves)
    nan = {"bleu_beam": math.nan, "bleu_greedy": math.nan}
    lab, ref = results.get("lab", nan), results.get("torch", nan)
    age = _process_age()
    wall_s = age if age is not None else time.perf_counter() - _T0
    if args.json:
        Path(args.json).write_text(json.dumps({"recipe": {**asdict(recipe), "betas": list(recipe.betas)},
                                               "results": results, "wall_s": wall_s}, indent=1))
    print(f"bleu_beam={lab['bleu_beam']:.2f} bleu_greedy={lab['bleu_greedy']:.2f} "
          f"ref_bleu_beam={ref['bleu_beam']:.2f} ref_bleu_greedy={ref['bleu_greedy']:.2f} wall_s={wall_s:.1f}",
          flush=True)


if __name__ == "__main__":
    main()
