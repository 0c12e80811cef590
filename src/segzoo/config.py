"""The pipeline configuration: validated against schemas/config.schema.yaml, defaults filled in.

Every problem is reported at once, one line per key, named by its dotted path
(``phantom.cases: 'abc' is not of type 'integer'``, ``phantom.bogus: unknown key``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

from segzoo.errors import SegzooError


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def config_problems(config: dict, schema: dict) -> list[str]:
    """One line per problem, each naming the config key."""
    problems = []
    for error in sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.path))):
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(known)):
                problems.append(f"{_key([*error.absolute_path, key])}: unknown key (known here: {', '.join(known)})")
        else:
            problems.append(f"{_key(error.absolute_path)}: {error.message}")
    return problems


def fill_defaults(config: dict, schema: dict, root: dict | None = None) -> dict:
    """A copy of ``config`` with every missing key that has a schema default set to it (recursively)."""
    root = root or schema
    out = copy.deepcopy(config)
    for key, sub in schema.get("properties", {}).items():
        if "$ref" in sub:  # only local references: "#/$defs/<name>"
            sub = root["$defs"][sub["$ref"].rsplit("/", 1)[-1]]
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        types = sub.get("type")
        if isinstance(out.get(key), dict) and "object" in (types if isinstance(types, list) else [types]):
            out[key] = fill_defaults(out[key], sub, root)
    return out


_SCALARS = {"boolean": bool, "integer": int, "number": (int, float), "null": type(None)}


def coerce_strings(config, schema: dict, root: dict | None = None):
    """A copy of ``config`` where a string stands for what the schema asks (``"false"`` for a boolean, ``"3"``
    for an integer, ``"null"``): Snakemake's ``--config 'weightgen={enabled: false}'`` hands nested values
    over as strings. Strings the schema allows as strings stay strings."""
    root = root or schema
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(config, dict):
        properties = schema.get("properties", {})
        return {k: coerce_strings(v, properties[k], root) if k in properties else v for k, v in config.items()}
    if isinstance(config, list) and isinstance(schema.get("items"), dict):
        return [coerce_strings(v, schema["items"], root) for v in config]
    if not isinstance(config, str):
        return config
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    for option in schema.get("anyOf", []):
        types += [option["type"]] if isinstance(option.get("type"), str) else option.get("type", [])
    if "string" in types or not any(t in _SCALARS for t in types):
        return config
    try:
        value = yaml.safe_load(config)
    except yaml.YAMLError:
        return config
    wanted = tuple(_SCALARS[t] for t in types if t in _SCALARS)
    is_bool = isinstance(value, bool)
    if isinstance(value, wanted) and (is_bool == ("boolean" in types) or value is None):
        return value
    return config


def validate_config(config: dict, schema_path: str | Path, source: str | None = None) -> dict:
    """Validate ``config`` and return it with defaults; raise SegzooError listing every bad key.

    Strings standing for booleans, numbers or null where the schema wants one are converted first
    (:func:`coerce_strings`). ``source`` (e.g. the file names) prefixes each problem line when given.
    """
    schema = load_schema(schema_path)
    config = coerce_strings(config, schema)
    problems = config_problems(config, schema)
    filled = fill_defaults(config, schema) if not problems else config
    if not problems:
        problems = _resolve_metrics(filled)
    if problems:
        raise SegzooError([f"{source}: {p}" if source else p for p in problems])
    return filled


def _resolve_metrics(config: dict) -> list[str]:
    """``evaluate.metrics``: null becomes every known metric; unknown names are problems."""
    from segzoo.evaluate.metrics import METRICS

    evaluate = config.get("evaluate")
    if not isinstance(evaluate, dict):
        return []
    if evaluate.get("metrics") is None:
        evaluate["metrics"] = list(METRICS)
        return []
    return [f"evaluate.metrics: {name!r} is not a metric segzoo knows ({', '.join(METRICS)})"
            for name in evaluate["metrics"] if name not in METRICS]


def load_config(*paths: str | Path, schema_path: str | Path) -> dict:
    """Merge YAML files like Snakemake does with --configfile (later files override keys), then validate."""
    merged: dict = {}
    for path in paths:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise SegzooError(f"{path}: must hold a mapping of config keys")
        merged = _merge(merged, data)
    return validate_config(merged, schema_path, source=" + ".join(map(str, paths)))


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
