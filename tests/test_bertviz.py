"""labkit.viz.bertviz: bertviz views that render with no network, checked in a real browser."""

import re
from pathlib import Path

import pytest
import torch

from labkit.viz import head_view, model_view
from labkit.viz.bertviz import save_html

CHROMIUM = "/usr/bin/chromium"
ID_RE = r"labkit-bertviz-[0-9a-f]{32}"
SIZE_LIMIT = 400_000  # bytes of HTML for a small view (d3 and jQuery inlined are about 325 KB of it)


def _attention(n_layers=2, n_heads=4, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(1, n_heads, T, T, generator=g), dim=-1) for _ in range(n_layers)]


TOKENS = ["[CLS]", "the", " cat", " sat", " on", " the", " mat", "[SEP]", " le", " chat", " dort", "[SEP]"]


@pytest.fixture(params=["head_view", "model_view"])
def view(request):
    return {"head_view": head_view, "model_view": model_view}[request.param]


def test_no_cdn_and_libraries_inlined(view):
    html = view(_attention(), TOKENS, html_action="return").data
    assert html.count('<script type="text/javascript">') == 1  # one inline script ...
    assert not re.search(r"<script[^>]*\bsrc\s*=", html)  # ... and none loaded from anywhere
    assert "cdnjs" not in html and "require.config({" not in html
    assert not re.search(r"""src\s*=\s*["']?(https?:)?//""", html)
    assert "https://d3js.org v5" in html  # d3's own banner: the inlined copy
    assert "jQuery v3" in html
    assert len(re.findall(ID_RE, html)) == 2  # the random id: on the div and in the script's parameters


def test_attention_data_and_tokens_are_in_the_html(view):
    att = torch.zeros(1, 1, 3, 3)
    att[0, 0] = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0.12345, 0.54321, 0.33334]])
    html = view([att], ["alpha", "béta", "</script>"], html_action="return").data
    assert "[[[[1,0,0],[.5,.5,0],[.123,.543,.333]]]]" in html  # rounded to 3 decimals, compact JS numbers
    assert '"alpha"' in html and '"béta"' in html
    assert html.count("</script>") == 1  # a token cannot close the script element early
    assert '"\\u003c/script>"' in html


def _nbval_sanitize(text: str) -> str:
    # the rules nbval applies to saved and fresh outputs before comparing them (same parser as nbval's)
    cfg = (Path(__file__).parent / "nbval_sanitize.cfg").read_text(encoding="utf-8")
    for regex, replace in re.findall(r"^regex: (.*)$\n^replace: (.*)$", cfg, flags=re.MULTILINE):
        text = re.sub(regex, replace, text)
    return text


def test_notebook_comparison_masks_exactly_the_attention_numbers(view):
    # A trained model's attention differs in its last digits from one CPU to another: nbval's sanitizer
    # masks the numbers (and only them), so the rest of a saved view (tokens, layers, heads) stays compared.
    att = _attention(2, 4, 5)
    other = [a + 1e-3 * torch.rand_like(a) for a in att]  # the same view on another machine
    a = view(att, TOKENS[:5], html_action="return").data
    b = view(other, TOKENS[:5], html_action="return").data
    assert a != b and _nbval_sanitize(a) == _nbval_sanitize(b)
    masked = _nbval_sanitize(a)
    assert a.count("/*labkit-attention*/[[[[") == 1 and "/*labkit-attention*/ATTENTION/*end-attention*/" in masked
    assert len(a) - len(masked) > 0.9 * len(_array_js_of(att))  # the numbers are gone ...
    assert _nbval_sanitize(view(att, TOKENS[1:6], html_action="return").data) != masked  # ... the tokens are not
    assert _nbval_sanitize(view(att, TOKENS[:5], layers=[1], html_action="return").data) != masked  # nor the layers


def _array_js_of(att):
    from labkit.viz.bertviz import _array_js

    return _array_js(torch.cat(att).numpy())


def test_size_is_small(view):
    html = view(_attention(2, 4, 12), TOKENS, html_action="return").data
    assert len(html.encode("utf-8")) < SIZE_LIMIT


def test_accepted_attention_forms_give_the_same_view(view):
    att = _attention(3, 2, 5)
    tokens = TOKENS[:5]
    kw = dict(html_action="return", div_id="fixed")
    ref = view(att, tokens, **kw).data
    assert view(tuple(att), tokens, **kw).data == ref
    assert view(torch.cat(att), tokens, **kw).data == ref  # (n_layers, n_heads, T, T)
    assert view([a[0] for a in att], tokens, **kw).data == ref  # per layer (n_heads, T, T)
    assert view([a.numpy() for a in att], tokens, **kw).data == ref
    assert view([a.requires_grad_() for a in att], tokens, **kw).data == ref
    batch = [torch.cat([torch.rand_like(a), a]) for a in att]  # (2, n_heads, T, T): pick the second
    assert view(batch, tokens, batch_index=1, **kw).data == ref


def test_layers_heads_and_tokens_are_limited():
    att = _attention(4, 4, 12)
    small = head_view(att, TOKENS, layers=[1, 3], heads=[0, 2], html_action="return").data
    full = head_view(att, TOKENS, html_action="return").data
    assert len(small) < len(full)
    assert '"include_layers": [1, 3]' in small
    m = model_view(att, TOKENS, layers=[1], heads=[2, 3], html_action="return").data
    assert '"include_layers": [1]' in m and '"include_heads": [2, 3]' in m
    with pytest.warns(UserWarning, match="first 5 of 12 tokens"):
        cut = head_view(att, TOKENS, max_tokens=5, html_action="return").data
    assert '" on"' in cut and '" mat"' not in cut


def test_sentence_pair_filters():
    html = head_view(_attention(), TOKENS, sentence_b_start=8, html_action="return").data
    assert "Sentence A -&gt; Sentence B" in html and '"name": "Sentence B -> Sentence A"' in html


def test_unique_ids():
    a = head_view(_attention(), TOKENS, html_action="return").data
    b = head_view(_attention(), TOKENS, html_action="return").data
    assert re.findall(ID_RE, a) != re.findall(ID_RE, b)


def test_view_displays_and_returns_none(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    assert head_view(_attention(), TOKENS) is None
    assert model_view(_attention(), TOKENS) is None
    assert len(shown) == 2 and all("labkit-bertviz-" in s.data for s in shown)


@pytest.mark.parametrize(
    "attention, tokens, kwargs, message",
    [
        (torch.rand(2, 3, 4), ["a"] * 4, {}, r"shape \(2, 3, 4\)"),
        (torch.rand(1, 2, 3, 4), ["a"] * 3, {}, "square"),
        ([torch.rand(1, 2, 3, 3), torch.rand(1, 2, 4, 4)], ["a"] * 3, {}, "differ in shape"),
        ([torch.rand(1, 2, 3, 3, 1)], ["a"] * 3, {}, r"attention\[0\] has shape"),
        ([], [], {}, "empty list"),
        (torch.rand(1, 2, 3, 3), ["a"] * 4, {}, "3 positions but 4 tokens"),
        (torch.rand(1, 2, 3, 3), "abc", {}, "list of token strings"),
        (torch.full((1, 2, 3, 3), float("nan")), ["a"] * 3, {}, "NaN"),
        (torch.rand(1, 2, 3, 3), ["a"] * 3, {"layers": [1]}, r"layers \[1\] out of range"),
        (torch.rand(1, 2, 3, 3), ["a"] * 3, {"heads": [2]}, r"heads \[2\] out of range"),
        (torch.rand(1, 2, 3, 3), ["a"] * 3, {"sentence_b_start": 3}, "sentence_b_start"),
        (torch.rand(1, 2, 3, 3), ["a"] * 3, {"html_action": "save"}, "html_action"),
        ([torch.rand(2, 2, 3, 3)], ["a"] * 3, {"batch_index": 2}, "batch_index"),
        (torch.rand(1, 2, 3, 3), ["a"] * 3, {"div_id": "1 bad"}, "div_id"),
        (torch.rand(12, 12, 40, 40), ["a"] * 40, {}, r"230,400 attention values.*max_values=30,000.*layers=\[...\]"),
    ],
)
def test_invalid_input_is_a_clear_value_error(view, attention, tokens, kwargs, message):
    with pytest.raises(ValueError, match=message):
        view(attention, tokens, **kwargs)


def test_missing_package_names_the_pip_package(monkeypatch):
    import importlib.util

    from labkit.viz import bertviz as bv

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpld3" else real(name, *a))
    bv._library_js.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install mpld3"):
            head_view(_attention(), TOKENS, html_action="return")
    finally:
        bv._library_js.cache_clear()


# -- a real browser, offline -------------------------------------------------

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]

DRAWN = """ids => ids.map(id => {
    const root = document.getElementById(id);
    return root ? {svg: root.querySelectorAll('svg').length, line: root.querySelectorAll('svg line').length,
                   rect: root.querySelectorAll('svg rect').length, text: root.querySelectorAll('svg text').length}
                : null;
})"""


def _open_in_chromium(path: Path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` to run the browser checks")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright for the browser checks")
    errors, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_function("() => document.querySelectorAll('svg line').length > 0", timeout=10_000)
            ids = re.findall(r'<div id="([^"]+)"', path.read_text(encoding="utf-8"))
            drawn = page.evaluate(DRAWN, ids)
            leaked = page.evaluate("() => [typeof d3, typeof jQuery, typeof $, typeof require]")
        finally:
            browser.close()
    return drawn, errors, requests, leaked


@pytest.mark.browser
def test_views_render_offline_in_chromium(tmp_path):
    att = _attention(2, 4, 12)
    h = head_view(att, TOKENS, html_action="return")
    m = model_view(att, TOKENS, html_action="return")
    pair = head_view(att, TOKENS, sentence_b_start=8, html_action="return")
    path = save_html("\n".join(v.data for v in (h, m, pair)), tmp_path / "views.html")  # three views, one page

    drawn, errors, requests, leaked = _open_in_chromium(path)

    assert errors == []
    assert requests == [path.as_uri()]  # nothing fetched beyond the page itself
    assert leaked == ["undefined"] * 4  # no globals left behind to clash with a notebook's own
    head, model, head_pair = drawn
    T, n_heads, n_layers = len(TOKENS), 4, 2
    for hv in (head, head_pair):
        assert hv["svg"] == 1 and hv["text"] == 2 * T
        assert hv["line"] == n_heads * T * T  # one arc per head and token pair, for the layer shown
        assert hv["rect"] >= 2 * T  # token backgrounds and per-head highlight boxes
    assert model["svg"] == 1
    assert model["line"] == n_layers * n_heads * T * T  # every thumbnail drawn
    assert model["rect"] >= 2 * n_layers * n_heads


@pytest.mark.browser
def test_single_view_page_renders_offline(tmp_path):
    path = save_html(model_view(_attention(1, 2, 4), TOKENS[:4], html_action="return"), tmp_path / "one.html")
    drawn, errors, requests, _ = _open_in_chromium(path)
    assert errors == [] and requests == [path.as_uri()]
    assert drawn[0]["line"] == 2 * 4 * 4


# --- encoder-decoder models (notebook 07): bertviz's encoder_/decoder_/cross_attention form ----------


def _seq2seq(n_layers=2, n_heads=2, S=4, T=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    soft = lambda q, k: [torch.softmax(torch.randn(1, n_heads, q, k, generator=g), -1) for _ in range(n_layers)]
    return soft(S, S), soft(T, T), soft(T, S)


SRC_TOKENS, TGT_TOKENS = ["I", "Ġam", "Ġcold", "."], ["<bos>", "J'ai", "Ġfroid"]


def test_encoder_decoder_view_holds_what_bertviz_own_view_holds(view, monkeypatch):
    import json

    bertviz = pytest.importorskip("bertviz")
    enc, dec, cross = _seq2seq()
    ours = view(encoder_attention=enc, decoder_attention=dec, cross_attention=cross, encoder_tokens=SRC_TOKENS,
                decoder_tokens=TGT_TOKENS, html_action="return").data
    # bertviz's own view, with the data it builds captured before it renders
    captured = {}
    monkeypatch.setattr(json, "dumps", lambda obj, *a, **k: captured.setdefault("params", obj) and "{}")
    getattr(bertviz, view.__name__)(encoder_attention=enc, decoder_attention=dec, cross_attention=cross,
                                    encoder_tokens=SRC_TOKENS, decoder_tokens=TGT_TOKENS, html_action="return")
    monkeypatch.undo()
    theirs = captured["params"]["attention"]
    assert [d["name"] for d in theirs] == ["Encoder", "Decoder", "Cross"]
    assert 'Attention: <select id="filter"><option value="0">Encoder</option><option value="1">Decoder</option>' \
           '<option value="2">Cross</option></select>' in ours
    import numpy as np

    from labkit.viz.bertviz import _array_js, _json, _prettify

    for d in theirs:
        assert _array_js(np.asarray(d["attn"])) in ours  # the same numbers, in the same layout
        left, right = _json(_prettify(d["left_text"])), _json(_prettify(d["right_text"]))
        assert f'"left_text": {left}, "right_text": {right}' in ours


@pytest.mark.parametrize("kwargs, message", [
    (dict(cross_attention=_seq2seq()[2], decoder_tokens=TGT_TOKENS), "encoder_tokens is required"),
    (dict(cross_attention=_seq2seq()[2], encoder_tokens=SRC_TOKENS, decoder_tokens=TGT_TOKENS[:2]),
     r"covers 3 x 4 positions but 2 x 4 tokens"),
    (dict(encoder_attention=_seq2seq()[0], decoder_attention=_seq2seq(n_heads=3)[1], encoder_tokens=SRC_TOKENS,
          decoder_tokens=TGT_TOKENS), r"differ in \(layers, heads\)"),
    (dict(encoder_attention=_seq2seq()[2], encoder_tokens=SRC_TOKENS), "must be square"),
    (dict(), "give attention and tokens"),
])
def test_encoder_decoder_view_rejects_mismatches_clearly(view, kwargs, message):
    with pytest.raises(ValueError, match=message):
        view(**kwargs)
    with pytest.raises(ValueError, match="not both"):
        view(_attention(), TOKENS, cross_attention=_seq2seq()[2], encoder_tokens=SRC_TOKENS, decoder_tokens=TGT_TOKENS)


@pytest.mark.browser
def test_cross_attention_view_renders_offline(tmp_path):
    _, _, cross = _seq2seq(n_layers=2, n_heads=2, S=4, T=3)
    m = model_view(cross_attention=cross, encoder_tokens=SRC_TOKENS, decoder_tokens=TGT_TOKENS, html_action="return")
    h = head_view(cross_attention=cross, encoder_tokens=SRC_TOKENS, decoder_tokens=TGT_TOKENS, html_action="return")
    path = save_html(m.data + "\n" + h.data, tmp_path / "cross.html")
    drawn, errors, requests, _ = _open_in_chromium(path)
    assert errors == [] and requests == [path.as_uri()]
    assert drawn[0]["line"] == 2 * 2 * 3 * 4  # every thumbnail: layers x heads x target x source
    assert drawn[1]["line"] == 2 * 3 * 4  # the head view's layer: heads x target x source
    assert drawn[1]["text"] == 3 + 4  # target tokens on the left, source tokens on the right
