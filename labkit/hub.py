"""The Hugging Face hub: where the lab's online parts (GPT-2 in notebooks 08 and 12) get published weights.

Everything else in the lab works without it. One setting says whether to use it, the environment variable
``LABKIT_HUB``:

* ``auto`` (the default): use the hub if it answers within ``PROBE_SECONDS``; if it does not (no network, a
  slow classroom Wi-Fi), or if Hugging Face's own ``HF_HUB_OFFLINE`` is set, use only the local Hugging Face
  cache. A room on bad Wi-Fi falls back at once instead of each learner starting a 550 MB download.
* ``offline``: only the local Hugging Face cache (an instructor's pre-seeded copy), never the network.
* ``off``: not at all, even where the cache has a copy: the online parts say so and are skipped. The test suite
  runs with this, so that its result does not depend on the network or on what a machine's cache holds.

    gpt2, tokenizer = hub.load_gpt2("gpt2")   # (None, None), with a printed reason, where it cannot
"""

from __future__ import annotations

import os
import threading
import urllib.request
from typing import Any, Sequence

from torch import nn

__all__ = ["MODES", "PROBE_SECONDS", "mode", "reachable", "load_gpt2", "instruction_tune"]

MODES = ("auto", "offline", "off")
PROBE_SECONDS = 3.0  # how long the hub gets to answer a small request before the lab works offline
_TRUE = ("1", "true", "yes", "on")
_probed: dict[str, bool] = {}


def mode() -> str:
    """``LABKIT_HUB`` (auto, offline or off); ``auto`` becomes ``offline`` under Hugging Face's HF_HUB_OFFLINE."""
    value = os.environ.get("LABKIT_HUB", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"LABKIT_HUB={value!r} is not one of {', '.join(MODES)}: auto uses the Hugging Face hub "
                         "when it answers, offline only its local cache, off never (the online parts are skipped).")
    if value == "auto" and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "offline"
    return value


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub answers a small request (the metadata of GPT-2) within ``timeout`` seconds in all,
    however slowly the network trickles. Asked once per process and endpoint."""
    url = f"{_endpoint()}/api/models/gpt2"
    if url not in _probed:
        answer: list[bool] = []

        def ask() -> None:
            try:
                with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
                    answer.append(r.status < 500)
            except OSError:  # refused, unresolvable, timed out, or an HTTP error
                answer.append(False)

        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        thread.join(timeout)  # a total deadline: a socket timeout alone restarts with every byte received
        _probed[url] = bool(answer and answer[0])
    return _probed[url]


def _go_offline() -> None:
    """Make transformers and huggingface_hub use only the local cache, even if they were imported already."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants

        huggingface_hub.constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - transformers depends on it
        pass


def load_gpt2(name: str = "gpt2") -> tuple[Any, Any]:
    """GPT-2's published weights in labkit's ``GPT`` and its tokenizer, from the hub or its local cache, as the
    mode allows; ``(None, None)`` with a printed reason where they cannot be had."""
    current = mode()
    if current == "off":
        print(f"The Hugging Face hub is switched off here (LABKIT_HUB=off): skipping the {name} part.\n"
              "Everything else in this notebook works without it.")
        return None, None
    if current == "offline" or not reachable():
        _go_offline()
    from transformers import AutoTokenizer

    from .models.gpt import GPT

    try:
        model = GPT.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (RuntimeError, OSError) as e:
        print(str(e).split("\n(underlying error")[0])  # what happened and what to do, without the network details
        print(f"-> Skipping the {name} part; everything else in this notebook works offline.")
        return None, None
    return model, tokenizer


def instruction_tune(model: nn.Module, tokenizer, records: Sequence[dict], steps: int = 200, batch_size: int = 8,
                     lr: float = 5e-5, max_tokens: int = 256, n_held_out: int = 50, progress: bool = True):
    """Notebook 12's recipe on a hub model: its vocabulary grown by the chat template's markers, then SFT on the
    ``{instruction, input, output}`` records (the loss on the answers only). Returns the chat template and the
    held-out examples (the last ``n_held_out`` records that fit in ``max_tokens``)."""
    from .chat import ChatTemplate, resize_token_embeddings
    from .tasks.instructions import Example
    from .recipes.assistant import SFTRecipe, sft

    chat = ChatTemplate(tokenizer.encode, tokenizer.decode, len(tokenizer))
    resize_token_embeddings(model, chat.vocab_size)
    examples = [Example("instructions", r["instruction"] + ("\n" + r["input"] if r["input"] else ""), "",
                        r["output"], False) for r in records]
    examples = [e for e in examples if len(chat.render(e.messages()).ids) <= max_tokens]
    if len(examples) <= n_held_out:
        raise ValueError(f"only {len(examples)} records fit in {max_tokens} tokens: nothing left to train on "
                         f"after holding out {n_held_out}")
    train_set, held_out = examples[:-n_held_out], examples[-n_held_out:]
    sft(model, chat, train_set, SFTRecipe(steps=steps, batch_size=batch_size, lr=lr), progress=progress, desc="SFT")
    return chat, held_out
