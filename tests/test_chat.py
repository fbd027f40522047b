"""labkit.chat: the chat template and its assistant mask (prompt tokens carry no loss), resized embeddings
that keep the old rows, an SFT step that learns the assistant's tokens only, and batched replies (respond)."""

import pytest
import torch

from labkit.chat import CHAT_TOKENS, ChatTemplate, resize_token_embeddings, respond
from labkit.models.gpt import GPT, GPTConfig
from labkit.tokenizers import CharTokenizer

TOK = CharTokenizer("abcdefghijklmnopqrstuvwxyz :")
CHAT = ChatTemplate(TOK.encode, TOK.decode, TOK.vocab_size)
USER, ASSISTANT, END = CHAT.special["<|user|>"], CHAT.special["<|assistant|>"], CHAT.special["<|end|>"]
CONVERSATION = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]


def test_render_lays_out_markers_and_masks_the_assistant():
    ids, mask = CHAT.render(CONVERSATION)
    assert ids == [USER, *TOK.encode("hi"), END, ASSISTANT, *TOK.encode("yo"), END]
    assert mask == [False, False, False, False, False, True, True, True]  # the answer and its end marker
    assert CHAT.vocab_size == TOK.vocab_size + len(CHAT_TOKENS)
    assert CHAT.decode(ids) == "<|user|>hi<|end|><|assistant|>yo<|end|>"
    prompt = CHAT.render(CONVERSATION[:1], add_generation_prompt=True)
    assert prompt.ids[-1] == ASSISTANT and not any(prompt.assistant_mask)


def test_sft_targets_score_only_the_assistants_tokens():
    idx, targets = CHAT.sft_targets(CHAT.render(CONVERSATION))
    assert len(idx) == len(targets) == 7
    # position t predicts token t + 1; only the tokens after <|assistant|> are scored
    assert targets == [-100, -100, -100, -100, *TOK.encode("yo"), END]
    x, y = CHAT.batch([CONVERSATION, CONVERSATION[:1] + [{"role": "assistant", "content": "a longer one"}]])
    assert x.shape == y.shape == (2, 17)
    assert (y[0, 7:] == -100).all() and (x[0, 7:] == END).all()  # padding carries no loss


def test_markers_cannot_be_forged_and_bad_input_is_refused():
    ids, _ = CHAT.render([{"role": "user", "content": "end"}])  # the word "end" is text, not the marker
    assert ids.count(END) == 1
    with pytest.raises(ValueError, match="unknown role 'bot'"):
        CHAT.render([{"role": "bot", "content": "hi"}])
    with pytest.raises(ValueError, match="empty"):
        CHAT.render([])
    with pytest.raises(ValueError, match="no assistant message"):
        CHAT.sft_targets(CHAT.render(CONVERSATION[:1]))
    with pytest.raises(ValueError, match="more than the model's context"):
        CHAT.batch([CONVERSATION], context_length=4)


@pytest.mark.parametrize("tied", [True, False])
def test_resized_embeddings_keep_the_old_rows(tied):
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=TOK.vocab_size, tie_weights=tied)).eval()
    x = torch.tensor([TOK.encode("hello there")])
    before = model(x).logits
    old_wte = model.transformer.wte.weight.clone()
    resize_token_embeddings(model, CHAT.vocab_size)
    assert model.config.vocab_size == CHAT.vocab_size
    assert model.transformer.wte.weight.shape[0] == model.lm_head.weight.shape[0] == CHAT.vocab_size
    assert torch.equal(model.transformer.wte.weight[: TOK.vocab_size], old_wte)
    assert torch.allclose(model.transformer.wte.weight[-1], old_wte.mean(0))
    assert (model.lm_head.weight is model.transformer.wte.weight) == tied
    assert torch.allclose(model(x).logits[..., : TOK.vocab_size], before, atol=1e-6)  # old tokens: same scores
    model(torch.tensor([CHAT.render(CONVERSATION).ids]))  # the markers are valid ids now
    with pytest.raises(ValueError, match="smaller"):
        resize_token_embeddings(model, 3)


def test_an_sft_step_learns_the_assistants_tokens_only():
    torch.manual_seed(0)
    model = resize_token_embeddings(GPT(GPTConfig.tiny(vocab_size=TOK.vocab_size)), CHAT.vocab_size)
    x, y = CHAT.batch([CONVERSATION] * 4)
    loss = model(x, y).loss
    # the prompt's positions carry no loss: whatever they predict, the loss is the same
    logits = model(x).logits
    keep = y != -100
    noisy = torch.where(keep[..., None], logits, torch.randn_like(logits) * 10)
    V = logits.size(-1)
    assert torch.nn.functional.cross_entropy(noisy.view(-1, V), y.view(-1)).item() == pytest.approx(loss.item(), rel=1e-5)
    # it is the cross-entropy over the assistant's positions alone
    by_hand = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        model(x, y).loss.backward()
        opt.step()
    assert model(x, y).loss.item() < 0.5 * loss.item()


def test_length_grouped_batches_pad_less_and_draw_every_conversation():
    from labkit.chat import length_grouped_batches

    rng = torch.Generator().manual_seed(0)
    convs = [[{"role": "user", "content": "q" * int(n)}, {"role": "assistant", "content": "a"}]
             for n in torch.randint(1, 40, (200,), generator=rng)]
    get_batch = length_grouped_batches(CHAT, convs, batch_size=8, seed=0, window=16)
    padded = 0
    seen = set()
    for step in range(64):
        idx, targets = get_batch(step)
        lengths = (targets != -100).sum(1)  # one assistant token + the end marker per row
        assert (lengths == 2).all()
        seen.update((idx != END).sum(1).tolist())  # each row's unpadded length (its last token is the end)
        padded += idx.numel()
    # random batches of conversations 1-39 long pad every batch to ~its longest; grouped ones barely at all
    mean_len = sum(len(CHAT.render(c).ids) - 1 for c in convs) / len(convs)
    assert padded / (64 * 8) < 1.25 * mean_len
    assert seen == {len(CHAT.render(c).ids) - 2 for c in convs}  # the sorted slices still cover every length
    again = length_grouped_batches(CHAT, convs, batch_size=8, seed=0, window=16)
    assert torch.equal(again(0)[0], length_grouped_batches(CHAT, convs, batch_size=8, seed=0, window=16)(0)[0])
    with pytest.raises(ValueError, match="context"):
        length_grouped_batches(CHAT, convs, batch_size=8, context_length=10)
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_batches(CHAT, convs, batch_size=0)


def _tiny_chat_model():
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz .?\n")
    chat = ChatTemplate(tok.encode, tok.decode, tok.vocab_size)
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=tok.vocab_size, context_length=32)).eval()
    resize_token_embeddings(model, chat.vocab_size)
    return tok, chat, model


def test_respond_gives_what_one_at_a_time_generation_gives():
    tok, chat, model = _tiny_chat_model()
    prompts = [chat.render([{"role": "user", "content": t}], add_generation_prompt=True).ids
               for t in ["ab", "cd", "hello there", "xy", "a b c d e f"]]
    answers = respond(model, prompts, chat.end_id, max_new_tokens=8)
    for p, a in zip(prompts, answers):
        full = model.generate(torch.tensor([p]), 8, top_k=1, use_cache=False)[0, len(p):].tolist()
        expect = full[: full.index(chat.end_id)] if chat.end_id in full else full
        assert a == expect
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert respond(model, prompts, chat.end_id, 8, temperature=1.0, generator=g1) == \
        respond(model, prompts, chat.end_id, 8, temperature=1.0, generator=g2)


def test_respond_stops_at_the_end_marker_and_refuses_long_prompts():
    tok, chat, model = _tiny_chat_model()
    head = torch.nn.Linear(model.config.d_model, chat.vocab_size)  # the end marker is every step's argmax
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[chat.end_id] = 1.0
    model.lm_head = head
    prompt = chat.render([{"role": "user", "content": "hi"}], add_generation_prompt=True).ids
    assert respond(model, [prompt], chat.end_id, 8) == [[]]
    with pytest.raises(ValueError, match="tokens; it must be 1 to 31"):
        respond(model, [[0] * 40], chat.end_id, 8)
