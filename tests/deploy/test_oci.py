"""The filter's OCI image layout (`make oci`, envoy/oci_layout.py): the
shape Istio's agent pulls, one gzip'd tar layer holding plugin.wasm, with
every digest and size right, reproducibly."""

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from conftest import REPO

SCRIPT = REPO / "envoy" / "oci_layout.py"


def build(wasm: Path, out: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(wasm), str(out), "--tag", "0.1.0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def blob(layout: Path, descriptor: dict) -> bytes:
    algorithm, hexdigest = descriptor["digest"].split(":")
    assert algorithm == "sha256"
    data = (layout / "blobs" / "sha256" / hexdigest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hexdigest
    assert len(data) == descriptor["size"]
    return data


def test_layout_holds_one_plugin_wasm_layer(wasm, tmp_path):
    layout = tmp_path / "oci"
    printed = build(wasm, layout)
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    [descriptor] = index["manifests"]
    assert descriptor["annotations"]["org.opencontainers.image.ref.name"] == "0.1.0"
    assert descriptor["digest"] in printed
    manifest = json.loads(blob(layout, descriptor))
    assert manifest["mediaType"] == descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    config = json.loads(blob(layout, manifest["config"]))
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    tar_bytes = gzip.decompress(blob(layout, layer))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        [member] = tar.getmembers()
        assert member.name == "plugin.wasm" and member.isfile()
        extracted = tar.extractfile(member)
        assert extracted is not None
        assert extracted.read() == wasm.read_bytes()
    # Nothing but the three blobs.
    assert len(list((layout / "blobs" / "sha256").iterdir())) == 3


def test_same_module_gives_the_same_digest(wasm, tmp_path):
    indexes = []
    for name in ("a", "b"):
        build(wasm, tmp_path / name)
        indexes.append(json.loads((tmp_path / name / "index.json").read_text()))
    assert indexes[0] == indexes[1]
