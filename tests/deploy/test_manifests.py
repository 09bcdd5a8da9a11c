"""The Kubernetes and Istio manifests under envoy/istio/, checked against
the vendored schemas (Kubernetes v1.37 strict, Istio CRDs read as the API
server reads them) and against each other: names, ports and labels that
must agree, secrets that must stay out, and the sidecar config in the
ConfigMap started for real."""

import json
import re
import tomllib
from functools import cache

import pytest
from jsonschema import Draft202012Validator

from conftest import REPO, SCHEMAS, load_docs, loopback_toml, sidecar_starts

ISTIO_DIR = REPO / "envoy" / "istio"
K8S_SCHEMAS = SCHEMAS / "kubernetes" / "v1.37.0"
# apiVersion, kind -> vendored schema file
KUBERNETES_KINDS = {
    ("v1", "ConfigMap"): "configmap-v1.json",
    ("v1", "Namespace"): "namespace-v1.json",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicy-networking-v1.json",
    ("v1", "Service"): "service-v1.json",
    ("v1", "ServiceAccount"): "serviceaccount-v1.json",
    ("apps/v1", "StatefulSet"): "statefulset-apps-v1.json",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudget-policy-v1.json",
    ("rbac.authorization.k8s.io/v1", "Role"): "role-rbac-v1.json",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebinding-rbac-v1.json",
}
ISTIO_KINDS = {
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): "envoyfilter-v1alpha3.json",
    ("networking.istio.io/v1", "Gateway"): "gateway-v1.json",
    ("networking.istio.io/v1", "VirtualService"): "virtualservice-v1.json",
}


def as_api_server_reads_it(node):
    """A CRD's structural schema made strict for jsonschema: undeclared
    fields of an object are errors unless it preserves unknown fields, and
    int-or-string accepts either."""
    if isinstance(node, list):
        return [as_api_server_reads_it(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: as_api_server_reads_it(v) for k, v in node.items()}
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        node.get("type") == "object"
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


@cache
def validator(api_version: str, kind: str) -> Draft202012Validator:
    if (api_version, kind) in KUBERNETES_KINDS:
        schema = json.loads((K8S_SCHEMAS / KUBERNETES_KINDS[api_version, kind]).read_text())
        return Draft202012Validator(schema)
    if (api_version, kind) in ISTIO_KINDS:
        crd = json.loads((SCHEMAS / "istio" / ISTIO_KINDS[api_version, kind]).read_text())
        meta = crd.pop("x-edgehook-crd")
        assert f"{meta['group']}/{meta['version']}" == api_version and meta["kind"] == kind
        object_meta = json.loads((K8S_SCHEMAS / "objectmeta-v1.json").read_text())
        schema = as_api_server_reads_it(crd)
        # The CRD leaves apiVersion, kind and metadata to the API server.
        schema["properties"]["apiVersion"] = {"const": api_version}
        schema["properties"]["kind"] = {"const": kind}
        # ObjectMeta's definitions move to the root, where its "#/$defs/..."
        # references resolve.
        schema["$defs"] = object_meta["$defs"]
        schema["properties"]["metadata"] = {"$ref": object_meta["$ref"]}
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
        return Draft202012Validator(schema)
    pytest.fail(f"no vendored schema for {api_version} {kind}: vendor it (tests/deploy/vendor_schemas.py)")


def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(ISTIO_DIR.glob("*.yaml")):
        for doc in load_docs(path):
            out.append((f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}", doc))
    return out


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def one(kind: str) -> dict:
    [doc] = by_kind(kind)
    return doc


def test_manifests_exist():
    kinds = {doc["kind"] for _, doc in manifests()}
    assert {"EnvoyFilter", "Gateway", "VirtualService", "StatefulSet", "Service", "ConfigMap"} <= kinds


@pytest.mark.parametrize("name,doc", manifests(), ids=[n for n, _ in manifests()])
def test_manifest_matches_its_schema(name, doc):
    errors = sorted(validator(doc["apiVersion"], doc["kind"]).iter_errors(doc), key=str)
    assert not errors, "\n".join(f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_check_rejects_an_unknown_field():
    """The strictness the checks above rely on: a typo is an error."""
    statefulset = one("StatefulSet")
    bad = json.loads(json.dumps(statefulset))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}
    assert list(validator("apps/v1", "StatefulSet").iter_errors(bad))
    envoy_filter = json.loads(json.dumps(one("EnvoyFilter")))
    envoy_filter["spec"]["configPatches"][0]["patch"]["operaton"] = "ADD"
    assert list(validator("networking.istio.io/v1alpha3", "EnvoyFilter").iter_errors(envoy_filter))


def sidecar_container() -> dict:
    [container] = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return container


def sidecar_toml_text() -> str:
    return one("ConfigMap")["data"]["edgehook.toml"]


def test_sidecar_runs_non_root_with_a_read_only_root_and_requests():
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    container = sidecar_container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])


def test_sidecar_data_dir_is_the_persistent_volume():
    statefulset = one("StatefulSet")
    config = tomllib.loads(sidecar_toml_text())
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in sidecar_container()["volumeMounts"]}
    assert mounts.get(config["data_dir"]) in claims


def test_sidecar_config_is_mounted_where_the_container_reads_it():
    container = sidecar_container()
    args = container["args"]
    config_path = args[args.index("--config") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]
    assert config_path == f"{mounts[volume['name']]}/edgehook.toml"


def test_probes_and_service_use_the_ingest_port():
    container = sidecar_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = tomllib.loads(sidecar_toml_text())
    ingest_port = int(config["ingest"]["listen"].rsplit(":", 1)[1])
    assert ports["ingest"] == ingest_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"]["port"] in ("ingest", ingest_port), probe
    service = one("Service")
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
    [grpc] = [p for p in service["spec"]["ports"] if p["targetPort"] == "ingest"]
    assert grpc["appProtocol"] == "grpc"


def test_service_and_statefulset_select_the_same_pods():
    statefulset = one("StatefulSet")
    service = one("Service")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None", "Envoy needs one endpoint per pod"
    for selector in (service["spec"]["selector"], statefulset["spec"]["selector"]["matchLabels"],
                     one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert labels.get("sidecar.istio.io/inject") == "false"


def envoy_filter_patches(apply_to: str) -> list[dict]:
    return [p for p in one("EnvoyFilter")["spec"]["configPatches"] if p["applyTo"] == apply_to]


def test_envoyfilter_cluster_points_at_the_sidecar_service():
    [cluster] = envoy_filter_patches("CLUSTER")
    value = cluster["patch"]["value"]
    [endpoint] = value["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    service = one("Service")
    meta = service["metadata"]
    assert address["address"] == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert address["port_value"] in {p["port"] for p in service["spec"]["ports"]}
    assert "|" not in value["name"]
    assert "http2_protocol_options" in json.dumps(value)


def filter_config() -> dict:
    [extension] = envoy_filter_patches("EXTENSION_CONFIG")
    return extension["patch"]["value"]


def test_envoyfilter_wires_the_filter_before_the_router_on_the_gateway():
    ecds = filter_config()
    wasm = ecds["typed_config"]["config"]
    assert wasm["allow_on_headers_stop_iteration"] is True
    [http_filter] = envoy_filter_patches("HTTP_FILTER")
    assert http_filter["match"]["context"] == "GATEWAY"
    assert http_filter["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    assert http_filter["patch"]["operation"] == "INSERT_BEFORE"
    # The gateway's other traffic must never meet the filter: it is enabled
    # on the webhook routes alone.
    assert http_filter["patch"]["value"]["disabled"] is True
    for route in envoy_filter_patches("HTTP_ROUTE"):
        enabled = route["patch"]["value"]["typed_per_filter_config"][ecds["name"]]
        assert enabled["@type"] == "type.googleapis.com/envoy.config.route.v3.FilterConfig"
        assert not enabled.get("disabled")
    assert http_filter["patch"]["value"]["name"] == ecds["name"]
    json_config = json.loads(wasm["configuration"]["value"])
    [cluster] = envoy_filter_patches("CLUSTER")
    assert json_config["sidecar"]["cluster"] == cluster["patch"]["value"]["name"]


def test_envoyfilter_secrets_come_from_the_gateway_environment():
    wasm = filter_config()["typed_config"]["config"]
    json_config = json.loads(wasm["configuration"]["value"])
    env_keys = set(wasm["vm_config"]["environment_variables"]["host_env_keys"])
    for source in json_config["sources"]:
        for secret in source["verify"]["secrets"]:
            assert isinstance(secret, dict) and "env" in secret, f"{source['name']}: inline secret"
            assert secret["env"] in env_keys


def test_route_patches_match_virtualservice_routes_and_source_limits():
    routes = {r["name"]: r for r in one("VirtualService")["spec"]["http"]}
    sources = {s["match"]["path"]: s for s in json.loads(
        filter_config()["typed_config"]["config"]["configuration"]["value"])["sources"]}
    patched = set()
    for p in envoy_filter_patches("HTTP_ROUTE"):
        name = p["match"]["routeConfiguration"]["vhost"]["route"]["name"]
        assert name in routes, name
        [match] = routes[name]["match"]
        source = sources[match["uri"]["exact"]]
        assert p["patch"]["value"]["request_body_buffer_limit"] >= source["max_body_bytes"]
        patched.add(match["uri"]["exact"])
    assert patched == set(sources), "every source's route needs its body limit"


def test_virtualservice_is_bound_to_the_gateway():
    gateway = one("Gateway")
    service = one("VirtualService")
    assert gateway["metadata"]["name"] in service["spec"]["gateways"]
    assert set(service["spec"]["hosts"]) <= {h for s in gateway["spec"]["servers"] for h in s["hosts"]}


SECRETISH = re.compile(r"whsec_|sk_live|ghp_|-----BEGIN", re.I)


def test_no_secret_values_in_manifests():
    for path in ISTIO_DIR.glob("*.yaml"):
        assert not SECRETISH.search(path.read_text()), path
    for _, doc in manifests():
        assert doc["kind"] != "Secret", "secrets are created by the operator, never shipped"
    for env in sidecar_container()["env"]:
        assert "value" not in env and "secretKeyRef" in env["valueFrom"], env["name"]


def test_configmap_sidecar_config_starts_the_real_sidecar(edgehook_bin, tmp_path):
    text = loopback_toml(sidecar_toml_text(), tmp_path / "data")
    # Signing secrets must look like Standard Webhooks ones; any value does
    # for the rest.
    values = {"BILLING_SIGNING_SECRET": "whsec_dGVzdC1zaWduaW5nLXNlY3JldA=="}
    env = {e["name"]: values.get(e["name"], "test-admin-token") for e in sidecar_container()["env"]}
    output = sidecar_starts(edgehook_bin, text, tmp_path, env)
    for value in env.values():
        assert value not in output


def test_only_the_gateway_may_reach_the_ingest_port():
    policy = one("NetworkPolicy")
    gateway_selector = one("EnvoyFilter")["spec"]["workloadSelector"]["labels"]
    pod_labels = one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ingest_port = int(tomllib.loads(sidecar_toml_text())["ingest"]["listen"].rsplit(":", 1)[1])
    rules = [r for r in policy["spec"]["ingress"] if any(p["port"] == ingest_port for p in r["ports"])]
    assert rules
    for rule in rules:
        [peer] = rule["from"]
        assert peer == {"podSelector": {"matchLabels": gateway_selector}}
