"""The base of every config and parameter model: pydantic, with one rule pydantic lacks.

pydantic's lax mode reads ``True`` as 1 for a number field, so ``max_rounds: true`` ran one
round and ``threshold: yes`` (YAML's true) a threshold of 1.0, silently. A field that takes a
number and not a bool refuses a bool here, with the field's name in pydantic's error.
"""
from __future__ import annotations

import collections.abc
import math
import numbers
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


def checked_number(name: str, v: Any, *, low: float | None = None, above: float | None = None,
                   below: float | None = None, whole: bool = False, text_ok: bool = False) -> float:
    """``v`` as a float, or ``ValueError`` naming ``name``: a finite real number (numpy's
    included, never a bool), whole when ``whole`` (3.0 counts), at least ``low``, above
    ``above``, below ``below``. ``text_ok``: a numeric string counts too, for the values the
    code reads with ``float()`` (YAML reads ``1e-2`` as text)."""
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
    if not ok and text_ok and isinstance(v, str):
        try:
            v, ok = float(v), True
        except ValueError:
            pass
    x = float(v) if ok else math.nan
    bounds = [f"of at least {low:g}" if low is not None else "", f"above {above:g}" if above is not None else "",
              f"below {below:g}" if below is not None else ""]
    want = ("a whole number" if whole else "a number") + (" " + " and ".join(b for b in bounds if b) if any(bounds) else "")
    if not (math.isfinite(x) and (not whole or x.is_integer()) and (low is None or x >= low)
            and (above is None or x > above) and (below is None or x < below)):
        raise ValueError(f"{name} must be {want}, not {v!r}")
    return x


def numbers_as_text(params: dict[str, Any], error: str) -> str:
    """A hint for ``error`` about ``params``: those it names whose value YAML read as text
    though it looks like a number (YAML 1.1, which PyYAML reads, takes ``1e-4`` without a dot
    for a string), or ''."""
    def looks(v: Any) -> bool:
        try:
            float(v)
        except (TypeError, ValueError):
            return False
        return isinstance(v, str)
    named = [k for k, v in params.items() if repr(k) in error or f" {k} " in f" {error} "
             if looks(v) or (isinstance(v, (list, tuple)) and any(map(looks, v)))]
    if not named:
        return ""
    return f" ({', '.join(map(repr, named))} read as text: YAML reads a number such as 1e-4 as text unless it " \
           "has a dot, 1.0e-4)"


__all__ = ["CheckedModel", "checked_number", "items_take_number_not_bool", "numbers_as_text",
           "takes_number_not_bool"]
