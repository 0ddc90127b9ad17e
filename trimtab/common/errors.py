"""A pydantic ValidationError as messages naming the field, the value and the rule."""
from __future__ import annotations

import reprlib
from typing import Any

from pydantic import ValidationError

TOP_LEVEL = "(top level)"

# A value quoted in a message is cut short: a YAML file's aliases can make a value of 9^8
# shared items ("billion laughs"), whose full repr takes seconds and hundreds of MB.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 200, 200, 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 10


def short_repr(value: Any) -> str:
    """``repr(value)`` bounded in length and depth (``[1, 2, ...]``), for error messages."""
    return _SHORT.repr(value)


def error_field(err: dict[str, Any], top: str = TOP_LEVEL) -> str:
    """The dotted path of one error (``targets.0.max_replicas``); ``top`` for the whole input."""
    return ".".join(str(p) for p in err.get("loc", ())) or top


def describe(err: dict[str, Any], top: str = TOP_LEVEL) -> str:
    """One error as ``key = value: rule``, e.g. ``max_replicas = 0: Input should be >= 1``.

    A mapping value is not repeated (it is the whole section); a missing key and an unknown
    key say so in words, since pydantic's "input" there is the enclosing section.
    """
    key = error_field(err, top)
    value = err.get("input")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    kind = err.get("type")
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "finite_number":           # pydantic's allow_inf_nan=False (common.strict)
        msg = "must be a finite number (not inf or nan)"
    if kind == "extra_forbidden":
        return f"{key} = {short_repr(value)}: unknown key ({msg}); check the spelling"
    if isinstance(value, dict):
        return f"{key}: {msg}"
    return f"{key} = {short_repr(value)}: {msg}"


def problems(exc: ValidationError, top: str = TOP_LEVEL) -> list[str]:
    """Every error of ``exc``, described, in pydantic's order."""
    return [describe(e, top) for e in exc.errors()]


def first_error(exc: ValidationError, top: str = TOP_LEVEL) -> tuple[str, str]:
    """(field, description) of the first error: for answers that name one field."""
    err = exc.errors()[0]
    return error_field(err, top), describe(err, top)


def message(exc: ValidationError, where: str = "", top: str = TOP_LEVEL,
            first_only: bool = False) -> str:
    """``where: problem; problem`` (``where`` names the file or section; empty: no prefix)."""
    found = [first_error(exc, top)[1]] if first_only else problems(exc, top)
    text = "; ".join(found)
    return f"{where}: {text}" if where else text
