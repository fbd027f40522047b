"""The gpt-icl recipe: a shrunk run through the zoo learns to copy in context, saves plain metadata and rebuilds."""

from dataclasses import replace

import torch

from labkit import zoo
from labkit.recipes import gpt_icl as ri


# the recipe's model and optimiser (attention only, Muon with weight decay), shrunk: ~6 s; it learns to copy
# on every seed tried (1-3, on both kinds of CPU); at width 32 it did not within 300 steps
TINY = replace(ri.ICL, n_symbols=4, n_pairs=8, held_out_every=4, n_layers=2, n_heads=2, d_model=64, steps=400,
               batch_size=32, warmup_steps=20, eval_every=100, n_eval=64)


def test_tiny_run_through_the_zoo_learns_in_context(isolated_cache):
    zoo.register(zoo.Recipe("test-icl", "tiny", build=ri.build_gpt_icl,
                            train=lambda: ri.train_gpt_icl(TINY, progress=False)), overwrite=True)
    model = zoo.load("test-icl")
    meta = model.zoo_meta
    h = meta["history"]
    assert h["eval_steps"] == [100, 200, 300, 400]
    assert set(h["eval"]) >= {"val_loss", "seen_acc_8plus", "unseen_acc", "induction.0.0", "induction.1.1"}
    final = meta["final"]
    assert final["seen_overall"] > 0.6  # 4 symbols: chance is 0.25; copying from the context is learned
    assert len(meta["induction"]) == 2 and len(meta["induction"][0]) == 2
    torch.load(zoo.path("test-icl"), weights_only=True)  # meta holds plain types only
    again = zoo.load("test-icl")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
