"""Refreshes the schemas under tests/deploy/schemas/ from their upstream
packages. Not part of `make test`: the tests read the vendored copies, so the
repository checks its manifests without a network or ../shared.

    python tests/deploy/vendor_schemas.py \
        --kubernetes-validate DIR   # an unpacked kubernetes-validate wheel
        --istio-crds FILE           # istio/api kubernetes/customresourcedefinitions.gen.yaml
        --check-jsonschema DIR      # an unpacked check-jsonschema wheel

What it writes (and README.md there says where each came from):
- compose/compose-spec.json: the Compose Specification's schema, verbatim.
- kubernetes/<version>/<kind>.json: one self-contained schema per kind the
  manifests use, cut from kubernetes-validate's "local-strict" schemas with
  only the definitions that kind reaches (the full set is 1.8 MB).
- istio/<kind>-<version>.json: the openAPIV3Schema of each Istio CRD version
  the manifests use, verbatim from the CRD file.
"""

import argparse
import json
import re
from pathlib import Path

import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"

KUBERNETES_VERSION = "v1.37.0"
# file stem in kubernetes-validate -> what the manifests call it
KUBERNETES_KINDS = [
    "configmap-v1",
    "namespace-v1",
    "networkpolicy-networking-v1",
    "poddisruptionbudget-policy-v1",
    "role-rbac-v1",
    "rolebinding-rbac-v1",
    "service-v1",
    "serviceaccount-v1",
    "statefulset-apps-v1",
]
# Istio objects carry Kubernetes metadata; their CRD schemas leave it open.
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

ISTIO_KINDS = [
    ("EnvoyFilter", "v1alpha3"),
    ("Gateway", "v1"),
    ("VirtualService", "v1"),
]

DEFS_REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")


def bundle(root: dict, definitions: dict) -> dict:
    """`root` with every reachable definition copied in under $defs."""
    needed: dict = {}

    def walk(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                m = DEFS_REF.match(ref)
                if not m:
                    raise SystemExit(f"unexpected $ref {ref!r}")
                name = m.group(1)
                node["$ref"] = f"#/$defs/{name}"
                if name not in needed:
                    needed[name] = json.loads(json.dumps(definitions[name]))
                    walk(needed[name])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(root)
    root["$defs"] = dict(sorted(needed.items()))
    return root


def vendor_kubernetes(package: Path) -> None:
    src = package / "kubernetes_validate" / "kubernetes-json-schema" / f"{KUBERNETES_VERSION}-local-strict"
    definitions = json.loads((src / "_definitions.json").read_text())["$defs"]
    out = SCHEMAS / "kubernetes" / KUBERNETES_VERSION
    out.mkdir(parents=True, exist_ok=True)
    for stem in KUBERNETES_KINDS:
        schema = bundle(json.loads((src / f"{stem}.json").read_text()), definitions)
        write(out / f"{stem}.json", schema)
    meta = bundle(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": f"#/$defs/{OBJECT_META}",
        },
        definitions,
    )
    write(out / "objectmeta-v1.json", meta)


def vendor_istio(crds: Path) -> None:
    out = SCHEMAS / "istio"
    out.mkdir(parents=True, exist_ok=True)
    docs = [d for d in yaml.safe_load_all(crds.read_text()) if d]
    for kind, version in ISTIO_KINDS:
        crd = next(d for d in docs if d["spec"]["names"]["kind"] == kind)
        served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
        schema = {
            "x-edgehook-crd": {
                "group": crd["spec"]["group"],
                "kind": kind,
                "version": version,
                "scope": crd["spec"]["scope"],
            },
            **served["schema"]["openAPIV3Schema"],
        }
        write(out / f"{kind.lower()}-{version}.json", schema)


def vendor_compose(package: Path) -> None:
    src = package / "check_jsonschema" / "builtin_schemas" / "vendor" / "compose-spec.json"
    out = SCHEMAS / "compose"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compose-spec.json").write_bytes(src.read_bytes())


def write(path: Path, schema: dict) -> None:
    path.write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kubernetes-validate", type=Path)
    p.add_argument("--istio-crds", type=Path)
    p.add_argument("--check-jsonschema", type=Path)
    args = p.parse_args()
    if args.kubernetes_validate:
        vendor_kubernetes(args.kubernetes_validate)
    if args.istio_crds:
        vendor_istio(args.istio_crds)
    if args.check_jsonschema:
        vendor_compose(args.check_jsonschema)


if __name__ == "__main__":
    main()
