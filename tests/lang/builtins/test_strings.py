"""String builtins: str, string_length, string_substring."""

from __future__ import annotations

import pytest
import torch

from lang.builtins.support import call, error
from tensorlogic.lang.values import Vec


@pytest.mark.parametrize(
    "x, text",
    [
        (42, "42"),
        (-1.5, "-1.5"),
        (True, "true"),
        (None, "void"),
        ("as is", "as is"),
        ([1, "a"], '[1, "a"]'),
        (Vec("float", [1, 2]), "Vec[1.0, 2.0]"),
        (torch.tensor([0.5, 2.0]), "[0.5000, 2.0000]"),
    ],
)
def test_str(x, text):
    assert call("str", x) == text


def test_string_length_counts_characters():
    assert call("string_length", "") == 0
    assert call("string_length", "hello") == 5
    assert call("string_length", "日本語") == 3


@pytest.mark.parametrize(
    "s, start, length, expected",
    [("hello world", 0, 5, "hello"), ("hello world", 6, 5, "world"), ("hello", 3, 10, "lo"), ("hello", 9, 2, ""),
     ("日本語です", 1, 2, "本語"), ("abc", 1.0, 1, "b")],
)
def test_string_substring_takes_start_and_length(s, start, length, expected):
    assert call("string_substring", s, start, length) == expected


def test_string_errors():
    assert error("string_length", 5) == "needs a string, got int"
    assert error("string_substring", ["a"], 0, 1) == "needs a string, got list"
    assert error("string_substring", "abc", -1, 1) == "start and length must be >= 0, got -1 and 1"
    assert error("string_substring", "abc", 0, 1.5) == "length must be an integer, got 1.5"
