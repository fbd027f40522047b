"""Weight-only int8 quantization of a trained GPT with torchao (notebook 16): the weights become int8 (4 times
fewer bytes), the outputs change, and the held-out loss stays within 0.02 nats of the float32 model's."""

import copy
import io
import logging

import pytest
import torch

from labkit.models.gpt import GPT, GPTConfig

torchao = pytest.importorskip("torchao")
logging.getLogger("torchao").setLevel(logging.ERROR)  # optional CUDA extensions it cannot load on a CPU
from torchao.quantization import Int8WeightOnlyConfig, quantize_  # noqa: E402

MARGIN = 0.02  # nats per character: the margin notebook 16 asserts too


@pytest.fixture(scope="module")
def trained():
    from labkit.recipes.gpt_shakespeare import shakespeare_data

    tok, train_data, val_data = shakespeare_data()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=32, n_layers=2, n_heads=2, d_model=64, bias=False,
                          tie_weights=False))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(len(train_data) - 33, (32,), generator=g).tolist()
        x = torch.stack([train_data[s:s + 32] for s in starts])
        y = torch.stack([train_data[s + 1:s + 33] for s in starts])
        model(x, y).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model.eval(), val_data[:20_001]


def held_out_loss(model, data, block=32):
    n = (len(data) - 1) // block
    x = data[:n * block].view(n, block)
    y = data[1:n * block + 1].view(n, block)
    with torch.no_grad():
        return model(x, y).loss.item()


def stored_bytes(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def test_int8_weights_keep_the_loss(trained):
    model, val = trained
    int8 = copy.deepcopy(model)
    quantize_(int8, Int8WeightOnlyConfig())
    assert type(int8.transformer.h[0].mlp.c_fc.weight).__name__ == "Int8Tensor"
    loss, loss_int8 = held_out_loss(model, val), held_out_loss(int8, val)
    assert loss < 3.0  # it trained (a uniform guess over 65 characters is 4.17)
    x = val[:64].view(2, 32)
    with torch.no_grad():
        assert not torch.equal(model(x).logits, int8(x).logits)  # the weights really were rounded
    assert abs(loss_int8 - loss) < MARGIN
    assert stored_bytes(int8) < 0.5 * stored_bytes(model)
