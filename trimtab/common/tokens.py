"""Bearer-token files: read one, refusing an empty file, warning when it is weak or exposed."""
from __future__ import annotations

import stat
from pathlib import Path

MIN_TOKEN_BYTES = 32     # 256 bits: `openssl rand -hex 32` gives 64 characters


class TokenFileError(ValueError):
    """A token file that cannot be used; the message names the file and the rule."""


def read_token_file(path: str | Path) -> tuple[str, list[str]]:
    """(token, warnings): the file's stripped text, and what is wrong with it but not fatal.

    Warns when the token is shorter than MIN_TOKEN_BYTES or the file is readable by others
    (mode o+r; a Kubernetes Secret volume should set ``defaultMode: 0440``).
    """
    path = Path(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise TokenFileError(f"cannot read token file {path}: {why}") from None
    if not token:
        raise TokenFileError(f"token file {path} is empty; the token must be non-empty")
    warnings = []
    if len(token.encode()) < MIN_TOKEN_BYTES:
        warnings.append(f"token file {path}: the token is {len(token.encode())} bytes, under "
                        f"{MIN_TOKEN_BYTES}; make one with `openssl rand -hex 32`")
    if mode & stat.S_IROTH:
        warnings.append(f"token file {path} is readable by every user (mode "
                        f"{stat.S_IMODE(mode):04o}); chmod o-r it")
    return token, warnings
