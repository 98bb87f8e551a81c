"""Recipes: a whole compression run in one replayable file (TOML, or YAML with PyYAML installed).

    pipeline = "canonicalize,fold-bn,prune{macs=0.5},distill{epochs=3},fuse-activation,quantize"
    seed = 0                        # every pass with a seed option that the pipeline leaves unset

    [model]                         # for torch factories
    input-shape = "1x3x224x224"
    dynamic-batch = true

    [data]                          # paths relative to the recipe file
    calibration = "calibration.npz"
    train = "train.npz"             # distill's data= (an array named labels is optional)

    [steps.prune]                   # options merged into the pipeline's pass of that name
    criterion = "taylor"

Every key is checked: an unknown one is an error that lists the known ones."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graphopt.errors import UsageError
from graphopt.pipeline.passes import Pass
from graphopt.pipeline.spec import parse_pipeline

SECTIONS = {"pipeline": str, "seed": int, "model": dict, "data": dict, "steps": dict}
MODEL_KEYS = {"input-shape": str, "dynamic-batch": bool}
DATA_KEYS = {"calibration": str, "train": str}


@dataclass
class Recipe:
    path: Path
    text: str
    passes: list[Pass]
    input_shape: str | None = None
    dynamic_batch: bool = False
    calibration: Path | None = None
    train: Path | None = None
    seeds: dict[str, int] = field(default_factory=dict)  # pass spec -> the seed it runs with

    @property
    def pipeline(self) -> str:
        return ",".join(p.spec() for p in self.passes)


def _parse(path: Path, text: str) -> dict[str, Any]:
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageError(f"{path}: YAML recipes need PyYAML (pip install pyyaml); or write it as TOML") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UsageError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"{path}: a recipe is a mapping of keys (pipeline, seed, model, data, steps)")
        return loaded
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path}: not valid TOML: {e}") from None


def _checked(table: dict[str, Any], known: dict[str, type], where: str) -> dict[str, Any]:
    for key, value in table.items():
        if key not in known:
            raise UsageError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        if not isinstance(value, known[key]) or (known[key] is int and isinstance(value, bool)):
            raise UsageError(f"{where}: {key} must be a {known[key].__name__}, got {value!r}")
    return table


def _with_steps(passes: list[Pass], steps: dict[str, Any], where: str) -> list[Pass]:
    names = {p.name for p in passes}
    for name, options in steps.items():
        if name not in names:
            raise UsageError(f"{where}: [steps.{name}] names no pass of the pipeline ({', '.join(names)})")
        if not isinstance(options, dict):
            raise UsageError(f"{where}: [steps.{name}] must be a table of options")
    out = []
    for p in passes:
        fields = {f.name for f in dataclasses.fields(p)}
        options = {k.replace("-", "_"): v for k, v in steps.get(p.name, {}).items()}
        unknown = sorted(k.replace("_", "-") for k in options if k not in fields)
        if unknown:
            raise UsageError(f"{where}: [steps.{p.name}] has no option {', '.join(unknown)} "
                             f"(options: {', '.join(sorted(f.replace('_', '-') for f in fields))})")
        out.append(dataclasses.replace(p, **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}))
    return out


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read recipe {path}: {e}") from None
    table = _checked(_parse(path, text), SECTIONS, str(path))
    if "pipeline" not in table:
        raise UsageError(f"{path}: a recipe needs pipeline = \"pass,pass{{option=value}},...\"")
    model = _checked(table.get("model", {}), MODEL_KEYS, f"{path} [model]")
    data = _checked(table.get("data", {}), DATA_KEYS, f"{path} [data]")
    passes = _with_steps(parse_pipeline(table["pipeline"]), table.get("steps", {}), str(path))
    seed = table.get("seed")
    seeds = {}
    for i, p in enumerate(passes):
        default = next((f.default for f in dataclasses.fields(p) if f.name == "seed"), None)
        if default is None:
            continue
        if seed is not None and p.seed == default:  # type: ignore[attr-defined]
            passes[i] = p = dataclasses.replace(p, seed=seed)
        seeds[p.spec()] = p.seed  # type: ignore[attr-defined]
    folder = path.parent
    return Recipe(path, text, passes, model.get("input-shape"), model.get("dynamic-batch", False),
                  folder / data["calibration"] if "calibration" in data else None,
                  folder / data["train"] if "train" in data else None, seeds)


def default_recipe(macs: float, epochs: int, blocks: int | None, calibration: bool, train: bool) -> str:
    """The pipeline `graphopt compress` runs: remove blocks (`blocks` of them; None: as many as pay
    against pruning, when there are samples to measure that on), prune to the MACs target (the
    measured best criterion, with samples), distill (with training data), then int8 (with
    calibration data)."""
    samples = calibration or train
    steps = ["canonicalize", "fold-bn"]
    if blocks is None and samples:
        steps.append("remove-blocks{auto=true,score=angular}")
    elif blocks:
        steps.append(f"remove-blocks{{count={blocks}}}")
    steps.append(f"prune{{macs={macs:g},macs-of=pipeline" + (",criterion=auto}" if samples else "}"))
    if train:
        steps.append(f"distill{{epochs={epochs}}}")
    if calibration:
        steps += ["fuse-activation", "quantize"]
    return ",".join(steps)
