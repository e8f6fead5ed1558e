import json

import pytest

import edgeft

from edgeft import artifact
from edgeft.contract import InputContract
from edgeft.errors import ArtifactError


def _meta():
    return artifact.Meta(kind="torch", arch="test_efficientnet", class_names=["a", "b"],
                         input=InputContract(size=(32, 32)), metrics={"accuracy": 0.5})


def test_round_trip(tmp_path):
    out = tmp_path / "art"
    saved = artifact.save(out, _meta(), lambda p: p.write_bytes(b"weights"))
    loaded = artifact.load(out, kind="torch")
    assert loaded.meta.to_dict() == saved.meta.to_dict()
    assert loaded.meta.model_sha256 == artifact.sha256_file(out / "model.pt")
    assert loaded.meta.input == InputContract(size=(32, 32))
    assert loaded.meta.versions["edgeft"] == edgeft.__version__ and "torch" in loaded.meta.versions


def test_interrupted_write_leaves_nothing(tmp_path):
    out = tmp_path / "art"

    def boom(p):
        p.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        artifact.save(out, _meta(), boom)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_refuses_existing_and_replaces_with_force(tmp_path):
    out = tmp_path / "art"
    artifact.save(out, _meta(), lambda p: p.write_bytes(b"1"))
    with pytest.raises(ArtifactError, match="--force"):
        artifact.save(out, _meta(), lambda p: p.write_bytes(b"2"))
    artifact.save(out, _meta(), lambda p: p.write_bytes(b"2"), force=True)
    assert (out / "model.pt").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_failed_replacement_keeps_the_old_artifact(tmp_path):
    out = tmp_path / "art"
    artifact.save(out, _meta(), lambda p: p.write_bytes(b"old"))
    with pytest.raises(RuntimeError):
        artifact.save(out, _meta(), lambda p: (_ for _ in ()).throw(RuntimeError("disk full")), force=True)
    assert (out / "model.pt").read_bytes() == b"old"


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "not found"),
    (lambda p: p.mkdir(), "no meta.json"),
    (lambda p: (p.mkdir(), (p / "meta.json").write_text("{")), "not valid JSON"),
    (lambda p: (p.mkdir(), (p / "meta.json").write_text(json.dumps({"schema_version": 99}))), "schema_version"),
])
def test_bad_artifacts(tmp_path, setup, message):
    p = tmp_path / "x"
    setup(p)
    with pytest.raises(ArtifactError, match=message):
        artifact.load(p)


def test_missing_model_file(tmp_path):
    out = tmp_path / "art"
    artifact.save(out, _meta(), lambda p: p.write_bytes(b"1"))
    (out / "model.pt").unlink()
    with pytest.raises(ArtifactError, match="lacks its model file"):
        artifact.load(out)
