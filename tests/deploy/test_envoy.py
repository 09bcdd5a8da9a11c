"""Every Envoy config the repository ships, loaded by the real Envoy 1.40
with the built filter (`envoy --mode validate` runs the filter's
on_configure, so a filter config the filter rejects fails here)."""

import copy
import json

import yaml

from conftest import REPO, assert_valid, envoy_validate, http, load_docs, running_envoy, substitute

ENVOY_DIR = REPO / "envoy"
# Secrets for the configs that read them from the environment: test values,
# only ever in this process's children.
SECRETS = {
    "STRIPE_WEBHOOK_SECRET": "whsec_dGVzdC1zdHJpcGUtc2VjcmV0",
    "GITHUB_WEBHOOK_SECRET": "test-github-secret",
    "EDGEHOOK_DEMO_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}
MAKE_RUN_WASM = "target/wasm32-wasip1/wasm/edgehook_filter.wasm"
CONTAINER_WASM = "/etc/envoy/edgehook.wasm"


def test_every_shipped_envoy_config_is_covered():
    """A new config in envoy/ must get a validation test here."""
    shipped = {p.name for p in ENVOY_DIR.glob("*.yaml")}
    assert shipped == {"edgehook.yaml", "production.yaml", "compose.yaml", "snippet.yaml"}


def test_make_run_config_validates(envoy, wasm, tmp_path):
    text = (ENVOY_DIR / "edgehook.yaml").read_text()
    text = substitute(text, {MAKE_RUN_WASM: str(wasm)})
    assert_valid(envoy_validate(envoy, text, tmp_path), "envoy/edgehook.yaml")


def production_config(wasm, tls_files) -> str:
    cert, key = tls_files
    text = (ENVOY_DIR / "production.yaml").read_text()
    return substitute(
        text,
        {
            CONTAINER_WASM: str(wasm),
            "/etc/envoy/tls/tls.crt": str(cert),
            "/etc/envoy/tls/tls.key": str(key),
        },
    )


def test_production_config_validates(envoy, wasm, tls_files, tmp_path):
    result = envoy_validate(envoy, production_config(wasm, tls_files), tmp_path, SECRETS)
    assert_valid(result, "envoy/production.yaml")


def test_production_config_refuses_to_load_without_its_secrets(envoy, wasm, tls_files, tmp_path):
    """The secrets really come from the environment, and a missing one stops
    Envoy at startup instead of verifying against nothing."""
    env = {k: v for k, v in SECRETS.items() if k != "GITHUB_WEBHOOK_SECRET"}
    result = envoy_validate(envoy, production_config(wasm, tls_files), tmp_path, env)
    assert result.returncode != 0
    assert "Unable to create Wasm plugin" in result.stdout + result.stderr
    assert SECRETS["STRIPE_WEBHOOK_SECRET"] not in result.stdout + result.stderr


def test_production_config_keeps_admin_on_loopback_and_logs_no_query():
    config = yaml.safe_load((ENVOY_DIR / "production.yaml").read_text())
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    log_fields = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
    formats = " ".join(log_fields.values())
    assert "WQ" in log_fields["path"], "the access log must drop query strings"
    assert "SIGNATURE" not in formats.upper() and "AUTHORIZATION" not in formats.upper()


def test_compose_config_validates(envoy, wasm, tmp_path):
    text = (ENVOY_DIR / "compose.yaml").read_text()
    text = substitute(text, {CONTAINER_WASM: str(wasm)})
    assert_valid(envoy_validate(envoy, text, tmp_path), "envoy/compose.yaml")


def router():
    return {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }


def bootstrap(http_filter: dict, clusters: list[dict], routes: list[dict], port: int = 10000) -> dict:
    """The smallest bootstrap a pasted filter lives in: one listener whose
    HTTP connection manager runs `http_filter` before the router, and whose
    last route answers for the other applications behind the same Envoy."""
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0 if port == 0 else 9901}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "existing",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "existing",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {"name": "all", "domains": ["*"], "routes": [*routes, OTHER_APP_ROUTE]}
                                            ]
                                        },
                                        "http_filters": [http_filter, router()],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


OTHER_APP_ROUTE = {
    "match": {"prefix": "/"},
    "direct_response": {"status": 200, "body": {"inline_string": "other app"}},
}


def snippet() -> dict:
    return yaml.safe_load((ENVOY_DIR / "snippet.yaml").read_text())


def snippet_config(wasm, piece: dict, port: int = 10000) -> str:
    text = yaml.safe_dump(bootstrap(piece["http_filter"], [piece["cluster"]], [piece["webhook_route"]], port))
    return substitute(text, {CONTAINER_WASM: str(wasm)})


def test_snippet_validates_inside_a_minimal_config(envoy, wasm, tmp_path):
    piece = snippet()
    assert set(piece) == {"http_filter", "webhook_route", "cluster"}
    assert_valid(envoy_validate(envoy, snippet_config(wasm, piece), tmp_path, SECRETS), "envoy/snippet.yaml")


def test_snippet_guards_only_the_webhook_route(envoy, wasm, tmp_path):
    """Pasted into an Envoy that serves other applications, the filter
    answers on its route and leaves every other request alone."""
    piece = snippet()
    with running_envoy(envoy, snippet_config(wasm, piece, port=0), tmp_path, SECRETS) as url:
        path = piece["webhook_route"]["match"]["path"]
        status, _ = http("POST", url + path, b"{}", {"content-type": "application/json"})
        assert status == 401, "an unsigned webhook must be refused by the filter"
        assert http("POST", url + "/api/orders", b"{}") == (200, b"other app")
        assert http("GET", url + "/") == (200, b"other app")


def test_snippet_filter_names_the_snippet_cluster():
    piece = snippet()
    config = json.loads(piece["http_filter"]["typed_config"]["config"]["configuration"]["value"])
    assert config["sidecar"]["cluster"] == piece["cluster"]["name"]
    assert "|" not in piece["cluster"]["name"]


def test_a_filter_config_the_filter_rejects_fails_validation(envoy, wasm, tmp_path):
    """What makes the checks above worth having: Envoy runs the filter's
    on_configure, so a typo in the filter JSON fails the build."""
    piece = snippet()
    cfg = piece["http_filter"]["typed_config"]["config"]["configuration"]
    cfg["value"] = cfg["value"].replace('"sources"', '"sourcez"')
    result = envoy_validate(envoy, snippet_config(wasm, piece), tmp_path, SECRETS)
    assert result.returncode != 0


def istio_patches() -> dict[str, list[dict]]:
    [envoy_filter] = load_docs(ENVOY_DIR / "istio" / "envoyfilter.yaml")
    patches: dict[str, list[dict]] = {}
    for p in envoy_filter["spec"]["configPatches"]:
        patches.setdefault(p["applyTo"], []).append(p)
    return patches


def webhook_route_paths() -> dict[str, str]:
    """Route name -> path, from the VirtualService the gateway serves."""
    docs = load_docs(ENVOY_DIR / "istio" / "gateway.yaml")
    [service] = [d for d in docs if d["kind"] == "VirtualService"]
    return {r["name"]: r["match"][0]["uri"]["exact"] for r in service["spec"]["http"]}


def istio_gateway_config(wasm, port: int = 10000) -> str:
    """The Envoy side of the EnvoyFilter as the gateway would get it: the
    ECDS filter config (the module the istio-agent would download replaced
    by the built one) in the HTTP_FILTER patch's place, the sidecar cluster,
    and the webhook routes with their HTTP_ROUTE patches merged in."""
    patches = istio_patches()
    [extension] = patches["EXTENSION_CONFIG"]
    filter_config = copy.deepcopy(extension["patch"]["value"])
    vm = filter_config["typed_config"]["config"]["vm_config"]
    assert vm["code"]["remote"]["http_uri"]["uri"].startswith("oci://")
    vm["code"] = {"local": {"filename": str(wasm)}}
    [cluster] = patches["CLUSTER"]
    paths = webhook_route_paths()
    routes = []
    for p in patches["HTTP_ROUTE"]:
        name = p["match"]["routeConfiguration"]["vhost"]["route"]["name"]
        route = {"name": name, "match": {"path": paths[name]}, "direct_response": {"status": 404}}
        route.update(p["patch"]["value"])
        routes.append(route)
    [http_filter] = patches["HTTP_FILTER"]
    placed = {k: v for k, v in http_filter["patch"]["value"].items() if k != "config_discovery"}
    assert placed["name"] == filter_config["name"]
    placed["typed_config"] = filter_config["typed_config"]
    return yaml.safe_dump(bootstrap(placed, [cluster["patch"]["value"]], routes, port))


def test_istio_envoyfilter_patches_validate_in_envoy(envoy, wasm, tmp_path):
    result = envoy_validate(envoy, istio_gateway_config(wasm), tmp_path, SECRETS)
    assert_valid(result, "envoy/istio/envoyfilter.yaml")


def test_istio_filter_leaves_the_gateways_other_traffic_alone(envoy, wasm, tmp_path):
    """An ingress gateway serves other applications too: only the patched
    webhook routes may meet the filter."""
    with running_envoy(envoy, istio_gateway_config(wasm, port=0), tmp_path, SECRETS) as url:
        for path in webhook_route_paths().values():
            status, _ = http("POST", url + path, b"{}", {"content-type": "application/json"})
            assert status == 401, f"{path}: an unsigned webhook must be refused by the filter"
        assert http("POST", url + "/api/orders", b"{}") == (200, b"other app")
