"""errors: a pydantic ValidationError as "key = value: rule" messages."""
from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trimtab.common import errors


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_replicas: int = Field(4, ge=1)


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: Inner = Inner()
    ratio: float = 0.5

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("must be in (0, 1)")
        return v


def fail(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return info.value


@pytest.mark.parametrize("data, expected", [
    ({"name": "a", "inner": {"max_replicas": 0}},
     "inner.max_replicas = 0: Input should be greater than or equal to 1"),
    ({"name": "a", "ratio": 2.0}, "ratio = 2.0: must be in (0, 1)"),       # no "Value error, "
    ({}, "name: required key is missing"),
    ({"name": "a", "colour": "red"},
     "colour = 'red': unknown key (Extra inputs are not permitted); check the spelling"),
    ({"name": "a", "inner": "x"}, "inner = 'x': Input should be a valid dictionary or instance of Inner"),
    ({"name": "a", "inner": {"max_replicas": 0, "x": 1}},
     "inner.max_replicas = 0: Input should be greater than or equal to 1"),
], ids=["bound", "custom-rule", "missing", "unknown-key", "wrong-type", "first-of-two"])
def test_first_error_names_field_value_and_rule(data, expected):
    field, text = errors.first_error(fail(data))
    assert text == expected
    assert field == expected.split(" ")[0].rstrip(":")


def test_a_whole_section_is_not_repeated_as_the_value():
    class Strict(BaseModel):
        inner: Inner

        @field_validator("inner", mode="before")
        @classmethod
        def _no_empty(cls, v: object) -> object:
            if v == {}:
                raise ValueError("must not be empty")
            return v

    with pytest.raises(ValidationError) as info:
        Strict.model_validate({"inner": {}})
    assert errors.problems(info.value) == ["inner: must not be empty"]


def test_top_level_error_is_named_by_the_callers_word():
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(["not", "a", "mapping"])
    assert errors.first_error(info.value)[0] == errors.TOP_LEVEL
    assert errors.first_error(info.value, top="body")[1].startswith("body = ['not', 'a', ")


@pytest.mark.parametrize("kwargs, expected", [
    ({}, "name: required key is missing; ratio = 2.0: must be in (0, 1)"),
    ({"where": "c.yaml"}, "c.yaml: name: required key is missing; ratio = 2.0: must be in (0, 1)"),
    ({"where": "c.yaml", "first_only": True}, "c.yaml: name: required key is missing"),
], ids=["all", "where", "first-only"])
def test_message_lists_every_problem_after_the_place(kwargs, expected):
    assert errors.message(fail({"ratio": 2.0}), **kwargs) == expected
