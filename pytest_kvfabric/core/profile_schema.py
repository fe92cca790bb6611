"""YAML reading and JSON-Schema validation that turn every problem into one ProfileError.

Kept apart from profiles.py so other YAML inputs (suites, inventories) can reuse the same
messages: `read_yaml(path)` and `validate(data, schema_name, source)`.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from ..errors import ProfileError
from .limits import MAX_DEPTH, MAX_INPUT_BYTES, finite_reason

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"

_JSON_TYPE = {
    str: "string", bool: "boolean", int: "integer", float: "number",
    list: "array", dict: "mapping", type(None): "null",
}


def json_type_name(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def format_path(parts: Iterable[Any]) -> str:
    """['moe', 'experts'] -> 'moe.experts'; ['sliding_window', 'layers', 3] -> 'sliding_window.layers[3]'."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one),
    non-scalar keys, and nesting deeper than MAX_DEPTH (the composer recurses per level)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value, not a list or mapping", key_node.start_mark)
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen[key] = loader.construct_object(value_node, deep=deep)
    return seen


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def check_plain_data(data: Any, source: str) -> None:
    """Refuse what a schema cannot see: NaN/infinity anywhere and nesting deeper than MAX_DEPTH.
    Iterative, and each container is visited once (YAML aliases share objects), so it is linear."""
    stack: list[tuple[Any, list[Any]]] = [(data, [])]
    seen: set[int] = set()
    while stack:
        value, path = stack.pop()
        why = finite_reason(value)
        if why:
            raise ProfileError(source, format_path(path), why)
        if isinstance(value, (dict, list)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if len(path) >= MAX_DEPTH:
                raise ProfileError(source, format_path(path), f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((v, path + [k]) for k, v in items)


def parse_yaml_text(text: str, source: str) -> Any:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError:  # a parser frame deeper than our compose bound (should not happen)
        raise ProfileError(source, "", f"file is not valid YAML: nested deeper than {MAX_DEPTH} levels") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise ProfileError(source, "", f"file is not valid YAML: {problem}{where}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(source, "", f"file is not valid YAML: {exc}") from None
    check_plain_data(data, source)
    return data


def read_text(path: str | Path, what: str = "YAML", max_bytes: int = MAX_INPUT_BYTES) -> str:
    """A UTF-8 input file of at most max_bytes; every problem is ProfileError(path, '', reason)."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ProfileError(source, "", "file not found") from None
    except IsADirectoryError:
        raise ProfileError(source, "", f"is a directory, expected a {what} file") from None
    except OSError as exc:
        raise ProfileError(source, "", f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ProfileError(source, "", f"file is larger than {max_bytes >> 20} MiB; not a {what} input")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(source, "", f"file is not valid {what}: not UTF-8 text ({exc.reason} "
                                       f"at byte {exc.start})") from None


def parse_json_text(text: str, source: str) -> Any:
    """json.loads that refuses NaN/Infinity literals and deep nesting with one ProfileError."""
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a finite number")

    try:
        data = json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise ProfileError(source, "", f"file is not valid JSON: nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(source, "", f"file is not valid JSON: {exc.msg} at line {exc.lineno}, "
                                       f"column {exc.colno}") from None
    except ValueError as exc:
        raise ProfileError(source, "", f"file is not valid JSON: {exc}") from None
    check_plain_data(data, source)
    return data


def read_yaml(path: str | Path) -> Any:
    """Parse one YAML file; I/O and syntax problems become ProfileError(path, '', reason)."""
    return parse_yaml_text(read_text(path), str(path))


def _is_strict_int(checker: Any, instance: Any) -> bool:
    # Draft 2020-12 counts 61.0 as an integer; a profile should say 61.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_strict_int),
)


@functools.lru_cache(maxsize=None)
def _validator(schema_name: str) -> Any:
    schema = json.loads((SCHEMA_DIR / f"{schema_name}.schema.json").read_text(encoding="utf-8"))
    _Validator.check_schema(schema)
    return _Validator(schema)


def load_schema(schema_name: str) -> dict[str, Any]:
    """The JSON Schema document (e.g. 'model', 'gpu') as a dict."""
    return _validator(schema_name).schema


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _translate(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(field path, human reason) for one schema violation."""
    path = list(error.absolute_path)
    kind = error.validator
    value = error.instance
    if kind == "additionalProperties" and isinstance(value, dict):
        known = error.schema.get("properties", {})
        extras = sorted(str(k) for k in value if k not in known)
        name = extras[0] if extras else "?"
        return format_path(path + [name]), f"unknown field {name!r} (valid: {', '.join(known)})"
    if kind == "unevaluatedProperties" and isinstance(value, dict):
        # Schemas composed with $ref/allOf (suites) list their fields in the referenced schema.
        match = re.search(r"\('(.+?)' (?:was|were) unexpected", error.message)
        name = match.group(1) if match else "?"
        return format_path(path + [name]), f"unknown field {name!r}"
    if kind == "required" and isinstance(value, dict):
        missing = [k for k in error.validator_value if k not in value]
        name = missing[0] if missing else "?"
        return format_path(path + [name]), "missing required field"
    field = format_path(path)
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        expected = "mapping" if expected == "object" else expected
        return field, f"expected {expected}, got {json_type_name(value)} {_show(value)}"
    if kind == "exclusiveMinimum":
        return field, f"must be > {error.validator_value}, got {_show(value)}"
    if kind == "minimum":
        return field, f"must be >= {error.validator_value}, got {_show(value)}"
    if kind == "maximum":
        return field, f"must be <= {error.validator_value}, got {_show(value)}"
    if kind == "enum":
        valid = ", ".join(str(v) for v in error.validator_value)
        return field, f"must be one of {valid}; got {_show(value)}"
    if kind == "const":
        return field, f"must be {_show(error.validator_value)}, got {_show(value)}"
    if kind == "pattern":
        return field, f"must be an id of letters, digits and . _ + - (starting with a letter or digit), got {_show(value)}"
    if kind == "uniqueItems":
        return field, f"has duplicate items: {_show(value)}"
    if kind == "minItems":
        return field, "must not be empty"
    if kind == "minLength":
        return field, "must not be empty"
    if kind in ("anyOf", "oneOf") and error.context:
        return _translate(jsonschema.exceptions.best_match(error.context))
    return field, error.message


def validate(data: Any, schema_name: str, source: str) -> None:
    """Raise ProfileError for the first (shallowest, then document-ordered) schema violation."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"{json_type_name(data)} {_show(data)}"
        raise ProfileError(source, "", f"expected a mapping of fields at the top level, got {got}")
    check_plain_data(data, source)  # dicts built in code (markers, HF import) get the same checks
    errors = list(_validator(schema_name).iter_errors(data))
    if not errors:
        return
    order = {k: i for i, k in enumerate(data)}

    def rank(e: jsonschema.ValidationError) -> tuple:
        path = list(e.absolute_path)
        return (len(path), order.get(path[0], len(order)) if path else -1, [str(p) for p in path])

    field, reason = _translate(min(errors, key=rank))
    raise ProfileError(source, field, reason)
