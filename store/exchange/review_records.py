"""One review record's parts, as every review-file reader reads them: the parsed review, and
its label, reviewer and time checked one by one (:class:`BadAnswer` names what is wrong; the
reader wraps it, with :func:`record_errors`, into the error naming the file and record)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from store.errors import ReviewError, shown


@dataclass
class ParsedReview:
    row: int                     # 1-based record of the file
    item_id: str
    label: str
    reviewer: str | None
    reviewed_at: datetime | None
    task: str | None = None      # cotrain_task carried by the record, when it has one
    content: str | None = None   # cotrain_item: the item's content fingerprint when exported


class BadAnswer(ValueError):
    """A record's answer, reviewer or time that cannot be filed; the reader names the record."""


@contextmanager
def record_errors(path: str, row: int, item: Any) -> Iterator[None]:
    """Inside, a :class:`BadAnswer` becomes the ``ReviewError`` naming the file, record and item."""
    try:
        yield
    except BadAnswer as exc:
        raise ReviewError(str(exc), path, row=row, item=None if item is None else str(item)) from None


def kind_of(value: Any) -> str:
    """What a JSON value is, in words ("'data' is a string, not an object")."""
    words = ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (str, "a string"), ((int, float), "a number"))
    return "null" if value is None else next((w for t, w in words if isinstance(value, t)), type(value).__name__)


def field_of(record: dict[str, Any], key: str, want: type, name: str | None = None, objects: bool = False) -> Any:
    """``record[key]`` if a ``want`` (``objects``: of dicts; none: empty), else a BadAnswer naming the field."""
    value, name = record.get(key), name or key
    if value and not isinstance(value, want):
        raise BadAnswer(f"{shown(name)} is {kind_of(value)}, not {kind_of(want())}")  # was an AttributeError
    if objects and (i := next((i for i, v in enumerate(value or ()) if not isinstance(v, dict)), -1)) >= 0:
        raise BadAnswer(f"{shown(f'{name}[{i}]')} is {kind_of(value[i])}, not an object")
    return value or want()


def text_of(value: Any) -> str | None:
    """A cell's or value's text, trimmed, in every format (a CSV's ' dog' was dog, JSON's refused); blank: None."""
    return (None if value is None else str(value).strip()) or None


#: A review time more than this far ahead of the import's clock is refused (clocks differ a little).
FUTURE_SLACK = timedelta(days=1)
#: The longest reviewer name filed.
MAX_REVIEWER = 256


def time_of(value: Any) -> datetime | None:
    """A review's time as naive UTC: an ISO 8601 text or epoch seconds; empty is no time.
    Text that is no time, and a time in the future, are refused (they were filed as NULL)."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            t = datetime.fromtimestamp(float(value), tz=timezone.utc).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            raise BadAnswer(f"reviewed_at {shown(value)} is no time (epoch seconds out of range)") from None
    else:
        try:
            t = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadAnswer(f"reviewed_at {shown(value)} is no time: give ISO 8601, e.g. 2026-11-20T10:00:00Z, "
                            "or leave it empty") from None
        t = t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t
    if t > datetime.now(timezone.utc).replace(tzinfo=None) + FUTURE_SLACK:
        raise BadAnswer(f"reviewed_at {t.isoformat()} is in the future")
    return t


def reviewer_of(value: Any) -> str | None:
    """A reviewer's name (Label Studio's and Argilla's user objects give their email, username
    or id). A control character (a newline forges a log line) or a name over ``MAX_REVIEWER``
    characters is refused."""
    if isinstance(value, dict):
        value = value.get("email") or value.get("username") or value.get("id")
    if value in (None, ""):
        return None
    return checked_reviewer(str(value), BadAnswer)


def checked_reviewer(name: str, error: Callable[[str], Exception]) -> str:
    """``name``, or ``error`` when it holds a control character or is over ``MAX_REVIEWER`` long."""
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in name):
        raise error(f"reviewer {shown(name)} holds a control character (a newline or tab?)")
    if len(name) > MAX_REVIEWER:
        raise error(f"reviewer name is {len(name):,} characters; at most {MAX_REVIEWER}")
    return name


def choice_of(value: Any) -> str | None:
    """A single label from a Label Studio value: ``{"choices": [x]}``, ``[x]`` or ``x``; none
    is no answer, and two or more are refused (a review gives one label)."""
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        if len(value) > 1:
            raise BadAnswer(f"the answer holds {len(value)} labels ({', '.join(shown(v) for v in value[:3])}); "
                            "a review gives one")
        value = value[0] if value else None
    return text_of(value)  # trimmed; blank, as a CSV's: no answer


__all__ = ["FUTURE_SLACK", "MAX_REVIEWER", "BadAnswer", "ParsedReview", "checked_reviewer", "choice_of", "field_of",
           "kind_of", "record_errors", "reviewer_of", "text_of", "time_of"]
