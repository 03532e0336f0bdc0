"""The documented exception tree in core/errors.py is the real one: every class, its
parent, code, exit code and whether it is retried, so the table cannot drift."""

from __future__ import annotations

import re

from chartly_dagster.core import errors as core_errors
from chartly_dagster.runtime import errors as runtime_errors

_ROW = re.compile(r"^    (?P<indent>[│├└─ ]*)(?P<name>[A-Z]\w+)(?: \(runtime\))?\s+(?P<rest>.*)$")


def _documented() -> list[tuple[int, str, list[str]]]:
    rows = []
    for line in (core_errors.__doc__ or "").splitlines():
        match = _ROW.match(line)
        if match:
            rows.append((len(match["indent"]) // 4, match["name"], match["rest"].split()))
    return rows


def _classes() -> dict[str, type]:
    found = {}
    for module in (core_errors, runtime_errors):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, core_errors.ChartlyError):
                found[name] = value
    return found


def test_every_error_class_is_in_the_documented_tree_with_its_contract() -> None:
    classes = _classes()
    rows = _documented()
    assert sorted(name for _, name, _ in rows) == sorted(classes)
    parents: list[str] = []
    for depth, name, rest in rows:
        cls = classes[name]
        del parents[depth:]
        if parents:
            assert cls.__bases__ == (classes[parents[-1]],), name
        parents.append(name)
        if depth == 0 or name == "UpstreamError":
            continue
        code, exit_code, *tail = rest
        assert (cls.code, str(int(cls.exit_code))) == (code, exit_code), name
        assert cls.retryable == (tail[:1] == ["yes"]), name
