"""The sanitizer rules nbval applies before comparing outputs (tests/nbval_sanitize.cfg)."""

import configparser
import re
from pathlib import Path

CFG = Path(__file__).with_name("nbval_sanitize.cfg")


def sanitize(text: str) -> str:
    parser = configparser.ConfigParser()
    parser.read(CFG, encoding="utf-8")
    for section in parser.sections():
        text = re.sub(parser[section]["regex"], parser[section]["replace"], text)
    return text


def test_a_figure_after_the_approx_sign_is_masked_whatever_its_padding():
    a = "val loss ≈ 1.6267 | perplexity ≈  5.0871 | share ≈   0.64 | diff ≈ 8.3e-04 | ≈ -0.5 | ≈ 12,345 tokens"
    b = "val loss ≈ 1.6305 | perplexity ≈  5.1067 | share ≈   0.63 | diff ≈ 9.1e-04 | ≈ -0.4 | ≈ 12,346 tokens"
    assert sanitize(a) == sanitize(b)
    assert sanitize(a).count("≈ N") == 6


def test_numbers_without_the_approx_sign_are_still_compared():
    assert sanitize("uniform model: perplexity 65.0000") != sanitize("uniform model: perplexity 64.0000")
    assert sanitize("loss ≈ 1.62 over 3,907 tokens") != sanitize("loss ≈ 1.62 over 3,908 tokens")
    assert sanitize("trained ≈ 46%, untrained 0%") != sanitize("trained ≈ 46%, untrained 1%")
