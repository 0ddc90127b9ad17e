"""Token files: empty or unreadable ones are refused; short or world-readable ones warned about."""
from __future__ import annotations

import pytest

from trimtab.common.tokens import TokenFileError, read_token_file

STRONG = "a" * 64


@pytest.mark.parametrize("text,mode,warned", [
    (STRONG + "\n", 0o600, []),
    (STRONG, 0o640, []),                       # group-readable: a Secret with fsGroup
    ("short", 0o600, ["under 32"]),
    (STRONG, 0o644, ["readable by every user"]),
    ("short", 0o604, ["under 32", "readable by every user"]),
], ids=["strong", "group", "short", "world-readable", "both"])
def test_weak_or_exposed_tokens_are_warned_about(tmp_path, text, mode, warned):
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    token, warnings = read_token_file(path)
    assert token == text.strip()
    assert len(warnings) == len(warned)
    for w, fragment in zip(warnings, warned):
        assert fragment in w and str(path) in w


@pytest.mark.parametrize("setup,fragment", [
    (lambda p: p.write_text("  \n"), "is empty"),
    (lambda p: None, "cannot read"),
    (lambda p: p.mkdir(), "cannot read"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00"), "not UTF-8"),
], ids=["empty", "missing", "directory", "binary"])
def test_unusable_token_files_are_refused_naming_the_file(tmp_path, setup, fragment):
    path = tmp_path / "token"
    setup(path)
    with pytest.raises(TokenFileError, match=fragment) as info:
        read_token_file(path)
    assert str(path) in str(info.value)
