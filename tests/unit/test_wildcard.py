"""The backtracking-free name matcher means exactly what the regex it replaced meant."""

from __future__ import annotations

import itertools
import random
import re

from pacsvault.daemon.index.wildcard import NamePattern


def reference(pattern: str, name: str) -> bool:
    """The former matcher: wildcards as a regex, whole name, case-folded. Safe on short inputs only."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.casefold())
    return re.fullmatch(regex, name.casefold(), re.DOTALL) is not None


def test_every_short_pattern_over_a_small_alphabet_agrees_with_the_regex() -> None:
    names = ["".join(p) for n in range(6) for p in itertools.product("ab^", repeat=n)]
    patterns = ["".join(p) for n in range(5) for p in itertools.product("ab*?", repeat=n)]
    for pattern in patterns:
        compiled = NamePattern(pattern)
        for name in names:
            assert compiled.matches(name) == reference(pattern, name), (pattern, name)


def test_random_longer_patterns_agree_with_the_regex() -> None:
    rng = random.Random(16)
    for _ in range(3000):
        name = "".join(rng.choice("abAB^ ") for _ in range(rng.randint(0, 14)))
        pattern = "".join(rng.choice("abAB^*?") for _ in range(rng.randint(0, 9)))
        assert NamePattern(pattern).matches(name) == reference(pattern, name), (pattern, name)


def test_case_folding_non_ascii_and_regex_characters_are_literal() -> None:
    assert NamePattern("MÜLLER^*").matches("müller^anna")
    assert NamePattern("strasse").matches("Straße")  # casefold, as before: ß is ss
    assert NamePattern("山田*").matches("山田^太郎")
    for special in ("[a]", "a.b", "a+", "(a)", "a|b", "\\d", "^a$"):
        assert NamePattern(special).matches(special) and not NamePattern(special).matches("a"), special
    assert NamePattern("*").matches("") and NamePattern("").matches("") and not NamePattern("?").matches("")


def test_adversarial_patterns_are_decided_without_backtracking() -> None:
    # Each of these ran for minutes as a regex; counting steps is the point, not the clock.
    name = "a" * 200 + "^" + "b" * 100
    expected = {"*" * 299 + "!": False, "a*" * 150: True, "*?" * 150: True, "*a" * 150 + "!": False,
                "?*" * 150 + "x": False, "a*" * 201: False, "*b" * 101: False, "*b" * 100: True}
    for pattern, matches in expected.items():
        assert NamePattern(pattern).matches(name) == matches, pattern
    assert NamePattern("a*" * 100 + "^*" + "b*" * 50).matches(name)
