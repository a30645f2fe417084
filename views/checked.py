"""The base of every config and parameter model: pydantic, with one rule pydantic lacks.

pydantic's lax mode reads ``True`` as 1 for a number field, so ``max_rounds: true`` ran one
round and ``threshold: yes`` (YAML's true) a threshold of 1.0, silently. A field that takes a
number and not a bool refuses a bool here, with the field's name in pydantic's error.
"""
from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator


def _types_in(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (through ``X | None``, ``Optional`` and
    ``Annotated``), not looking inside containers."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _types_in(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return set().union(*(_types_in(a) for a in typing.get_args(annotation)))
    return {annotation}


def takes_number_not_bool(annotation: Any) -> bool:
    """Whether a field of this annotation takes an int or a float but no bool."""
    admitted = _types_in(annotation)
    return bool(admitted & {int, float}) and bool not in admitted and Any not in admitted


class CheckedModel(BaseModel):
    """A pydantic model whose number fields refuse ``True`` and ``False``."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            if takes_number_not_bool(cls.model_fields[info.field_name].annotation):
                raise ValueError(f"expected a number, not {str(value).lower()}")
        return value


__all__ = ["CheckedModel", "takes_number_not_bool"]
