"""labkit.recipes.assistant (notebook 12): held-out sentences and messages stay in the tests, the weights set
the task shares, SFT lowers the loss on the assistant's tokens, and score() counts exact matches per task."""

import string
from types import SimpleNamespace

import pytest
import torch

from labkit.chat import ChatTemplate, resize_token_embeddings
from labkit.models.gpt import GPT, GPTConfig
from labkit.recipes import assistant
from labkit.tasks import instructions as instruct
from labkit.tokenizers import CharTokenizer

TOK = CharTokenizer(string.ascii_letters + string.digits + " .,!?'\n:\"", unk="?")
WORDS = "tom mary cat dog tea milk runs eats sees likes big red old new".split()


def sentences(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (int(k),), generator=g)).capitalize() + "."
            for k in torch.randint(3, 6, (n,), generator=g)]


LM = SimpleNamespace(train_text=sentences(300, 0), val_text=sentences(60, 1))
SMS = [pair for i in range(40) for pair in [("spam", f"WIN {i} pounds now"), ("ham", f"see you at {i}")]]
RECIPE = assistant.SFTRecipe(n_per_task=20, n_test=5, n_sms_test=10, steps=30, batch_size=8, lr=3e-3)


def test_instruction_data_keeps_held_out_text_in_the_tests():
    d = assistant.instruction_data(TOK, LM, RECIPE, sms=SMS)
    val = set(LM.val_text) - set(LM.train_text)
    assert not any(e.input in val for e in d.train)
    sms_test = {t for _, t in d.sms_test}
    assert not any(e.input in sms_test for e in d.train if e.task == "spam")
    counts = {t: sum(e.task == t for e in d.train) for t in RECIPE.weights}
    assert counts == {t: int(20 * w) for t, w in RECIPE.weights.items()}
    assert all(e.held_out_phrasing for e in d.test_held_out_phrasing)
    assert {e.task for e in d.test_held_out_task} == {instruct.HELD_OUT_TASK}
    assert {e.task for e in d.test} == set(instruct.TRAINED_TASKS)


def test_sft_lowers_the_assistant_loss_and_score_counts_exact_matches():
    torch.manual_seed(0)
    d = assistant.instruction_data(TOK, LM, RECIPE, sms=SMS)
    chat = ChatTemplate(TOK.encode, TOK.decode, TOK.vocab_size)
    model = resize_token_embeddings(GPT(GPTConfig.tiny(vocab_size=TOK.vocab_size, context_length=128)), chat.vocab_size)
    x, y = chat.batch([e.messages() for e in d.train[:32]])
    before = model(x, y).loss.item()
    history = assistant.sft(model, chat, d.train, RECIPE, progress=False)
    assert history.completed_steps == RECIPE.steps
    assert model(x, y).loss.item() < 0.8 * before  # from ~ln(75), the uniform guess
    s = assistant.score(model, chat, TOK, d.test)
    assert set(s.by_task) == set(instruct.TRAINED_TASKS) and len(s.answers) == len(d.test)
    by_hand = sum(instruct.exact_match(a, e.answer) for a, e in zip(s.answers, d.test) if e.task == "count") / 5
    assert s.by_task["count"] == pytest.approx(by_hand)
    assert s.mean == pytest.approx(sum(s.by_task.values()) / len(s.by_task))


def test_gpt_english_sft_zoo_entry_round_trips_through_its_meta(isolated_cache):
    from labkit import zoo
    from labkit.tokenizers import BPETokenizer

    tok = BPETokenizer.train(LM.train_text, 300)
    hf = tok.hf_tokenizer
    model = resize_token_embeddings(GPT(GPTConfig.tiny(vocab_size=tok.vocab_size, context_length=32)), tok.vocab_size + 4)
    meta = assistant.sft_meta(model, {"tokenizer": hf.to_str(), "val_loss": 3.0}, RECIPE, seconds=1.5)
    assert meta["config"]["vocab_size"] == tok.vocab_size + 4 and meta["sft_recipe"]["steps"] == RECIPE.steps
    zoo.save("gpt-english-sft", model, meta)
    loaded = zoo.load("gpt-english-sft")  # found in the cache: built from meta, not trained
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    tok2, chat = assistant.chat_of(loaded.zoo_meta)
    assert chat.vocab_size == tok2.vocab_size + len(chat.special) and tok2.vocab_size == tok.vocab_size
