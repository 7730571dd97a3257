"""Loading: YAML text → interpolated, file-resolved mapping → Settings, or every problem at once.

Duplicate YAML keys are reported with their line and column (YAML would silently keep the last).
`${VAR}` / `${VAR:-default}` is interpolated in every string (`$${` is a literal `${`); `<secret>_file`
replaces a SecretStr field by the file's contents, relative to the config file's directory. pydantic
errors become (key path, reason) pairs, unknown keys with a did-you-mean; no reason carries a secret.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from gateway.config.settings import Settings
from gateway.config.values import _Problems
from gateway.errors import ConfigError

__all__ = ["load_settings", "settings_from_mapping"]

# `$${` (a literal `${`), a well-formed reference, or a bare `${` that starts a malformed one.
_ENV_REF = re.compile(r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")

Problems = list[tuple[str, str]]


def _join(path: str, key: str) -> str:
    return f"{path}{key}" if not path or key.startswith("[") else f"{path}.{key}"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model an annotation holds directly, inside a list, or as an Optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_of, get_args(annotation)) if m is not None), None)


def _secret_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items()
            if field.annotation is SecretStr or SecretStr in get_args(field.annotation)}


def _interpolate(node: Any, path: str, environ: Mapping[str, str], problems: Problems) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                problems.append((_join(path, str(key)), "keys must be strings (quote it in YAML)"))
                continue
            out[key] = _interpolate(value, _join(path, key), environ, problems)
        return out
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if match.group(0) == "$${":
            return "${"
        if name is None:
            problems.append((path, "malformed ${...} reference: write ${NAME} or ${NAME:-default}, "
                                   "or $${ for a literal ${"))
            return match.group(0)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append((path, f"environment variable {name} is not set"))
                return ""
            return default
        return value

    return _ENV_REF.sub(replace, node)


def _resolve_files(node: Any, model: type[BaseModel], path: str, base_dir: Path, problems: Problems) -> Any:
    """Replace `<secret>_file: PATH` by `<secret>: <contents>` for the model's SecretStr fields."""
    if not isinstance(node, dict):
        return node
    secrets = _secret_fields(model)
    out: dict[str, Any] = {}
    for key, value in node.items():
        key_path = _join(path, key)
        base = key.removesuffix("_file")
        if key.endswith("_file") and base in secrets:
            if base in node:
                problems.append((key_path, f"set either {base} or {key}, not both"))
            elif not isinstance(value, str) or not value:
                problems.append((key_path, "must be a file path"))
            else:
                try:
                    out[base] = (base_dir / value).read_text(encoding="utf-8").rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as exc:
                    reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                    problems.append((key_path, f"cannot read {value!r}: {reason}"))
            continue
        field = model.model_fields.get(key)
        sub = _model_of(field.annotation) if field else None
        if sub is not None and isinstance(value, list):
            out[key] = [_resolve_files(v, sub, f"{key_path}[{i}]", base_dir, problems)
                        for i, v in enumerate(value)]
        elif sub is not None:
            out[key] = _resolve_files(value, sub, key_path, base_dir, problems)
        else:
            out[key] = value
    return out


def _error_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith("function-"):  # pydantic's validator branch names, not keys
            path = _join(path, part)
    return path or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, str):
            field = model.model_fields.get(part) if model else None
            model = _model_of(field.annotation) if field else None
    return model


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    known = [*model.model_fields, *(f"{s}_file" for s in _secret_fields(model))]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.75)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


_TYPE_REASONS = {
    "missing": "is required",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of key: value",
    "model_type": "must be a mapping of key: value",
    "model_attributes_type": "must be a mapping of key: value",
}


def _reason(err: Any) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return _unknown_key(err["loc"])
    if kind == "string_type":
        # Only the input's type is looked at, never its value.
        quoted = isinstance(err.get("input"), int | float | bool)
        return "must be a string" + (" (quote it in YAML)" if quoted else "")
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    if kind == "too_short":
        minimum = ctx.get("min_length")
        return "must not be empty" if minimum == 1 else f"needs at least {minimum} items"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be {'at least' if kind == 'greater_than_equal' else 'greater than'} " \
               f"{ctx.get('ge', ctx.get('gt'))}"
    return _TYPE_REASONS.get(kind, str(err["msg"]))


def _problems_from(exc: ValidationError) -> Problems:
    problems: Problems = []
    for err in exc.errors(include_url=False):
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, _Problems):
            parent = _error_path(err["loc"][:-1]).removeprefix("(top level)")
            problems.extend((_join(parent, key), reason) for key, reason in error.items)
        else:
            problems.append((_error_path(err["loc"]), _reason(err)))
    return problems


def _secret_values(node: Any, model: type[BaseModel]) -> list[str]:
    if isinstance(node, list):
        return [s for item in node for s in _secret_values(item, model)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k in _secret_fields(model) and isinstance(v, str) and len(v) >= 4]
    for key, value in node.items():
        field = model.model_fields.get(key)
        sub = _model_of(field.annotation) if field else None
        if sub is not None:
            found += _secret_values(value, sub)
    return found


def settings_from_mapping(
    raw: Any, environ: Mapping[str, str] | None = None, *, base_dir: Path | None = None
) -> Settings:
    """Validate a parsed YAML document: interpolate, resolve *_file twins (relative to base_dir), check."""
    environ = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError([("(top level)", "the configuration must be a YAML mapping of key: value")])
    problems: Problems = []
    data = _interpolate(raw, "", environ, problems)
    data = _resolve_files(data, Settings, "", base_dir or Path.cwd(), problems)
    try:
        # base_dir: relative paths among the settings (pages_dir) resolve like the *_file twins.
        settings = Settings.model_validate(data, context={"base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        # A key already reported (unset variable, unreadable file) is not reported again.
        reported = {p for p, _ in problems} | {p.removesuffix("_file") for p, _ in problems}
        problems += [(p, r) for p, r in _problems_from(exc) if p not in reported]
        # Defence in depth: no reason may carry a secret's value, whatever echoed it.
        secrets = _secret_values(data, Settings)
        for i, (path, reason) in enumerate(problems):
            for secret in secrets:
                reason = reason.replace(secret, "***")
            problems[i] = (path, reason)
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def _duplicate_keys(node: yaml.Node, seen_nodes: set[int] | None = None) -> list[str]:
    """Keys given twice in one mapping, with their position: YAML would silently keep the last."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias: already walked
        return []
    seen_nodes.add(id(node))
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        keys: set[tuple[str, Any]] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in keys:
                    mark = key_node.start_mark
                    found.append(f"duplicate key {key_node.value!r} at line {mark.line + 1}, "
                                 f"column {mark.column + 1}")
                keys.add((key_node.tag, key_node.value))
            found += _duplicate_keys(value_node, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _duplicate_keys(item, seen_nodes)
    return found


def _parse_yaml(text: str, where: str) -> tuple[Any, Problems]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        # Before construction: resolving `<<` merge keys rewrites the nodes in place.
        duplicates = [] if node is None else _duplicate_keys(node)
        raw = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise ConfigError([(where, f"invalid YAML{at}: {problem}")]) from None
    finally:
        loader.dispose()
    if raw is None:
        raise ConfigError([(where, "is empty: expected a YAML mapping of settings")])
    if not isinstance(raw, dict):
        raise ConfigError([(where, f"must be a YAML mapping of key: value, not a {type(raw).__name__}")])
    return raw, [(where, d) for d in duplicates]


def load_settings(path: Path | str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the YAML file at `path`; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError([(str(path), f"cannot read the file: {reason}")]) from None
    raw, problems = _parse_yaml(text, str(path))
    try:
        settings = settings_from_mapping(raw, environ, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    return settings
