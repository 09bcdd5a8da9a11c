"""sidecar/Dockerfile and .dockerignore, checked without Docker: a
multi-stage build from the pinned Rust image to a small runtime image that
runs as a non-root user with /data as a volume, copying only files that
exist."""

import json

from dockerfile_parse import DockerfileParser

from conftest import REPO

DOCKERFILE = REPO / "sidecar" / "Dockerfile"


def parsed() -> DockerfileParser:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    return parser


def stages() -> list[list[dict]]:
    out: list[list[dict]] = []
    for instruction in parsed().structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def values(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def test_builds_with_rust_and_runs_on_a_small_image():
    all_stages = stages()
    assert len(all_stages) >= 2
    [build_from] = values(all_stages[0], "FROM")
    assert build_from.split()[0].startswith("rust:1.95")
    [runtime_from] = values(all_stages[-1], "FROM")
    image = runtime_from.split()[0]
    assert not image.startswith("rust:"), "the runtime image must not carry the toolchain"
    assert "distroless" in image or "slim" in image


def test_runtime_runs_as_non_root_with_a_data_volume():
    final = stages()[-1]
    [user] = values(final, "USER")
    assert user.split(":")[0] not in ("root", "0")
    volumes = " ".join(values(final, "VOLUME"))
    assert "/data" in volumes
    [entrypoint] = values(final, "ENTRYPOINT")
    assert json.loads(entrypoint)[0].endswith("/edgehook")


def test_data_dir_is_owned_by_the_runtime_user():
    """A fresh named volume copies the image's /data, owner included."""
    final = stages()[-1]
    [user] = values(final, "USER")
    copies = [v for v in values(final, "COPY") if v.split()[-1] == "/data"]
    assert copies and f"--chown={user}" in copies[0]


def test_config_path_is_where_compose_and_kubernetes_mount_it():
    final = stages()[-1]
    env = parsed().envs
    assert env["EDGEHOOK_CONFIG"] == "/etc/edgehook/edgehook.toml"
    assert values(final, "CMD") == ['["serve"]']


def test_every_copied_source_exists():
    for stage in stages():
        for value in values(stage, "COPY"):
            if "--from=" in value:
                continue
            sources = [v for v in value.split()[:-1] if not v.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), source


def test_dockerignore_keeps_build_outputs_out_of_the_context():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"target", ".venv"} <= ignored
