"""A YAML config file read to plain data; every failure one message naming the file and why."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A file that does not hold readable YAML; the message names the file (and line)."""


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of ``path``'s text. Refused with a YamlFileError: an unreadable path
    (a directory, no permission), bytes that are not UTF-8 (a binary file), invalid YAML (its
    line and column), a value Python cannot hold (an int of 5,000 digits) and nesting deeper than the parser's recursion allows (``[[[[...``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise YamlFileError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                            f"offset {exc.start}); a YAML file is text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        column = f" (at line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise YamlFileError(f"{path}:{line} is not valid YAML: "
                            f"{getattr(exc, 'problem', None) or exc}{column}") from None
    except ValueError as exc:              # a constructor's: an int of over 4,300 digits
        raise YamlFileError(f"{path}: a value cannot be read: {str(exc)[:200]}") from None
    except RecursionError:
        raise YamlFileError(f"{path}: nested too deeply to read (collections inside "
                            "collections beyond the parser's recursion limit)") from None
