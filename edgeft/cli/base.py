"""The ``edgeft`` group and what every command shares: one-line errors with exit 2, and option helpers.

Every command imports its stage lazily, so ``edgeft --help`` loads neither torch nor onnxruntime nor tensorrt. A user
error (:class:`~edgeft.errors.EdgeftError`, or a path that cannot be read or written) prints one line and exits 2;
``--debug`` shows the traceback instead. Options mean one thing everywhere: ``--data`` names the data folder,
``--batch`` a batch size (a list where several are measured), ``--threads`` CPU threads (all cores when not given).
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import click

from edgeft import __version__, progress
from edgeft.errors import EdgeftError
from edgeft.redact import redact_text

# Optional dependencies and the extra that installs each (the base install is the camera runtime's core).
EXTRAS = {"torch": "train", "torchvision": "train", "timm": "train", "safetensors": "train", "onnx": "onnx",
          "onnxslim": "onnx", "onnxruntime": "runtime", "torch_pruning": "prune", "elpv_dataset": "demo",
          "jinja2": "train", "sqlalchemy": "history", "alembic": "history", "mlflow": "track"}
THREADS_HELP = "CPU threads  [default: all cores]"
DATA_HELP = ("Data: an ImageFolder with train/ val/ [test/], or a manifest (.csv or .jsonl with path, label and split "
             "columns).")


def default_help(config, name: str) -> str:
    """An option's "[default: X]" from its stage config, where the option itself defaults to None so that a
    config file or recipe can set it: the default is declared once, in the config."""
    return f"  [default: {getattr(config, name)}]"


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        def debug() -> bool:  # set by the group's callback, which runs inside super().invoke
            return bool(ctx.obj and ctx.obj.get("debug"))

        try:
            return super().invoke(ctx)
        except EdgeftError as e:
            if debug():
                raise
            click.echo(f"error: {redact_text(str(e))}", err=True)
            ctx.exit(e.exit_code)
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            if debug() or top not in EXTRAS:
                raise
            click.echo(f"error: this command needs {top}, which is not installed here: pip install "
                       f"'edgeft[{EXTRAS[top]}]' (the runtime-only install has no training stack)", err=True)
            ctx.exit(2)
        except OSError as e:  # a path the user gave that cannot be read or written, or a full disk
            if debug() or not (e.filename or e.errno == errno.ENOSPC):
                raise
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"error: {e.strerror or e}{where}; check the path, its permissions and the free disk space",
                       err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; no partial artifact was written (fine-tuning keeps its last finished epoch in "
                       "OUT.work/: rerun with --resume to continue)", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgeft")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or status lines (for CI logs).")
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors too.")
@click.option("--track", metavar="URI", default=None,
              help="Log every training's curves and settings to MLflow: a store file (mlflow.db) or a tracking server "
                   "URL  [default: $EDGEFT_TRACK; off]")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool, track: str | None) -> None:
    """Fine-tune a pretrained image model and ship it, pruned and INT8, to edge GPUs.

    Stages: finetune → prune → quantize → export → build → bench → compare; every stage reads an
    artifact directory and writes a new one.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if quiet:
        progress.set_quiet(True)
    if track:
        from edgeft.training.track import ENV, tracking_uri

        tracking_uri(track)  # a bad value is refused now, not when the first epoch ends
        os.environ[ENV] = track  # read by edgeft.training.track where training starts


FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_overrides(items: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs into a nested dict; values parsed as YAML scalars (never eval'd)."""
    import yaml

    from edgeft.errors import ConfigError

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            parsed = float(value) if FLOAT.fullmatch(value) else yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part} is not a group of options")
        node[parts[-1]] = parsed
    return out


def int_list(value: str, option: str) -> list[int]:
    from edgeft.errors import ConfigError

    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated integers, got {value!r}") from None


def fraction(value: str, option: str) -> float:
    """A share given as a percentage (10%) or a fraction (0.1)."""
    from edgeft.errors import ConfigError

    text = value.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"{option} takes a percentage like 10% or a fraction like 0.1, got {text!r}") from None


def write_json(path: Path, doc: dict) -> None:
    """``doc`` as JSON at ``path``, atomically (a temp file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def load_config(path: Path | None, section: str = "finetune") -> dict:
    """A --config YAML file's settings: its top-level ``section:`` mapping, or the whole file of plain fields."""
    if path is None:
        return {}
    import yaml

    from edgeft.errors import ConfigError

    try:
        d = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config {path} must be a mapping of option: value")
    return dict(d.get(section, d))
