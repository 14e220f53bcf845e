"""The one rule for control characters in text fields (core.validation)."""

from __future__ import annotations

import pytest

from lobwife_server.core.errors import ApiError
from lobwife_server.core.validation import check_chars, check_text


@pytest.mark.parametrize("bad", ["\0", "\x01", "\t", "\n", "\r", "\x1b", "\x7f", "\x80", "\x9f"])
def test_one_line_text_refuses_every_control_character(bad: str) -> None:
    with pytest.raises(ApiError) as info:
        check_text("name", f"a{bad}b")
    assert [v[0] for v in info.value.violations] == ["name"]
    assert f"U+{ord(bad):04X} at position 1" in info.value.message


@pytest.mark.parametrize("bad", ["\0", "\x07", "\x0b", "\x0c", "\x1b", "\x7f", "\x85"])
def test_multi_line_text_refuses_the_others(bad: str) -> None:
    assert check_text("detail", "a\tb\r\nc\n", 1000, multiline=True) == "a\tb\r\nc"
    with pytest.raises(ApiError) as info:
        check_text("detail", f"x{bad}y", 1000, multiline=True)
    assert [v[0] for v in info.value.violations] == ["detail"]


def test_printable_and_unprintable_but_not_control_text_passes() -> None:
    for ok in ("Fix login", "café ☕", "a\u00a0b", "zero\u200bwidth", "emoji 👩‍💻", "rtl \u202e"):
        assert check_chars("name", ok) == ok
    # Surrounding whitespace is stripped before the check, and the position counts from what was sent.
    assert check_text("name", "\n\t Fix \n") == "Fix"
    with pytest.raises(ApiError, match="at position 3"):
        check_text("name", "  a\0b")
