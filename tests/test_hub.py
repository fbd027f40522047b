"""labkit.hub: the hub's mode (auto / offline / off), a probe that gives up quickly, and the online path of
notebooks 08 and 12 (GPT-2's weights into labkit's GPT, then SFT on the lab's instructions), tested without a
network against a small GPT-2-shaped model saved in the Hugging Face cache's own layout under the name "gpt2"."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from labkit import hub

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    monkeypatch.setattr(hub, "_probed", {})
    for var in ("LABKIT_HUB", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)


def test_the_mode_follows_labkit_hub_and_respects_hf_hub_offline(monkeypatch):
    assert hub.mode() == "auto"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.mode() == "offline"
    monkeypatch.setenv("LABKIT_HUB", "off")
    assert hub.mode() == "off"
    monkeypatch.setenv("LABKIT_HUB", "sometimes")
    with pytest.raises(ValueError, match="LABKIT_HUB='sometimes' is not one of auto, offline, off"):
        hub.mode()


def test_off_skips_without_touching_the_network(monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_HUB", "off")
    monkeypatch.setattr(hub, "reachable", lambda *a: pytest.fail("off must not probe the hub"))
    assert hub.load_gpt2("gpt2") == (None, None)
    assert "switched off here (LABKIT_HUB=off)" in capsys.readouterr().out


def _serve(handler_cls):
    server = HTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_probe_gives_up_on_a_server_that_never_answers(monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does) and never sends a byte: a stalled Wi-Fi
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    t0 = time.perf_counter()
    assert hub.reachable(timeout=1.0) is False
    assert time.perf_counter() - t0 < 2.0
    silent.close()


def test_the_probe_gives_up_on_a_trickle(monkeypatch):
    class Trickle(BaseHTTPRequestHandler):  # answers, one byte every 0.3 s: each read is quick, the whole is not
        def do_HEAD(self):
            for byte in b"HTTP/1.1 200 OK\r\n\r\n":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)

        def log_message(self, *args):
            pass

    server = _serve(Trickle)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    t0 = time.perf_counter()
    assert hub.reachable(timeout=1.0) is False
    assert time.perf_counter() - t0 < 2.0
    server.shutdown()


def test_the_probe_says_yes_to_a_hub_that_answers(monkeypatch):
    class Hub(BaseHTTPRequestHandler):
        def do_HEAD(self):
            assert self.path == "/api/models/gpt2"
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = _serve(Hub)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    assert hub.reachable(timeout=2.0) is True
    server.shutdown()


def fake_gpt2_cache(hf_home: Path, seed: int = 0) -> Path:
    """A small GPT-2-shaped model and byte-level BPE tokenizer, saved where the Hugging Face cache keeps
    "gpt2" (hub/models--gpt2/refs/main -> snapshots/<commit>/): what a machine that once downloaded GPT-2 has."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.manual_seed(seed)
    text = ["Repeat this sentence: I like green tea.", "What is the last word? She has a cat.",
            "The animal didn't cross the street because it was too tired."] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(text, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / "models--gpt2"
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


ONLINE_PATH = r"""
import json, sys, torch
from torch.testing import assert_close
from transformers import GPT2LMHeadModel
from labkit import hub
from labkit.chat import respond

gpt2, tok = hub.load_gpt2("gpt2")  # the notebooks' call
ids = torch.tensor([tok.encode("She has a green cat.")])
reference = GPT2LMHeadModel.from_pretrained("gpt2").eval()
with torch.no_grad():
    assert_close(gpt2.eval()(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-5)
records = [{"instruction": "Repeat this sentence.", "input": s, "output": s}
           for s in ["I like green tea.", "She has a cat.", "Tom is my friend."] * 8]
before = gpt2.lm_head.weight.detach().clone()
chat, held_out = hub.instruction_tune(gpt2, tok, records, steps=4, batch_size=4, n_held_out=3, progress=False)
ids = chat.render(held_out[0].messages(with_answer=False), add_generation_prompt=True).ids
answer = respond(gpt2.eval(), [ids], chat.end_id, 8)[0]
print(json.dumps({"vocab": [before.shape[0], gpt2.lm_head.weight.shape[0], len(tok)],
                  "changed": not torch.equal(gpt2.lm_head.weight[: before.shape[0]], before),
                  "held_out": len(held_out), "answer": len(answer)}))
"""


@pytest.mark.parametrize("setting", [{"LABKIT_HUB": "offline"}, {"HF_HUB_OFFLINE": "1"}])
def test_the_online_path_on_a_gpt2_from_the_hub_cache(tmp_path, setting):
    fake_gpt2_cache(tmp_path / "hf")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LABKIT_HUB"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9", **setting)  # no network at all
    proc = subprocess.run([sys.executable, "-c", ONLINE_PATH], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    vocab, grown, tokenizer_size = result["vocab"]
    assert vocab == tokenizer_size and grown == tokenizer_size + 4  # the chat template's four markers
    assert result["changed"] and result["held_out"] == 3 and 1 <= result["answer"] <= 8


def test_off_skips_even_with_gpt2_in_the_hub_cache(tmp_path):
    fake_gpt2_cache(tmp_path / "hf")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LABKIT_HUB"))}
    env.update(HF_HOME=str(tmp_path / "hf"), LABKIT_HUB="off")
    code = "from labkit import hub; print(hub.load_gpt2('gpt2') == (None, None))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("True") and "LABKIT_HUB=off" in proc.stdout


def test_offline_without_a_copy_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LABKIT_HUB"))}
    env.update(HF_HOME=str(tmp_path / "empty"), LABKIT_HUB="offline")
    code = "from labkit import hub; print(hub.load_gpt2('gpt2') == (None, None))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no copy was found in the local Hugging Face cache" in proc.stdout
    assert "Skipping the gpt2 part" in proc.stdout and proc.stdout.strip().endswith("True")
