"""Reading a config's YAML: the safe loader, refusing a key twice, and the config's size
bounded before anything walks it.

YAML aliases share one object among many places: ten nested anchors of nine aliases each
stand for 9^10 values in a file of a few hundred bytes, and the first walk over the mapping
(the secret check, then validation) never ended. A config worth running has at most a few
thousand values; :func:`check_config_size` counts them as every walk will see them (an
alias once per place it is used) and stops counting at the limit, so the check itself is
bounded, and it refuses nesting deeper than any config needs (Python's recursion ended the
walk with a RecursionError naming nothing).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from store.errors import ConfigError

#: Values a config may hold, counting each use of a YAML alias.
MAX_VALUES = 100_000
#: Mappings and lists inside one another.
MAX_DEPTH = 64


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a key twice in one mapping (the last silently won); ``<<: *base`` works."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: list[Any] = []  # a list: a complex key ('? [a, b]') is unhashable
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if not isinstance(key_node, yaml.ScalarNode):  # no config key is a list or mapping, and comparing
                # two equal alias bombs as keys took minutes before any size check could run
                raise yaml.constructor.ConstructorError(None, None, "a key that is a list or mapping",
                                                        key_node.start_mark)
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice",
                                                        key_node.start_mark)
            seen.append(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(p: Path) -> Any:
    """The YAML document of config file ``p``, or ``ConfigError`` in one line naming the file."""
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError("<file>", f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} on line {line} "
                          "(save the file as UTF-8)", str(p)) from None
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read: {exc.strerror or exc}", str(p)) from None
    except RecursionError:  # the reader recurses once per level: 3,000 '[' ended it unnamed
        raise ConfigError("<yaml>", "nests mappings and lists too deep to read", str(p)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError("<yaml>", f"malformed YAML at {where}{problem}", str(p)) from None
    return data


def check_config_size(data: Any, source: str | None = None) -> None:
    """``ConfigError`` when ``data`` holds more than ``MAX_VALUES`` values or nests deeper
    than ``MAX_DEPTH``; counted without recursion, and never past the limit."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigError("<yaml>", f"holds more than {MAX_VALUES:,} values (a YAML alias used inside "
                              "another, over and over?); write the values out", source)
        if depth > MAX_DEPTH:
            raise ConfigError("<yaml>", f"nests more than {MAX_DEPTH} levels of mappings and lists", source)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


__all__ = ["MAX_DEPTH", "MAX_VALUES", "check_config_size", "read_yaml"]
