"""labkit.recipes.gpt_shakespeare: the LM recipe's Muon+AdamW optimizer, the whole-split evaluation, the training
wrapper, and the zoo's build/train pair."""

from dataclasses import asdict, replace

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from labkit.models.gpt import GPT, GPTConfig
from labkit.optim import MuonAdamW, split_params
from labkit.recipes import gpt_shakespeare as recipes
from labkit.recipes.gpt_shakespeare import LAB, evaluate_lm, lm_optimizer
from labkit.tokenizers import CharTokenizer
from labkit.train import TrainConfig, train

TINY = dict(n_layers=2, n_heads=2, d_model=32, context_length=16, batch_size=4, steps=20, warmup_steps=2)


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig.tiny(pos_emb="rope", mlp="relu2", **overrides))


def fixed_batch(vocab=64, B=4, T=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(vocab, (B, T), generator=g), torch.randint(vocab, (B, T), generator=g)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_muon_gets_exactly_the_block_matrices(tie):
    model = tiny_model(tie_weights=tie, bias=True)
    muon, adamw = split_params(model)
    block_matrices = {f"transformer.h.{i}.{name}" for i in range(2)
                      for name in ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")}
    names = {id(p): n for n, p in model.named_parameters()}  # a tied matrix is named once
    assert {names[id(p)] for p in muon} == block_matrices
    assert all(p.dim() == 2 for p in muon)
    # every parameter exactly once, across both optimizers' groups
    opt = lm_optimizer(model, replace(LAB, **TINY, tie_weights=tie))
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in model.parameters())
    assert {id(p) for p in opt.muon.param_groups[0]["params"]} == {id(p) for p in muon}
    assert {id(p) for g in opt.adamw.param_groups for p in g["params"]} == {id(p) for p in adamw}
    assert id(model.transformer.wte.weight) in {id(p) for p in adamw}
    assert id(model.lm_head.weight) in {id(p) for p in adamw}


def test_muon_adamw_steps_both_and_lowers_the_loss():
    model = tiny_model()
    opt = lm_optimizer(model, replace(LAB, **TINY))
    assert isinstance(opt, MuonAdamW)
    x, y = fixed_batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(15):
        _, loss = model(x, y)
        losses.append(loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0] - 0.5  # memorising one batch goes fast
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "transformer.h.0.mlp.c_fc.weight" in changed  # a Muon parameter
    assert "transformer.wte.weight" in changed and "transformer.ln_f.weight" in changed  # AdamW's
    assert len(opt.muon.state) == 8 and len(opt.adamw.state) == len(list(model.parameters())) - 8


def test_muon_update_is_orthogonalised_and_shape_scaled():
    """One Muon step with no momentum history moves W by lr * sqrt(max(1, rows/cols)) * ~orthogonal(G)."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(64, 16))
    bias = torch.nn.Parameter(torch.zeros(64))
    opt = MuonAdamW([w], [{"params": [bias]}], muon_lr=0.1, adamw_lr=1e-3)
    w.grad, bias.grad = torch.randn(64, 16), torch.randn(64)
    w0 = w.detach().clone()
    opt.step()
    update = (w0 - w.detach()) / (0.1 * 2.0)  # sqrt(64 / 16) = 2
    sv = torch.linalg.svdvals(update)
    assert sv.min() > 0.5 and sv.max() < 1.3  # Newton-Schulz pushes every singular value towards 1


def test_lr_schedule_scales_both_parts():
    model = tiny_model()
    recipe = replace(LAB, **TINY, lr=2e-3, muon_lr=0.04)
    opt = lm_optimizer(model, recipe)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)  # sets lr = 0.5 x peak at once
    assert [g["lr"] for g in opt.adamw.param_groups] == [1e-3] * len(opt.adamw.param_groups)
    assert opt.muon.param_groups[0]["lr"] == 0.02


def test_works_in_labkit_train_and_resumes_exactly(tmp_path):
    """labkit.train drives MuonAdamW (schedule, clipping) and a crashed run resumes to the same weights."""
    recipe = replace(LAB, **TINY)
    batches = [fixed_batch(seed=s % 2) for s in range(8)]  # two batches, seen four times each
    cfg = TrainConfig(max_steps=8, warmup_steps=2, eval_every=0, log_every=1, progress=False)

    def fresh():
        model = tiny_model()
        return model, lm_optimizer(model, recipe)

    model, opt = fresh()
    full = train(model, lambda s: batches[s], cfg, optimizer=opt)
    assert full.train_loss[-1] < full.train_loss[0]
    assert opt.muon.param_groups[0]["lr"] < recipe.muon_lr  # the cosine reached Muon too

    class Crash(Exception):
        pass

    def crashing(step):
        if step >= 4:
            raise Crash
        return batches[step]

    ckpt = str(tmp_path / "run.pt")
    part = replace(cfg, checkpoint_path=ckpt, checkpoint_every=4)
    crashed, crashed_opt = fresh()
    with pytest.raises(Crash):
        train(crashed, crashing, part, optimizer=crashed_opt)
    torch.manual_seed(999)
    model2 = GPT(GPTConfig.tiny(pos_emb="rope", mlp="relu2"))  # other weights: resume must restore them
    resumed = train(model2, lambda s: batches[s], part, optimizer=lm_optimizer(model2, recipe), resume_from=ckpt)
    assert resumed.train_loss == full.train_loss
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert_close(a, b, msg=n)


def test_evaluate_lm_equals_a_hand_loop():
    model = tiny_model().eval()
    data = torch.randint(64, (300,), generator=torch.Generator().manual_seed(5))
    T = 16
    n = (len(data) - 1) // T  # 18 whole windows; the 11 tokens left over are not scored
    losses = []
    with torch.no_grad():
        for i in range(n):
            x, y = data[i * T:(i + 1) * T], data[i * T + 1:(i + 1) * T + 1]
            logits, _ = model(x[None])
            losses.append(F.cross_entropy(logits[0], y, reduction="none"))
    expected = torch.cat(losses).mean().item()
    for batch_size in (1, 5, 64):  # a ragged last batch must not change the mean
        assert evaluate_lm(model, data, T, batch_size) == pytest.approx(expected, rel=1e-5)


def test_build_from_meta_loads_a_trained_state_dict(monkeypatch):
    text = "to be, or not to be: that is the question.\n" * 40
    monkeypatch.setattr(recipes, "read_text", lambda name: text)
    model, meta = recipes.train_gpt_shakespeare(replace(LAB, **{**TINY, "steps": 3}))
    assert meta["chars"] == sorted(set(text)) and meta["config"]["vocab_size"] == len(set(text))
    assert meta["config"] == asdict(model.config)
    rebuilt = recipes.build_gpt_shakespeare(meta)
    rebuilt.load_state_dict(model.state_dict())  # strict: same names and shapes
    x = torch.randint(len(set(text)), (2, 16))
    assert_close(rebuilt.eval()(x)[0], model.eval()(x)[0])
    assert list(meta) == ["config", "chars", "recipe", "val_loss", "train_steps"] and meta["train_steps"] == 3
    tok = CharTokenizer.from_text(text)
    val = torch.tensor(tok.encode(text))[-500:]
    assert recipes.zoo_meta(model, tok, replace(LAB, **{**TINY, "steps": 3}), val)["chars"] == meta["chars"]
    torch.save({"meta": meta}, buf := __import__("io").BytesIO())
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["meta"] == meta  # the zoo loads meta with weights_only=True


def test_train_lm_is_train_with_the_recipes_public_pieces():
    """What notebook 08 writes out: train_config + batches + lm_optimizer in labkit.train.train, with an
    evaluation and a sampling callback on the side, gives train_lm's very weights."""
    recipe = replace(LAB, **{**TINY, "steps": 4, "batch_size": 8})
    data = torch.randint(64, (2000,), generator=torch.Generator().manual_seed(3))
    a = recipes.build_lm(recipe, 64)
    result = recipes.train_lm(a, data, recipe, progress=False)
    b = recipes.build_lm(recipe, 64)
    config = recipes.lm_train_config(recipe, progress=False, eval_every=2)
    history = train(b, recipes.batches(data, recipe), config, optimizer=recipes.lm_optimizer(b, recipe),
                    eval_fn=lambda m: evaluate_lm(m, data[:200], 16),
                    on_eval=lambda step, m, h: m.generate(torch.zeros(1, 1, dtype=torch.long), 3,
                                                          generator=torch.Generator().manual_seed(step)))
    assert history.eval_steps == [2, 4] and result.steps == 4 and not result.stopped_early
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert config.max_steps == recipe.steps and config.lr == recipe.lr and config.grad_clip == recipe.grad_clip


def test_train_lm_time_budget_stops_cleanly(monkeypatch):
    recipe = replace(LAB, **{**TINY, "steps": 1000})
    data = torch.randint(64, (2000,), generator=torch.Generator().manual_seed(3))
    model = recipes.build_lm(recipe, 64)
    lines = []
    result = recipes.train_lm(model, data, recipe, max_seconds=0.5, progress=False, log=lines.append, log_every=5)
    assert result.stopped_early and 1 <= result.steps < 1000
    assert result.tokens == result.steps * recipe.batch_size * recipe.context_length
    assert result.train_loss is not None and not model.training
    assert len(lines) == result.steps // 5 and lines[0].startswith("step     5/1000")
    full = recipes.train_lm(recipes.build_lm(replace(recipe, steps=3), 64), data, replace(recipe, steps=3),
                            progress=False)
    assert full.steps == 3 and not full.stopped_early


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_zero_init_starts_every_block_as_the_identity(tie):
    recipe = replace(LAB, **TINY, zero_init=True, tie_weights=tie)
    model = recipes.build_lm(recipe, vocab_size=64)
    zeroed = {n for n, p in model.named_parameters() if not p.any()}
    expected = {f"transformer.h.{i}.{part}.c_proj.weight" for i in range(2) for part in ("attn", "mlp")}
    assert zeroed == (expected if tie else expected | {"lm_head.weight"})  # a tied head is the embedding
    x = torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = model.transformer.wte(x)
        for block in model.transformer.h:
            h2, _ = block(h)
            assert torch.equal(h2, h)  # both residual branches add exactly zero
            h = h2
        logits, loss = model(x, x)
    if not tie:
        assert not logits.any() and loss.item() == pytest.approx(torch.log(torch.tensor(64.0)).item())
    # zero-initialised projections still learn: the output layer moves first (the gradient reaching the
    # blocks goes through it), then the projections
    opt = lm_optimizer(model, recipe)
    for _ in range(3):
        opt.zero_grad()
        model(x, x)[1].backward()
        opt.step()
    assert model(x, x)[1].item() < loss.item()
    assert all(p.any() for n, p in model.named_parameters() if n in expected)
    assert not recipes.build_lm(replace(recipe, zero_init=False), 64).transformer.h[0].mlp.c_proj.weight.eq(0).all()


def test_head_lr_gives_the_untied_output_layer_its_own_group():
    model = recipes.build_lm(replace(LAB, **TINY), vocab_size=64)
    opt = lm_optimizer(model, replace(LAB, **TINY, head_lr=1e-3))
    head_groups = [g for g in opt.param_groups if any(p is model.lm_head.weight for p in g["params"])]
    assert len(head_groups) == 1 and head_groups[0]["params"] == [model.lm_head.weight]
    assert head_groups[0]["lr"] == 1e-3 and head_groups[0]["weight_decay"] == LAB.weight_decay
    others = [g for g in opt.adamw.param_groups if g is not head_groups[0]]
    assert all(g["lr"] == LAB.lr for g in others)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    # tied, the output layer is the embedding: head_lr has nothing of its own to set
    tied = recipes.build_lm(replace(LAB, **TINY, tie_weights=True), vocab_size=64)
    opt = lm_optimizer(tied, replace(LAB, **TINY, tie_weights=True, head_lr=1e-3))
    assert all(g["lr"] != 1e-3 for g in opt.param_groups)


def test_the_recipe_trains_on_get_device_and_labkit_device_cpu_changes_nothing_on_a_cpu(monkeypatch):
    """The zoo's recipes train on ``labkit.device.get_device()`` (a GPU where there is one); on a machine without
    one, forcing the CPU with LABKIT_DEVICE=cpu gives the very same weights as not setting it."""
    asked = []
    real = recipes.get_device
    monkeypatch.setattr(recipes, "get_device", lambda prefer=None: asked.append(prefer) or real(prefer))
    tiny = replace(LAB, **{**TINY, "steps": 3})
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    default, _ = recipes.train_gpt_shakespeare(tiny)
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    forced, _ = recipes.train_gpt_shakespeare(tiny)
    assert asked == [None, None]  # the device is the recipe's choice, from get_device
    assert next(default.parameters()).device == real()  # the CPU here
    for (name, a), b in zip(default.state_dict().items(), forced.state_dict().values()):
        assert torch.equal(a, b), name
