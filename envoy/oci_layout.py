"""Writes the filter as an OCI image layout, the form Istio's agent pulls
Wasm modules in: one gzip'd tar layer holding `plugin.wasm` at its root
(Istio's "compat" variant, which every registry and copy tool accepts).

    python3 envoy/oci_layout.py WASM OUT_DIR [--tag TAG]

Push it with any OCI tool, e.g.
    skopeo copy oci:target/oci:0.1.0 docker://registry.example.com/edgehook/filter:0.1.0
and put the manifest digest it prints into the EnvoyFilter's sha256.

The output is reproducible: the same module gives the same digests (fixed
timestamps and owners in the tar, no name or time in the gzip header).
Standard library only, so it runs before any virtualenv exists.
"""

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
LAYER_FILE = "plugin.wasm"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(module: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(LAYER_FILE)
        info.size = len(module)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return out.getvalue()


def write_layout(module: bytes, out: Path, tag: str) -> str:
    """Writes the layout into `out` (replacing it); returns the manifest digest."""
    tar = layer_tar(module)
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "wasm",
            "os": "wasip1",
            "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
            "config": {},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": LAYER_TYPE, "digest": sha256(layer), "size": len(layer)}],
            # The Wasm image spec's marker for a module in a standard layer.
            "annotations": {"module.wasm.image/variant": "compat"},
        },
        sort_keys=True,
    ).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [
            {
                "mediaType": MANIFEST_TYPE,
                "digest": sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }

    if out.exists():
        shutil.rmtree(out)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (layer, config, manifest):
        (blobs / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    (out / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return sha256(manifest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wasm", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tag", default="latest")
    args = parser.parse_args()
    try:
        module = args.wasm.read_bytes()
    except OSError as e:
        print(f"oci_layout: cannot read the module: {e}", file=sys.stderr)
        return 1
    digest = write_layout(module, args.out, args.tag)
    print(f"{args.out}: {LAYER_FILE} ({len(module)} bytes), tag {args.tag}, manifest {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
