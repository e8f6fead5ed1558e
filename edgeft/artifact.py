"""Artifacts: the directory every stage reads and writes.

An artifact is a model file (``model.pt``, ``model.onnx`` or ``model.engine``) plus ``meta.json``:
architecture, class names, the input contract, lineage, metrics and library versions. It is written
into a temporary sibling directory and renamed into place, so an interrupted stage never leaves a
half-written artifact that a later stage (or ``optimize --resume``) would trust.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from edgeft import __version__
from edgeft.contract import InputContract
from edgeft.errors import ArtifactError
from edgeft.metrics import METRICS_SCHEMA, upgrade

SCHEMA_VERSION = 1
META_FILE = "meta.json"
MODEL_FILES = {"torch": "model.pt", "onnx": "model.onnx", "engine": "model.engine"}


@dataclass
class Meta:
    """Everything about a model that is not its weights."""

    kind: str  # one of MODEL_FILES
    arch: str
    class_names: list[str]
    input: InputContract
    lineage: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific facts (e.g. pruned channel spec)
    versions: dict[str, str] = field(default_factory=dict)
    model_sha256: str = ""
    schema_version: int = SCHEMA_VERSION
    metrics_schema: int = METRICS_SCHEMA  # edgeft.metrics' schema; older ones are upgraded when read

    def __post_init__(self) -> None:
        if self.kind not in MODEL_FILES:
            raise ArtifactError(f"artifact kind must be one of {', '.join(MODEL_FILES)}, got {self.kind!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def model_file(self) -> str:
        return MODEL_FILES[self.kind]

    @property
    def imported(self) -> dict[str, Any] | None:
        """Where a model brought by ``edgeft import`` came from (the import's parameters: the file, its format and
        SHA-256), carried by every model made from it; None for a model edgeft made."""
        first = self.lineage[0] if self.lineage else {}
        return first.get("params") if first.get("stage") == "import" else None

    @property
    def imported_onnx(self) -> bool:
        """An ONNX file brought by ``edgeft import``, or a model made from one: no PyTorch weights anywhere."""
        return self.kind == "onnx" and self.imported is not None and self.imported.get("format") == "onnx"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "metrics_schema": self.metrics_schema,
            "edgeft_version": __version__,
            "kind": self.kind,
            "model_file": self.model_file,
            "model_sha256": self.model_sha256,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input": self.input.to_dict(),
            "lineage": self.lineage,
            "metrics": self.metrics,
            "extra": self.extra,
            "versions": self.versions,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "meta.json") -> "Meta":
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(f"{where}: schema_version {version!r} is not supported (this edgeft reads "
                                f"{SCHEMA_VERSION}); re-create the artifact with this edgeft version")
        try:
            return cls(kind=d["kind"], arch=d["arch"], class_names=list(d["class_names"]),
                       input=InputContract.from_dict(d["input"]), lineage=list(d.get("lineage", [])),
                       metrics=upgrade(dict(d.get("metrics", {})), d.get("metrics_schema")),
                       extra=dict(d.get("extra", {})),
                       versions=dict(d.get("versions", {})), model_sha256=d.get("model_sha256", ""))
        except KeyError as e:
            raise ArtifactError(f"{where} lacks the field {e.args[0]!r}; it is not an edgeft artifact") from None


@dataclass
class Artifact:
    """A loaded artifact: its directory and metadata. The model itself is loaded by the stage that needs it."""

    path: Path
    meta: Meta

    @property
    def model_path(self) -> Path:
        return self.path / self.meta.model_file

    def stage_record(self, stage: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Lineage for a child artifact made from this one by ``stage``."""
        return self.meta.lineage + [lineage_entry(stage, params, parent=self)]


def lineage_entry(stage: str, params: dict[str, Any], parent: "Artifact | None" = None) -> dict[str, Any]:
    return {
        "stage": stage,
        "params": params,
        "parent": str(parent.path) if parent else None,
        "parent_sha256": parent.meta.model_sha256 if parent else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers, for those already imported or installed."""
    from importlib import metadata

    out = {"edgeft": __version__}
    for dist in ("torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "torch-pruning",
                 "opencv-python-headless", "opencv-python", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load(path: str | os.PathLike, kind: str | None = None) -> Artifact:
    """Read an artifact directory; check that its model file is there (and of ``kind`` if given)."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact not found: {p}; pass a directory written by an edgeft stage")
    if not p.is_dir():
        raise ArtifactError(f"artifact must be a directory with meta.json, got a file: {p}")
    meta_path = p / META_FILE
    if not meta_path.is_file():
        raise ArtifactError(f"{p} has no {META_FILE}; it is not an edgeft artifact (or its writing was interrupted)")
    try:
        d = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{meta_path} is not valid JSON ({e}); re-create the artifact") from None
    meta = Meta.from_dict(d, where=str(meta_path))
    if kind is not None and meta.kind != kind:
        raise ArtifactError(f"{p} holds a {meta.kind} model; this step needs a {kind} artifact")
    if not (p / meta.model_file).is_file():
        raise ArtifactError(f"{p} lacks its model file {meta.model_file}; re-create the artifact")
    return Artifact(path=p, meta=meta)


def refuse_existing(out: str | os.PathLike, force: bool) -> Path:
    """Fail before any work when ``out`` exists and ``force`` is not given (stages check this first)."""
    out = Path(out)
    if out.exists() and not force:
        raise ArtifactError(f"output exists: {out}; choose another --out or pass --force to replace it")
    return out


@contextmanager
def staging_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only when the block completes without error.

    Refuses an existing ``out`` unless ``force``; then the old one is replaced only after the new one is
    complete. On any exception (Ctrl-C included) the temporary directory is removed and ``out`` is untouched.
    """
    out = refuse_existing(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save(out: str | os.PathLike, meta: Meta, write_model: Callable[[Path], None], force: bool = False,
         extra_files: dict[str, str | bytes] | None = None) -> Artifact:
    """Write an artifact atomically: ``write_model(path)`` writes the model file, then meta.json is added."""
    with staging_dir(out, force=force) as tmp:
        write_model(tmp / meta.model_file)
        meta.model_sha256 = sha256_file(tmp / meta.model_file)
        if not meta.versions:
            meta.versions = library_versions()
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content) if isinstance(content, bytes) else (tmp / name).write_text(content)
        with open(tmp / META_FILE, "w") as f:
            json.dump(meta.to_dict(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    return Artifact(path=Path(out), meta=meta)


def write_json(path: str | os.PathLike, value: Any, indent: int = 2) -> None:
    """Write ``value`` as JSON at ``path`` atomically (a temp file in the same folder, renamed into place): a reader
    never sees half a file, and an interrupted write leaves the old one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=indent)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_metrics(artifact: Artifact, metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Merge ``metrics`` (and ``extra``) into an existing artifact's meta.json, atomically (temp file, rename)."""
    artifact.meta.metrics.update(metrics)
    artifact.meta.extra.update(extra or {})
    write_json(artifact.path / META_FILE, artifact.meta.to_dict())
