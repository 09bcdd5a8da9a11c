"""docker-compose.yml, checked without Docker: against the Compose
Specification's schema, and every path and port in it against the files
it mounts and the configs of the services it wires together."""

import json
import re
import tomllib
from urllib.parse import urlsplit

import yaml
from jsonschema import validators

from conftest import REPO, SCHEMAS

COMPOSE = REPO / "docker-compose.yml"


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict:
    return compose()["services"]


def makefile_var(name: str) -> str:
    """A `NAME := value` from the Makefile, with $(VAR) references expanded."""
    text = (REPO / "Makefile").read_text()
    values = dict(re.findall(r"(?m)^([A-Z_]+)\s*:?=\s*(.*?)\s*$", text))

    def expand(value: str) -> str:
        return re.sub(r"\$\(([A-Z_]+)\)", lambda m: expand(values[m.group(1)]), value)

    return expand(values[name])


def test_matches_the_compose_specification():
    schema = json.loads((SCHEMAS / "compose" / "compose-spec.json").read_text())
    validator = validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_check_rejects_an_unknown_key():
    schema = json.loads((SCHEMAS / "compose" / "compose-spec.json").read_text())
    bad = compose()
    bad["services"]["sidecar"]["volumez"] = []
    assert list(validators.validator_for(schema)(schema).iter_errors(bad))


def mounts(service: dict) -> list[tuple[str, str, str]]:
    """(type, source, target) of each volume entry, short or long syntax."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["type"], v["source"], v["target"]))
        else:
            source, target = v.split(":")[:2]
            out.append(("bind" if source.startswith((".", "/")) else "volume", source, target))
    return out


def binds(service: dict) -> dict[str, str]:
    """container path -> host path, for the bind mounts of a service."""
    return {target: source for kind, source, target in mounts(service) if kind == "bind"}


def named_volumes(service: dict) -> dict[str, str]:
    """container path -> volume name."""
    return {target: source for kind, source, target in mounts(service) if kind == "volume"}


def test_every_mounted_file_exists_or_is_the_filter_build_output():
    wasm = makefile_var("WASM")
    for name, service in services().items():
        for target, source in binds(service).items():
            path = (REPO / source).resolve()
            if source == f"./{wasm}":
                continue  # written by `make wasm`, which the README runs first
            assert path.is_file(), f"{name}: {source} (mounted at {target}) is not in the repository"
    mounted = {s for svc in services().values() for s in binds(svc).values()}
    assert f"./{wasm}" in mounted, "the filter must be mounted from the build output"
    for name, service in services().items():
        for v in service.get("volumes", []):
            if isinstance(v, dict) and v["source"] == f"./{wasm}":
                assert v["bind"]["create_host_path"] is False, "a missing build must fail, not mount a directory"


def test_builds_use_the_sidecar_dockerfile():
    for name, service in services().items():
        if "build" in service:
            build = service["build"]
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), name


def test_envoy_is_the_official_image_at_the_tested_version():
    assert services()["envoy"]["image"] == f"envoyproxy/envoy:v{makefile_var('ENVOY_VERSION')}"


def envoy_config() -> dict:
    envoy = services()["envoy"]
    command = envoy["command"]
    config_target = command[command.index("-c") + 1]
    return yaml.safe_load((REPO / binds(envoy)[config_target]).read_text())


def envoy_wasm_filter() -> dict:
    """The compose Envoy's edgehook filter: the first HTTP filter of its one listener."""
    [listener] = envoy_config()["static_resources"]["listeners"]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]


def envoy_filter_config() -> dict:
    """The filter's own JSON configuration in the compose Envoy."""
    return json.loads(envoy_wasm_filter()["typed_config"]["config"]["configuration"]["value"])


def test_envoy_reads_the_mounted_config_and_filter():
    envoy = services()["envoy"]
    filename = envoy_wasm_filter()["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
    assert binds(envoy).get(filename) == f"./{makefile_var('WASM')}"


def test_envoy_runs_with_precise_timers_for_the_batch_tick():
    """The compose config batches per worker on a 1 ms tick, an Envoy timer:
    without EVENT_PRECISE_TIMER those follow the kernel's coarse clock."""
    envoy = services()["envoy"]
    assert envoy_filter_config()["sidecar"]["batch"]["tick_ms"] == 1
    assert envoy["environment"]["EVENT_PRECISE_TIMER"] == "1"


def test_envoy_publishes_its_listener_port():
    envoy = services()["envoy"]
    [listener] = envoy_config()["static_resources"]["listeners"]
    address = listener["address"]["socket_address"]
    assert address["address"] == "0.0.0.0", "another container's traffic must reach it"
    published = {int(p.rsplit(":", 1)[1]) for p in envoy["ports"]}
    assert address["port_value"] in published


def sidecar_config() -> dict:
    sidecar = services()["sidecar"]
    command = sidecar["command"]
    config_target = command[command.index("--config") + 1]
    return tomllib.loads((REPO / binds(sidecar)[config_target]).read_text())


def test_envoy_cluster_reaches_the_sidecar_ingest():
    [cluster] = [c for c in envoy_config()["static_resources"]["clusters"] if c["name"] == "edgehook_sidecar"]
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    host, port = sidecar_config()["ingest"]["listen"].rsplit(":", 1)
    assert address["address"] == "sidecar" and "sidecar" in services()
    assert address["port_value"] == int(port)
    assert host == "0.0.0.0"
    assert port in services()["sidecar"]["expose"]


def test_sidecar_data_dir_is_the_named_volume():
    sidecar = services()["sidecar"]
    volumes = named_volumes(sidecar)
    assert volumes.get(sidecar_config()["data_dir"]) in compose()["volumes"]


def test_sidecar_delivers_to_the_demo_receiver():
    receiver = services()["receiver"]
    listen = receiver["command"][receiver["command"].index("--listen") + 1]
    port = listen.rsplit(":", 1)[1]
    [destination] = sidecar_config()["destinations"]
    url = urlsplit(destination["url"])
    assert url.hostname == "receiver"
    assert url.port == int(port)
    assert port in receiver["expose"]


def test_demo_source_is_the_one_the_readme_sends_to():
    """The README's send line (path and secret) must reach the compose
    Envoy's demo source."""
    config = envoy_filter_config()
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Deployment"):]
    section = section[: section.index("\n## ", 1)]
    send = re.search(r"edgehook send http://127\.0\.0\.1:(\d+)(/\S+)\s*\\\s*\n\s*--secret (\S+)", section)
    assert send, "the Deployment section's compose guide must show a send line"
    port, path, secret = int(send.group(1)), send.group(2), send.group(3)
    published = {int(p.rsplit(":", 1)[1]) for p in services()["envoy"]["ports"]}
    assert port in published
    [source] = [s for s in config["sources"] if s["match"].get("path") == path]
    assert secret in source["verify"]["secrets"]
