"""bertviz's head view and model view for labkit models, working with no network.

bertviz's own views load require.js, d3 and jQuery from a CDN, so offline (a
classroom, a train, CI) they stay blank. These versions take the same
JavaScript that bertviz ships, and inline local copies of d3 v5 and jQuery read
at run time from installed packages (``mpld3`` ships d3, ``nbclassic`` ships
jQuery), joined by a small stand-in for require.js. Each view is one
self-contained HTML snippet: it works as the only output of a notebook, next to
other views, and saved as a file.

    from labkit.viz import head_view, model_view
    head_view(attn, tokens)            # attn: per-layer list of (1, n_heads, T, T), or (n_layers, n_heads, T, T)
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import uuid
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from .._io import atomic_write_text

__all__ = ["head_view", "model_view", "save_html"]

MAX_TOKENS = 40  # default: longer inputs are cut to their first MAX_TOKENS tokens
MAX_VALUES = 30_000  # attention numbers one view may hold (about 5 bytes each in the HTML)

# Where the JavaScript libraries come from: (pip package, candidate paths inside it).
_LIBRARIES = {
    "d3": ("mpld3", ("js/d3.v5.min.js",)),
    "jquery": ("nbclassic", ("static/components/jquery/dist/jquery.min.js", "static/components/jquery/jquery.min.js")),
}

_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


# ---------------------------------------------------------------------------
# Finding the JavaScript
# ---------------------------------------------------------------------------


def _package_dir(package: str, purpose: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"labkit's offline bertviz views need {purpose} from the Python package {package!r}, "
            f"which is not installed. Install it with: pip install {package}"
        )
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=None)
def _library_js(name: str) -> str:
    """Source of a JavaScript library ("d3" or "jquery") shipped inside an installed package."""
    package, candidates = _LIBRARIES[name]
    root = _package_dir(package, f"a local copy of {name}")
    for rel in candidates:
        path = root / rel
        if path.is_file():
            return _script_safe(path.read_text(encoding="utf-8"))
    raise FileNotFoundError(
        f"the installed {package!r} package has no {name} file (looked for {', '.join(candidates)} under {root}); "
        f"reinstall it with: pip install --force-reinstall {package}"
    )


@lru_cache(maxsize=None)
def _bertviz_js(view: str) -> str:
    """bertviz's ``head_view.js`` / ``model_view.js`` with its CDN ``require.config`` removed."""
    path = _package_dir("bertviz", f"its {view}.js") / f"{view}.js"
    src = path.read_text(encoding="utf-8")
    start = src.find("require.config(")
    end = src.find("});", start)
    call = re.search(r"requirejs\(\s*\[\s*'jquery'\s*,\s*'d3'\s*\]\s*,\s*function\s*\(\s*\$\s*,\s*d3\s*\)", src)
    if start < 0 or end < 0 or call is None or "PYTHON_PARAMS" not in src:
        import bertviz

        raise RuntimeError(
            f"bertviz {getattr(bertviz, '__version__', '?')}'s {path.name} is not laid out as labkit expects "
            f"(a require.config block, then requirejs(['jquery', 'd3'], ...)); install bertviz 1.4.x"
        )
    src = src[:start] + src[end + 3:]  # drop the block that points at the CDN
    return _script_safe(src)


def _script_safe(js: str) -> str:
    # A literal "</script" (in a string) would end the inline <script> element early.
    js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)
    return re.sub(r"^//# sourceMappingURL=.*$", "", js, flags=re.MULTILINE)


def _module_js(name: str) -> str:
    # Run a UMD library as if it were a CommonJS module: no globals set, no AMD define() called.
    return (
        f"var {name} = (function () {{ var module = {{exports: {{}}}}, exports = module.exports, define;\n"
        f"{_library_js(name.lower())}\n;return module.exports; }})();\n"
    )


def _view_script(view: str, params_js: str) -> str:
    # only the first marker: bertviz's own comment after it repeats the word (and would repeat the data)
    body = _bertviz_js(view).replace("PYTHON_PARAMS", params_js, 1)
    return (
        "(function () {\n"
        + _module_js("d3")
        + _module_js("jQuery")
        + "// Stand-in for require.js: hand bertviz the libraries inlined above.\n"
        "var require = {config: function () {}};\n"
        "function requirejs(deps, callback) {\n"
        "  var libs = {jquery: jQuery, d3: d3};\n"
        "  callback.apply(null, deps.map(function (d) { return libs[d]; }));\n"
        "}\n"
        + body
        + "\n})();"
    )


# ---------------------------------------------------------------------------
# Checking and shaping the attention
# ---------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _normalise_attention(attention, batch_index: int, square: bool = True) -> np.ndarray:
    """Any accepted form -> an array (n_layers, n_heads, T_query, T_key)."""
    if isinstance(attention, (list, tuple)):
        if len(attention) == 0:
            raise ValueError("attention is an empty list; expected one tensor per layer")
        layers = []
        for i, a in enumerate(attention):
            a = _to_numpy(a)
            if a.ndim == 4:  # (B, n_heads, T, T), as Hugging Face and bertviz give
                if not 0 <= batch_index < a.shape[0]:
                    raise ValueError(f"batch_index={batch_index} is out of range for layer {i}'s batch of {a.shape[0]}")
                a = a[batch_index]
            elif a.ndim != 3:
                raise ValueError(
                    f"attention[{i}] has shape {tuple(a.shape)}; each layer's attention must be "
                    f"(batch, n_heads, T, T) or (n_heads, T, T)"
                )
            layers.append(a)
        shapes = {a.shape for a in layers}
        if len(shapes) > 1:
            raise ValueError(f"the layers' attention tensors differ in shape: {sorted(shapes)}")
        att = np.stack(layers)
    else:
        att = _to_numpy(attention)
        if att.ndim == 5:  # (n_layers, B, n_heads, T, T)
            if not 0 <= batch_index < att.shape[1]:
                raise ValueError(f"batch_index={batch_index} is out of range for a batch of {att.shape[1]}")
            att = att[:, batch_index]
        elif att.ndim != 4:
            raise ValueError(
                f"attention has shape {tuple(att.shape)}; expected a list of per-layer (batch, n_heads, T, T) "
                f"tensors or one (n_layers, n_heads, T, T) tensor"
            )
    if square and att.shape[-1] != att.shape[-2]:
        raise ValueError(
            f"attention maps must be square (self-attention, T x T), got {att.shape[-2]} x {att.shape[-1]}"
        )
    if att.size == 0:
        raise ValueError(f"attention is empty (shape {tuple(att.shape)})")
    if not np.isfinite(att).all():
        raise ValueError("attention holds NaN or infinite values")
    return att


def _select(which, n: int, kind: str) -> list[int]:
    if which is None:
        return list(range(n))
    if isinstance(which, (int, np.integer)):
        which = [which]
    which = [int(i) for i in which]
    if not which:
        raise ValueError(f"{kind} is empty; pass None for all {kind}")
    bad = [i for i in which if not 0 <= i < n]
    if bad:
        raise ValueError(f"{kind} {bad} out of range: the attention has {n} {kind} (0..{n - 1})")
    return which


def _prettify(tokens: Sequence[str]) -> list[str]:
    # as bertviz's format_special_chars, plus visible newlines and tabs
    return [
        t.replace("Ġ", " ").replace("▁", " ").replace("</w>", "").replace("Ċ", "\\n").replace("\n", "\\n").replace("\t", "\\t")
        for t in tokens
    ]


def _num(v: float) -> str:
    # 3 decimals, JS's shortest spelling: 0.125 -> ".125", 1.0 -> "1", 0.0 -> "0"
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    if s in ("", "-0"):
        return "0"
    return s[1:] if s.startswith("0.") else "-" + s[2:] if s.startswith("-0.") else s


def _array_js(a: np.ndarray) -> str:
    """A nested JS array literal with values rounded to 3 decimals (".125", "1", "0")."""
    if a.ndim == 1:
        return "[" + ",".join(_num(v) for v in a.tolist()) + "]"
    return "[" + ",".join(_array_js(x) for x in a) + "]"


def _json(obj) -> str:
    # "<" escaped so that no token text can close the <script> element
    return json.dumps(obj, ensure_ascii=False).replace("<", "\\u003c")


def _prepare(attention, tokens, sentence_b_start, layers, heads, max_tokens, batch_index, prettify_tokens, max_values):
    att = _normalise_attention(attention, batch_index)
    n_layers, n_heads, T, _ = att.shape
    if isinstance(tokens, str):
        raise ValueError("tokens must be a list of token strings, not one string (e.g. tokenizer.tokens(text))")
    tokens = [str(t) for t in tokens]
    if len(tokens) != T:
        raise ValueError(f"the attention covers {T} positions but {len(tokens)} tokens were given")
    layers = _select(layers, n_layers, "layers")
    heads = _select(heads, n_heads, "heads")
    if max_tokens is not None and T > max_tokens:
        warnings.warn(
            f"showing the first {max_tokens} of {T} tokens; pass max_tokens={T} to show all "
            f"(and layers=/heads= to keep the view small)",
            stacklevel=3,
        )
        T = max_tokens
        tokens = tokens[:T]
    att = att[np.ix_(layers, heads, range(T), range(T))]
    if prettify_tokens:
        tokens = _prettify(tokens)

    if sentence_b_start is None:
        parts = [(None, slice(0, T), slice(0, T))]
    else:
        b = int(sentence_b_start)
        if not 0 < b < T:
            raise ValueError(f"sentence_b_start={sentence_b_start} must lie inside the {T} tokens shown (1..{T - 1})")
        sa, sb = slice(0, b), slice(b, T)
        parts = [
            ("All", slice(0, T), slice(0, T)),
            ("Sentence A -> Sentence A", sa, sa),
            ("Sentence B -> Sentence B", sb, sb),
            ("Sentence A -> Sentence B", sa, sb),
            ("Sentence B -> Sentence A", sb, sa),
        ]
    n_values = sum(att[:, :, q, k].size for _, q, k in parts)
    if max_values is not None and n_values > max_values:
        raise ValueError(
            f"this view would hold {n_values:,} attention values ({len(layers)} layers x {len(heads)} heads x "
            f"{T} x {T} tokens{' x 2 for the sentence A/B filters' if len(parts) > 1 else ''}), more than "
            f"max_values={max_values:,}; the notebook would grow by about {5 * n_values // 1000:,} KB. "
            f"Pick fewer with layers=[...], heads=[...] or max_tokens=..., or raise max_values"
        )
    data = [
        {"name": name, "attn": att[:, :, q, k], "left_text": tokens[q], "right_text": tokens[k]}
        for name, q, k in parts
    ]
    return data, layers, heads, n_heads


def _prepare_seq2seq(encoder_attention, decoder_attention, cross_attention, encoder_tokens, decoder_tokens,
                     layers, heads, max_tokens, batch_index, prettify_tokens, max_values):
    """bertviz's encoder-decoder form: up to three filters, "Encoder" (source -> source), "Decoder"
    (target -> target) and "Cross" (target queries -> source keys), each a per-layer list."""
    parts = []
    for name, attn, left, right in (("Encoder", encoder_attention, encoder_tokens, encoder_tokens),
                                    ("Decoder", decoder_attention, decoder_tokens, decoder_tokens),
                                    ("Cross", cross_attention, decoder_tokens, encoder_tokens)):
        if attn is None:
            continue
        need = {"Encoder": ["encoder_tokens"], "Decoder": ["decoder_tokens"],
                "Cross": ["encoder_tokens", "decoder_tokens"]}[name]
        for arg in need:
            toks = encoder_tokens if arg == "encoder_tokens" else decoder_tokens
            if toks is None:
                raise ValueError(f"{arg} is required with {name.lower()}_attention")
            if isinstance(toks, str):
                raise ValueError(f"{arg} must be a list of token strings, not one string")
        att = _normalise_attention(attn, batch_index, square=(name != "Cross"))
        left, right = [str(t) for t in left], [str(t) for t in right]
        if att.shape[-2:] != (len(left), len(right)):
            raise ValueError(f"{name.lower()}_attention covers {att.shape[-2]} x {att.shape[-1]} positions but "
                             f"{len(left)} x {len(right)} tokens were given (queries x keys)")
        parts.append([name, att, left, right])
    if not parts:
        raise ValueError("give at least one of encoder_attention, decoder_attention, cross_attention")
    shapes = {p[1].shape[:2] for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"the encoder, decoder and cross attention differ in (layers, heads): {sorted(shapes)}")
    n_layers, n_heads = parts[0][1].shape[:2]
    layers = _select(layers, n_layers, "layers")
    heads = _select(heads, n_heads, "heads")
    for p in parts:
        q, k = p[1].shape[-2:]
        if max_tokens is not None and max(q, k) > max_tokens:
            warnings.warn(f"showing the first {max_tokens} tokens of each sentence; pass max_tokens=... to show all",
                          stacklevel=4)
            q, k = min(q, max_tokens), min(k, max_tokens)
        p[1] = p[1][np.ix_(layers, heads, range(q), range(k))]
        p[2], p[3] = p[2][:q], p[3][:k]
        if prettify_tokens:
            p[2], p[3] = _prettify(p[2]), _prettify(p[3])
    n_values = sum(p[1].size for p in parts)
    if max_values is not None and n_values > max_values:
        raise ValueError(
            f"this view would hold {n_values:,} attention values, more than max_values={max_values:,}; pick fewer "
            f"with layers=[...], heads=[...] or max_tokens=..., or raise max_values")
    data = [{"name": name, "attn": att, "left_text": left, "right_text": right} for name, att, left, right in parts]
    return data, layers, heads, n_heads


def _prepare_any(attention, tokens, sentence_b_start, layers, heads, max_tokens, batch_index, prettify_tokens,
                 max_values, encoder_attention, decoder_attention, cross_attention, encoder_tokens, decoder_tokens):
    seq2seq = any(a is not None for a in (encoder_attention, decoder_attention, cross_attention))
    if seq2seq:
        if attention is not None or tokens is not None or sentence_b_start is not None:
            raise ValueError("pass either attention and tokens (one stack) or encoder_/decoder_/cross_attention "
                             "with encoder_tokens/decoder_tokens (an encoder-decoder model), not both")
        return _prepare_seq2seq(encoder_attention, decoder_attention, cross_attention, encoder_tokens,
                                decoder_tokens, layers, heads, max_tokens, batch_index, prettify_tokens, max_values)
    if attention is None or tokens is None:
        raise ValueError("give attention and tokens, or for an encoder-decoder model encoder_attention, "
                         "decoder_attention and/or cross_attention with encoder_tokens and decoder_tokens")
    return _prepare(attention, tokens, sentence_b_start, layers, heads, max_tokens, batch_index, prettify_tokens,
                    max_values)


# The attention numbers sit between these two JS comments, and nothing else does: a notebook test that
# compares saved outputs can mask exactly them (tests/nbval_sanitize.cfg), since the weights of a trained
# model differ in their last digits from one CPU to another, while the rest of the view stays compared.
ATTN_START, ATTN_END = "/*labkit-attention*/", "/*end-attention*/"


def _params_js(params: dict, data: list[dict]) -> str:
    # the attention arrays go in as compact JS literals, between the markers; the rest as JSON
    params = dict(params)
    params["attention"] = [dict(d, attn=f"@@ATTN{i}@@") for i, d in enumerate(data)]
    js = _json(params)
    for i, d in enumerate(data):
        js = js.replace(f'"@@ATTN{i}@@"', ATTN_START + _array_js(d["attn"]) + ATTN_END, 1)
    return js


def _new_id(div_id: str | None) -> str:
    if div_id is None:
        return f"labkit-bertviz-{uuid.uuid4().hex}"
    if not _ID_RE.match(div_id):
        raise ValueError(f"div_id={div_id!r} must start with a letter and hold only letters, digits, '-' and '_'")
    return div_id


def _filter_select(data: list[dict]) -> str:
    if len(data) == 1:
        return ""
    options = "".join(f'<option value="{i}">{d["name"].replace(">", "&gt;")}</option>' for i, d in enumerate(data))
    return f'Attention: <select id="filter">{options}</select>'


def _output(html: str, html_action: str):
    from IPython.display import HTML, display

    if html_action == "return":
        return HTML(html)
    display(HTML(html))  # one output holding the div and its script, so it stays self-contained
    return None


def _check_action(html_action: str) -> None:
    if html_action not in ("view", "return"):
        raise ValueError(f"html_action must be 'view' or 'return', got {html_action!r}")


# ---------------------------------------------------------------------------
# The views
# ---------------------------------------------------------------------------


def head_view(
    attention=None,
    tokens: Sequence[str] | None = None,
    sentence_b_start: int | None = None,
    layers: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    max_tokens: int | None = MAX_TOKENS,
    html_action: str = "view",
    *,
    layer: int | None = None,
    prettify_tokens: bool = True,
    batch_index: int = 0,
    div_id: str | None = None,
    max_values: int | None = MAX_VALUES,
    encoder_attention=None,
    decoder_attention=None,
    cross_attention=None,
    encoder_tokens: Sequence[str] | None = None,
    decoder_tokens: Sequence[str] | None = None,
):
    """bertviz's head view (lines from each token to the tokens it attends to, one colour
    per head), rendered with no network. ``attention``: a per-layer list of
    (B, n_heads, T, T) tensors or one (n_layers, n_heads, T, T) tensor; ``layers`` /
    ``heads`` pick which to include in the HTML (default all; unlike bertviz's ``heads``,
    which only picks the heads switched on at first); ``layer`` is the layer shown first.
    ``html_action="view"`` displays it and returns None, ``"return"`` returns an
    ``IPython.display.HTML`` (its ``.data`` is the HTML string).

    An encoder-decoder model (as bertviz's own views take it): instead of ``attention`` and
    ``tokens``, pass per-layer lists ``encoder_attention`` (B, h, S, S), ``decoder_attention``
    (B, h, T, T) and/or ``cross_attention`` (B, h, T, S) with ``encoder_tokens`` (S) and
    ``decoder_tokens`` (T); the view's "Attention" menu then switches between them."""
    _check_action(html_action)
    data, layers, heads, _ = _prepare_any(
        attention, tokens, sentence_b_start, layers, heads, max_tokens, batch_index, prettify_tokens, max_values,
        encoder_attention, decoder_attention, cross_attention, encoder_tokens, decoder_tokens,
    )
    if layer is not None and layer not in layers:
        raise ValueError(f"layer={layer} is not among the layers shown: {layers}")
    vis_id = _new_id(div_id)
    params = {
        "default_filter": "0",
        "root_div_id": vis_id,
        "layer": layer,
        "heads": None,  # every included head starts switched on
        "include_layers": layers,
    }
    html = (
        f'<div id="{vis_id}" style="font-family:\'Helvetica Neue\', Helvetica, Arial, sans-serif;">\n'
        f'<span style="user-select:none">Layer: <select id="layer"></select> {_filter_select(data)}</span>\n'
        f"<div id='vis'></div>\n</div>\n"
        f'<script type="text/javascript">\n{_view_script("head_view", _params_js(params, data))}\n</script>\n'
    )
    return _output(html, html_action)


def model_view(
    attention=None,
    tokens: Sequence[str] | None = None,
    sentence_b_start: int | None = None,
    layers: Sequence[int] | int | None = None,
    heads: Sequence[int] | int | None = None,
    max_tokens: int | None = MAX_TOKENS,
    html_action: str = "view",
    *,
    display_mode: str = "light",
    prettify_tokens: bool = True,
    batch_index: int = 0,
    div_id: str | None = None,
    max_values: int | None = MAX_VALUES,
    encoder_attention=None,
    decoder_attention=None,
    cross_attention=None,
    encoder_tokens: Sequence[str] | None = None,
    decoder_tokens: Sequence[str] | None = None,
):
    """bertviz's model view (a thumbnail of every layer x head; click one to enlarge),
    rendered with no network. Arguments as for ``head_view`` (encoder-decoder models
    included); ``display_mode`` is ``"light"`` or ``"dark"``."""
    _check_action(html_action)
    if display_mode not in ("light", "dark"):
        raise ValueError(f"display_mode must be 'light' or 'dark', got {display_mode!r}")
    data, layers, heads, n_heads = _prepare_any(
        attention, tokens, sentence_b_start, layers, heads, max_tokens, batch_index, prettify_tokens, max_values,
        encoder_attention, decoder_attention, cross_attention, encoder_tokens, decoder_tokens,
    )
    vis_id = _new_id(div_id)
    params = {
        "default_filter": "0",
        "display_mode": display_mode,
        "root_div_id": vis_id,
        "include_layers": layers,
        "include_heads": heads,
        "total_heads": n_heads,
    }
    html = (
        f'<div id="{vis_id}" style="font-family:\'Helvetica Neue\', Helvetica, Arial, sans-serif;">\n'
        f'<span style="user-select:none">{_filter_select(data)}</span>\n'
        f"<div id='vis'></div>\n</div>\n"
        f'<script type="text/javascript">\n{_view_script("model_view", _params_js(params, data))}\n</script>\n'
    )
    return _output(html, html_action)


def save_html(view, path: str | os.PathLike, title: str = "attention") -> Path:
    """Write a view (from ``html_action="return"``) as a standalone UTF-8 HTML page."""
    body = getattr(view, "data", view)
    if not isinstance(body, str):
        raise TypeError("save_html needs the HTML returned by head_view/model_view(..., html_action='return')")
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{title.replace('<', '&lt;')}</title></head>\n<body>\n{body}\n</body></html>\n"
    )
    return atomic_write_text(path, page)
