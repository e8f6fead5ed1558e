"""Settings declared once: each stage's config dataclass holds the defaults; the command's options and the recipe's
section must agree with it field by field (default, and the allowed values where an option offers a choice).

An option whose default is left to the config (``default=None``) must say the config's default in its help
("[default: X]"); one with a default of its own must have the config's.
"""

from __future__ import annotations

import dataclasses
import re

import click
import pytest

from edgeft.cli import cli


def _commands():
    from edgeft.bench.harness import BenchConfig
    from edgeft.training.config import CLASS_BALANCE, DEVICES, MODES, FinetuneConfig
    from edgeft.prune.config import IMPORTANCES, RECOVER_MODES, PruneConfig
    from edgeft.quantize.ptq import CALIB_METHODS, METHODS, TARGETS, QuantizeConfig
    from edgeft.tensorrt.build import PRECISIONS, BuildConfig

    choices = {"mode": MODES, "class_balance": CLASS_BALANCE, "device": DEVICES, "importance": IMPORTANCES,
               "recover_mode": RECOVER_MODES, "method": METHODS, "target": TARGETS, "calib_method": CALIB_METHODS,
               "precision": PRECISIONS}
    # command, its config, {option name: config field} where they differ, options that are not config fields
    return choices, [
        ("finetune", FinetuneConfig, {}, {"data", "out", "config_path", "overrides", "resume", "force", "from_art"}),
        ("prune", PruneConfig, {"ignore": "ignore"}, {"artifact", "data", "out", "force"}),
        ("quantize", QuantizeConfig, {}, {"artifact", "out", "calib", "data", "epochs", "lr", "qat_mode", "force"}),
        ("build", BuildConfig, {}, {"artifact", "out", "data", "calib", "force"}),
        ("bench", BenchConfig, {"backends": "backends", "batches": "batches"},
         {"models", "out_path", "input_shape", "warmup_iters"}),
    ]


def _normal(value):
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, str) and "," in value:
        return [_normal(v) for v in value.split(",")]
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d*\.\d+(e-?\d+)?|\d+e-?\d+", value):
        return float(value)
    return value


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


@pytest.mark.parametrize("command", ["finetune", "prune", "quantize", "build", "bench"])
def test_command_options_agree_with_the_stage_config(command):
    choices, commands = _commands()
    _, config, renames, not_fields = next(c for c in commands if c[0] == command)
    fields = {f.name: f for f in dataclasses.fields(config)}
    wrong = []
    for param in cli.commands[command].params:
        if not isinstance(param, click.Option) or param.name in not_fields or param.name in ("help",):
            continue
        name = renames.get(param.name, param.name)
        if name not in fields:
            if param.name.startswith("no_") or param.name in ("threads",):
                continue
            wrong.append(f"--{param.name.replace('_', '-')} is no field of {config.__name__}")
            continue
        want = _field_default(fields[name])
        default = None if "UNSET" in repr(param.default) else param.default
        default = False if default is None and param.is_flag else default
        if isinstance(want, list) and isinstance(_normal(default), (int, float)):
            default = [default]
        if default is None and not param.multiple:
            said = re.search(r"\[default: ([^\]]+)\]", param.help or "")
            if want is not None and not (said and (_normal(said.group(1)) == _normal(want) or "model" in said.group(1))):
                wrong.append(f"--{param.name}: help says {said.group(1) if said else 'no default'}, config {want!r}")
        elif param.multiple:
            if want and list(default or ()) not in ([], _normal(want)):
                wrong.append(f"--{param.name}: {default!r}, config {want!r}")
        elif _normal(default) != _normal(want):
            wrong.append(f"--{param.name}: {default!r}, config {want!r}")
        if isinstance(param.type, click.Choice) and name in choices:
            if set(map(str, param.type.choices)) != set(map(str, choices[name])):
                wrong.append(f"--{param.name} offers {param.type.choices}, config allows {choices[name]}")
    assert not wrong, "\n".join(wrong)


def test_recipe_sections_agree_with_the_stage_configs():
    """A recipe's quantize, build and bench sections carry recipe-only fields too (the calibration file, QAT's
    epochs); every field they share with the stage's config has the config's default."""
    from edgeft.bench.harness import BenchConfig
    from edgeft.optimize.recipe import BenchSection, BuildSection, QuantizeSection
    from edgeft.quantize.ptq import QuantizeConfig
    from edgeft.tensorrt.build import BuildConfig

    # fields whose recipe default differs on purpose, and why
    exceptions = {("bench", "backends"): "a recipe benches every model on ONNX Runtime and PyTorch to compare "
                                         "them; a single `edgeft bench` picks the fastest backend here"}
    wrong = []
    for stage, section, config in (("quantize", QuantizeSection, QuantizeConfig), ("build", BuildSection, BuildConfig),
                                   ("bench", BenchSection, BenchConfig)):
        theirs = {f.name: _field_default(f) for f in dataclasses.fields(config)}
        for f in dataclasses.fields(section):
            if f.name in theirs and (stage, f.name) not in exceptions and \
                    _normal(_field_default(f)) != _normal(theirs[f.name]):
                wrong.append(f"{stage}.{f.name}: recipe {_field_default(f)!r}, {config.__name__} {theirs[f.name]!r}")
    assert not wrong, "\n".join(wrong)


def test_the_agreement_test_sees_a_changed_default(monkeypatch):
    """Change a config default and the check above reports it."""
    from edgeft.prune.config import PruneConfig

    field = next(f for f in dataclasses.fields(PruneConfig) if f.name == "steps")
    monkeypatch.setattr(field, "default", 41)
    with pytest.raises(AssertionError, match="--steps: 40, config 41"):
        test_command_options_agree_with_the_stage_config("prune")
