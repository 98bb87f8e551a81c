"""Pipeline strings: `dce,fold-bn{eps=1e-5},quantize{skip=[fc,head.proj],per-channel=true}`."""

from __future__ import annotations

import types
import typing
from typing import Any

from graphopt.errors import OptionError
from graphopt.pipeline.passes import Pass, pass_class


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at `sep` outside {} and [] brackets."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth < 0:
                raise OptionError(f"unbalanced {c!r} at position {i} of pipeline {text!r}")
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise OptionError(f"unclosed bracket in pipeline {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_pipeline(text: str) -> list[Pass]:
    """Build the passes a pipeline string names, with their options."""
    if not text.strip():
        return []
    passes = []
    for item in split_top_level(text):
        if not item:
            raise OptionError(f"empty pass name in pipeline {text!r}")
        name, brace, rest = item.partition("{")
        name = name.strip()
        if brace and not rest.endswith("}"):
            raise OptionError(f"options of {name!r} must end with '}}': {item!r}")
        cls = pass_class(name)
        options = split_top_level(rest[:-1]) if brace and rest[:-1].strip() else []
        passes.append(build_pass(cls, options))
    return passes


def build_pass(cls: type[Pass], options: list[str]) -> Pass:
    known = cls.options()
    kwargs: dict[str, Any] = {}
    for option in options:
        key, eq, raw = option.partition("=")
        key = key.strip()
        if not eq:
            raise OptionError(f"{cls.name}: option {option!r} needs a value (key=value)")
        if key not in known:
            listed = ", ".join(known) or "none"
            raise OptionError(f"{cls.name}: unknown option {key!r} (options: {listed})")
        try:
            kwargs[key.replace("-", "_")] = convert(raw.strip(), known[key].type)
        except ValueError as e:
            raise OptionError(f"{cls.name}: option {key}={raw.strip()}: {e}") from None
    try:
        return cls(**kwargs)
    except OptionError:
        raise
    except (TypeError, ValueError) as e:
        raise OptionError(f"{cls.name}: {e}") from None


def convert(raw: str, hint: Any) -> Any:
    """Text to the option's annotated type (bool, int, float, str, tuple[...], optional)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw == "none" and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(raw, arg)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        body = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        items = split_top_level(body) if body.strip() else []
        return tuple(convert(i, args[0]) for i in items)
    if hint is bool:
        if raw not in ("true", "false"):
            raise ValueError(f"expected true or false, got {raw!r}")
        return raw == "true"
    if hint is int:
        return int(raw)
    if hint is float:
        return float(raw)
    if hint is str:
        return raw
    raise ValueError(f"unsupported option type {hint}")
