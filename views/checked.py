"""The base of every config and parameter model: pydantic, with one rule pydantic lacks.

pydantic's lax mode reads ``True`` as 1 for a number field, so ``max_rounds: true`` ran one
round and ``threshold: yes`` (YAML's true) a threshold of 1.0, silently. A field that takes a
number and not a bool refuses a bool here, with the field's name in pydantic's error.
"""
from __future__ import annotations

import collections.abc
import math
import types
import typing
from typing import Any

import numpy as np
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


def items_take_number_not_bool(annotation: Any) -> bool:
    """Whether a field of this annotation takes a list or tuple whose items are numbers, not
    bools (a vision view's ``mean: [true, 0.4, 0.4]`` was read as ``[1.0, 0.4, 0.4]``)."""
    for t in _types_in(annotation):
        args = [a for a in typing.get_args(t) if a is not Ellipsis]
        if typing.get_origin(t) in (list, tuple, collections.abc.Sequence) and args \
                and all(takes_number_not_bool(a) for a in args):
            return True
    return False


class CheckedModel(BaseModel):
    """A pydantic model whose number fields refuse ``True`` and ``False``."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name not in cls.model_fields:
            return value
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and takes_number_not_bool(annotation):
            raise ValueError(f"expected a number, not {str(value).lower()}")
        _refuse_non_finite(value)  # before pydantic's bounds ("Input should be less than 1" for NaN)
        if isinstance(value, (list, tuple)) and any(isinstance(x, (bool, np.bool_)) for x in value) \
                and items_take_number_not_bool(annotation):
            raise ValueError(f"expected numbers, not "
                             f"{next(str(x).lower() for x in value if isinstance(x, (bool, np.bool_)))}")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        """No field takes an infinite or NaN number: ``pseudo_weight: .inf`` passed validation
        and the dry run, then failed the run in its second round. (Again after parsing: the
        text ``"inf"`` becomes a float only then.)"""
        _refuse_non_finite(value)
        return value


def _refuse_non_finite(value: Any) -> None:
    """Raise for an infinite or NaN float, alone or inside a list or tuple."""
    items = value if isinstance(value, (list, tuple)) else (value,)
    bad = next((x for x in items if isinstance(x, float) and not math.isfinite(x)), None)
    if bad is not None:
        raise ValueError(f"expected a finite number, not {bad}")


__all__ = ["CheckedModel", "items_take_number_not_bool", "takes_number_not_bool"]
