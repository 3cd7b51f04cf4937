"""``-o jsonpath=TEMPLATE``: kubectl's JSONPath templates, as kubectl prints them.

The template is text with ``{…}`` actions (https://kubernetes.io/docs/reference/kubectl/jsonpath/):

* paths from the current object: ``{.status.state}``, ``{.items[0].name}``, ``{[*].id}``
  (the plugin's lists are JSON arrays at the root), ``{.history[-1:]}``, ``{..name}``
  (recursive), ``{.a.*}``, filters ``[?(@.type=="Ready")]``, ``[?(@.reason)]`` (exists),
  ``!=``, ``<``, ``>``, ``<=``, ``>=`` on numbers or strings; ``@`` and ``$`` for the
  current and root object;
* ``{range PATH}…{end}`` repeats its body for each result;
* string literals ``{"\\n"}`` with JSON escapes.

Results are printed like kubectl: strings bare, numbers and booleans as JSON, objects and
lists as JSON, several results separated by a space.  A path that does not resolve prints
nothing (kubectl's ``--allow-missing-template-keys`` default).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class JsonPathError(ValueError):
    """The template cannot be parsed; the message says where."""


# --------------------------------------------------------------------------- template parsing


@dataclass
class Text:
    value: str


@dataclass
class Path:
    steps: list[Any]


@dataclass
class Range:
    path: Path
    body: list[Any]


def parse(template: str) -> list[Any]:
    nodes: list[Any] = []
    stack: list[Any] = []
    current: list[Any] = nodes
    position = 0
    for match in re.finditer(r"\{((?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}", template):
        if match.start() > position:
            current.append(Text(template[position : match.start()]))
        position = match.end()
        action = match.group(1).strip()
        if action.startswith("range "):
            node = Range(Path(_steps(action[len("range ") :].strip())), [])
            current.append(node)
            stack.append(current)
            current = node.body
        elif action == "end":
            if not stack:
                raise JsonPathError(f"{{end}} without {{range}} in {template!r}")
            current = stack.pop()
        elif action.startswith('"'):
            try:
                current.append(Text(json.loads(action)))
            except ValueError as exc:
                raise JsonPathError(f"bad string literal {action}") from exc
        else:
            current.append(Path(_steps(action)))
    if stack:
        raise JsonPathError(f"{{range}} without {{end}} in {template!r}")
    rest = template[position:]
    if "{" in rest or "}" in rest:
        raise JsonPathError(f"unmatched brace in {template!r}")
    if rest:
        current.append(Text(rest))
    return nodes


_STEP = re.compile(
    r"""\.\.(?P<recursive>[A-Za-z0-9_\-]+|\*)      # ..name
      | \.(?P<field>[A-Za-z0-9_\-/]+|\*)          # .name .*
      | \[\?\((?P<filter>[^\]]*)\)\]             # [?(@.a=="b")]
      | \[(?P<index>[^\]]*)\]                     # [0] [*] [1:3] ['name']
      | \.(?=\[)|\.$                              # .[0] at the root, or a lone dot
    """,
    re.VERBOSE,
)


def _steps(expression: str) -> list[Any]:
    text = expression.strip()
    if text.startswith(("$", "@")):
        text = text[1:]
    steps: list[Any] = []
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise JsonPathError(f"cannot parse {expression!r} at {text[position:]!r}")
        position = match.end()
        if match.group("recursive"):
            steps.append(("recursive", match.group("recursive")))
        elif match.group("field"):
            steps.append(("field", match.group("field")))
        elif match.group("filter") is not None:
            steps.append(("filter", _filter(match.group("filter"))))
        elif match.group("index") is not None:
            steps.append(_index(match.group("index").strip(), expression))
    return steps


def _index(raw: str, expression: str) -> tuple[str, Any]:
    if raw == "*":
        return ("field", "*")
    if raw[:1] in "'\"":
        return ("field", raw[1:-1])
    if ":" in raw:
        parts = [int(p) if p.strip() else None for p in raw.split(":")]
        return ("slice", slice(*parts))
    try:
        return ("index", int(raw))
    except ValueError as exc:
        raise JsonPathError(f"bad index [{raw}] in {expression!r}") from exc


_FILTER = re.compile(r"^\s*@(?P<path>[^=!<>]*?)\s*(?:(?P<op>==|!=|<=|>=|<|>)\s*(?P<value>.+?))?\s*$")


def _filter(raw: str) -> tuple[list[Any], str | None, Any]:
    match = _FILTER.match(raw)
    if match is None:
        raise JsonPathError(f"cannot parse filter [?({raw})]")
    value: Any = None
    if match.group("op"):
        literal = match.group("value").strip()
        if literal[:1] == "'" and literal[-1:] == "'":
            literal = json.dumps(literal[1:-1])
        try:
            value = json.loads(literal)
        except ValueError as exc:
            raise JsonPathError(f"bad value {literal} in filter [?({raw})]") from exc
    return _steps(match.group("path") or ""), match.group("op"), value


# --------------------------------------------------------------------------- evaluation


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def _descendants(value: Any) -> Iterator[Any]:
    yield value
    for child in _children(value):
        yield from _descendants(child)


def _apply(step: tuple[str, Any], values: list[Any]) -> list[Any]:
    kind, arg = step
    out: list[Any] = []
    for value in values:
        if kind == "field":
            if arg == "*":
                out += _children(value)
            elif isinstance(value, dict) and arg in value:
                out.append(value[arg])
        elif kind == "index":
            if isinstance(value, list) and -len(value) <= arg < len(value):
                out.append(value[arg])
        elif kind == "slice":
            if isinstance(value, list):
                out += value[arg]
        elif kind == "recursive":
            for node in _descendants(value):
                if arg == "*":
                    out += _children(node)
                elif isinstance(node, dict) and arg in node:
                    out.append(node[arg])
        elif kind == "filter":
            path, op, expected = arg
            for item in _children(value) if isinstance(value, list) else [value]:
                found = evaluate(path, item)
                if op is None:
                    if found:
                        out.append(item)
                elif found and _compare(found[0], op, expected):
                    out.append(item)
    return out


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    try:
        return bool({"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op])
    except TypeError:
        return False


def evaluate(steps: list[Any], data: Any) -> list[Any]:
    values = [data]
    for step in steps:
        values = _apply(step, values)
    return values


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _render(nodes: list[Any], data: Any) -> str:
    out = []
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.value)
        elif isinstance(node, Path):
            out.append(" ".join(_text(v) for v in evaluate(node.steps, data)))
        else:
            for item in evaluate(node.path.steps, data):
                out.append(_render(node.body, item))
    return "".join(out)


def render(template: str, data: Any) -> str:
    """``template`` applied to ``data`` (a kubectl JSONPath template)."""
    return _render(parse(template), data)
