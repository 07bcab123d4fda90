"""Maps by pattern: which names of one side a map's entries pair with which names of the other.

An entry of a layer or parameter map is one of
    ``fc3=head``                                  a name: itself
    ``re:transformer\\.h\\.(\\d+)\\.mlp\\.c_fc=blocks.\\1.fc1``  a regular expression matching whole names; the other
                                                  side's name is the replacement, groups as ``\\1``
    ``transformer.h.*=blocks.*``                  a subtree: every name under the prefix, the rest kept
    ``transformer.*=*``                           a prefix taken off (or, the other way, put on)
A pattern pairs only names that exist on both sides; one that pairs none is an error, since it was meant to.
Names given plainly win over patterns, and the first pattern that matches a name wins.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Iterable, Mapping

from layerdiff.errors import AlignmentError

REGEX = "re:"


class LayerMap(dict[str, str]):
    """A layer map as the caller gave it (names and patterns of side A's layers to side B's), with the patterns that
    side B's file gave the other way and the globs of layers to leave out: all that ``align`` resolves once it knows
    both sides' layers. It is a dict, so that it travels wherever a plain layer map does."""

    def __init__(
        self, forward: Mapping[str, str] | None = None, backward: Mapping[str, str] | None = None, ignore: Iterable[str] = ()
    ) -> None:
        super().__init__(forward or {})
        self.backward = dict(backward or {})
        self.ignore = tuple(ignore)


def is_pattern(key: str) -> bool:
    return key.startswith(REGEX) or key.endswith("*")


def target(key: str, value: str, name: str) -> str | None:
    """The name that entry ``key=value`` pairs ``name`` with, or None when it does not match.

    >>> target(r"re:transformer\\.h\\.(\\d+)\\.mlp\\.c_fc", r"blocks.\\1.fc1", "transformer.h.3.mlp.c_fc")
    'blocks.3.fc1'
    >>> target("transformer.h.*", "blocks.*", "transformer.h.0.ln_1"), target("transformer.*", "*", "transformer.wte")
    ('blocks.0.ln_1', 'wte')
    """
    if key.startswith(REGEX):
        found = _regex(key).fullmatch(name)
        return None if found is None else found.expand(value)
    if not key.endswith("*"):
        return value if name == key else None
    prefix = key[:-1]
    if not name.startswith(prefix) or name == prefix:
        return None
    rest = name[len(prefix):]
    return value[:-1] + rest if value.endswith("*") else None


def _regex(key: str) -> re.Pattern[str]:
    try:
        return re.compile(key[len(REGEX):])
    except re.error as exc:
        raise AlignmentError(f"The map entry '{key}' is not a regular expression: {exc}.") from None


def resolve(forward: Mapping[str, str], backward: Mapping[str, str], names_a: list[str], names_b: list[str], what: str) -> dict[str, str]:
    """The pairs ``{a's name: b's name}`` that the entries pair: ``forward`` from a's names, ``backward`` (side B's
    own file's map) from b's. Plain entries are kept as they are, for the caller to check.

    Raises:
        AlignmentError: a pattern that pairs no name present on both sides (``what``: "layer" or "parameter").
    """
    pairs = {k: v for k, v in forward.items() if not is_pattern(k)}
    pairs.update({v: k for k, v in backward.items() if not is_pattern(k)})
    taken_b = set(pairs.values())
    for entries, source, other, flip in ((forward, names_a, names_b, False), (backward, names_b, names_a, True)):
        present = set(other)
        for key, value in entries.items():
            if not is_pattern(key):
                continue
            found = 0
            for name in source:
                mapped = target(key, value, name)
                if mapped is None or mapped not in present:
                    continue
                found += 1
                a, b = (mapped, name) if flip else (name, mapped)
                if a not in pairs and b not in taken_b:
                    pairs[a] = b
                    taken_b.add(b)
            if not found:
                raise AlignmentError(
                    f"The {what} map entry '{key}={value}' pairs no {what}: it matches none of "
                    f"{', '.join(source[:6])}{', …' if len(source) > 6 else ''} onto a {what} of the other side."
                )
    return pairs


def ignored(name: str, globs: Iterable[str]) -> bool:
    return any(fnmatchcase(name, g) for g in globs)
