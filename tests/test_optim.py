"""labkit.optim: Muon with a chosen Newton-Schulz dtype (equal to torch's in bfloat16), the measured
choice of that dtype, and AdamW's decay groups."""

import pytest
import torch
from torch import nn

from labkit import optim
from labkit.optim import Muon, MuonAdamW, decay_groups, fast_matmul_dtype


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(64, 16, generator=g)), nn.Parameter(torch.randn(8, 40, generator=g)),
            nn.Parameter(torch.randn(32, 32, generator=g))]


def _run(make_opt, steps=6, seed=0):
    """Parameters after ``steps`` steps on the same seeded gradients."""
    params = _params(seed)
    opt = make_opt(params)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach() for p in params]


MUON_SETTINGS = [
    dict(lr=0.05, momentum=0.9, weight_decay=0.1, adjust_lr_fn="original"),
    dict(lr=0.02, momentum=0.95, weight_decay=0.0, nesterov=False, adjust_lr_fn="match_rms_adamw"),
]


@pytest.mark.parametrize("kw", MUON_SETTINGS, ids=["nesterov-decay", "plain-momentum"])
def test_bfloat16_muon_is_bitwise_torchs(kw):
    ours = _run(lambda ps: Muon(ps, ns_dtype=torch.bfloat16, **kw))
    torch_s = _run(lambda ps: torch.optim.Muon(ps, **kw))
    for a, b in zip(ours, torch_s):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kw", MUON_SETTINGS, ids=["nesterov-decay", "plain-momentum"])
def test_float32_muon_is_close_to_torchs(kw):
    ours = _run(lambda ps: Muon(ps, ns_dtype=torch.float32, **kw))
    torch_s = _run(lambda ps: torch.optim.Muon(ps, **kw))
    start = _params()
    for a, b, p0 in zip(ours, torch_s, start):
        assert not torch.equal(a, b)  # float32 really is another computation
        da, db = (a - p0).flatten(), (b - p0).flatten()
        assert torch.cosine_similarity(da, db, dim=0) > 0.9995  # but the same updates, to bfloat16's precision
        assert abs(da.norm() / db.norm() - 1) < 0.01


def test_muon_state_dict_round_trip_and_bad_dtype():
    params = _params()
    opt = Muon(params, lr=0.02, ns_dtype=torch.float32)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    again = Muon(_params(), lr=0.02, ns_dtype=torch.float32)
    again.load_state_dict(opt.state_dict())
    assert len(again.state) == 3
    with pytest.raises(ValueError, match="ns_dtype"):
        Muon(_params(), ns_dtype="fast")


@pytest.fixture
def fresh_measurement(monkeypatch):
    monkeypatch.setattr(optim, "_FAST_DTYPE", {})


def _fake_timer(monkeypatch, seconds_by_dtype):
    calls = []

    def fake(a, b):
        calls.append(a.dtype)
        return seconds_by_dtype[a.dtype]

    monkeypatch.setattr(optim, "_matmul_seconds", fake)
    return calls


def test_auto_picks_float32_where_bfloat16_is_emulated(fresh_measurement, monkeypatch):
    calls = _fake_timer(monkeypatch, {torch.float32: 3e-4, torch.bfloat16: 5e-2})  # emulated: 150x slower
    assert fast_matmul_dtype("cpu") is torch.float32
    n = len(calls)
    assert n <= 4  # a warm-up each, then one timing each: a slow bfloat16 is not timed again
    assert fast_matmul_dtype("cpu") is torch.float32 and len(calls) == n  # measured once per process


def test_auto_picks_bfloat16_where_it_is_fast(fresh_measurement, monkeypatch):
    _fake_timer(monkeypatch, {torch.float32: 3e-4, torch.bfloat16: 1e-4})
    assert fast_matmul_dtype(torch.device("cpu")) is torch.bfloat16


def test_auto_muon_uses_the_measured_dtype(fresh_measurement, monkeypatch):
    _fake_timer(monkeypatch, {torch.float32: 3e-4, torch.bfloat16: 5e-2})
    for a, b in zip(_run(lambda ps: Muon(ps, lr=0.02)), _run(lambda ps: Muon(ps, lr=0.02, ns_dtype=torch.float32))):
        assert torch.equal(a, b)
    monkeypatch.setattr(optim, "_FAST_DTYPE", {})
    _fake_timer(monkeypatch, {torch.float32: 3e-4, torch.bfloat16: 1e-4})
    for a, b in zip(_run(lambda ps: Muon(ps, lr=0.02)), _run(lambda ps: torch.optim.Muon(ps, lr=0.02))):
        assert torch.equal(a, b)


def test_the_real_measurement_is_quick_and_cached():
    import time

    t0 = time.perf_counter()
    dtype = fast_matmul_dtype("cpu")
    assert dtype in (torch.float32, torch.bfloat16)
    assert time.perf_counter() - t0 < 2.0  # a few ms natively, ~0.1 s where bfloat16 is emulated
    t0 = time.perf_counter()
    assert fast_matmul_dtype("cpu") is dtype and time.perf_counter() - t0 < 1e-3


def test_muon_adamw_uses_labkits_muon_with_auto():
    w, b = nn.Parameter(torch.randn(8, 8)), nn.Parameter(torch.zeros(8))
    opt = MuonAdamW([w], [{"params": [b]}])
    assert isinstance(opt.muon, Muon) and opt.muon.ns_dtype == "auto"


def test_decay_groups_decay_matrices_and_embeddings_only():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    groups = decay_groups(model.parameters(), 0.1)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[1].weight)}
    assert all(g["weight_decay"] in (0.0, 0.1) for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_muon_dtype_can_be_pinned_by_environment(monkeypatch):
    from labkit import optim

    monkeypatch.setenv("LABKIT_MUON_DTYPE", "float32")
    assert optim.fast_matmul_dtype("cpu") == torch.float32
    monkeypatch.setenv("LABKIT_MUON_DTYPE", "bfloat16")
    assert optim.fast_matmul_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv("LABKIT_MUON_DTYPE", "fp8")
    with pytest.raises(ValueError, match="LABKIT_MUON_DTYPE"):
        optim.fast_matmul_dtype("cpu")
