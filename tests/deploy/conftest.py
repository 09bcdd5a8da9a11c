"""Shared helpers of the deployment tests: where the repository, Envoy, the
built filter and the sidecar binary are, and how to run `envoy --mode
validate` and `edgehook serve` on a config.

`make check-deploy` sets EDGEHOOK_ENVOY, EDGEHOOK_WASM and EDGEHOOK_BIN; run
by hand, the defaults are the paths `make build` writes.
"""

import datetime
import json
import os
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def _tool(env: str, default: str) -> Path:
    path = Path(os.environ.get(env) or REPO / default)
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make build` (or set {env})")
    return path


@pytest.fixture(scope="session")
def envoy() -> Path:
    return _tool("EDGEHOOK_ENVOY", ".venv/bin/envoy")


@pytest.fixture(scope="session")
def wasm() -> Path:
    return _tool("EDGEHOOK_WASM", "target/wasm32-wasip1/wasm/edgehook_filter.wasm")


@pytest.fixture(scope="session")
def edgehook_bin() -> Path:
    return _tool("EDGEHOOK_BIN", "target/debug/edgehook")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key for configs with TLS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    out = tmp_path_factory.mktemp("tls")
    (out / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out / "tls.crt", out / "tls.key"


def substitute(text: str, replacements: dict[str, str]) -> str:
    """Replaces each key, insisting that it occurs: a config that no longer
    names the path the test substitutes must fail the test, not slip by."""
    for old, new in replacements.items():
        assert old in text, f"expected {old!r} in the config"
        text = text.replace(old, new)
    return text


def envoy_validate(envoy: Path, config: str, tmp_path: Path, env: dict[str, str] | None = None):
    """Runs `envoy --mode validate` on `config` (YAML text) from the repo root
    with only `env` in the environment (plus PATH); returns the completed
    process. Validation loads the Wasm module and runs its on_configure."""
    path = tmp_path / f"envoy-{time.monotonic_ns()}.yaml"
    path.write_text(config)
    return subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(path), "--log-level", "error",
         "--disable-hot-restart"],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_valid(result, what: str):
    assert result.returncode == 0, (
        f"envoy rejected {what} (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    assert "OK" in result.stdout + result.stderr


def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


SERVING = re.compile(r"edgehook sidecar serving")


def sidecar_starts(edgehook_bin: Path, toml_text: str, tmp_path: Path, env: dict[str, str]) -> str:
    """Starts the real `edgehook serve` on `toml_text` (addresses and data
    dir already rewritten to the test's) and returns its output once it
    reports serving; fails with that output if it exits first."""
    config = tmp_path / "edgehook.toml"
    config.write_text(toml_text)
    proc = subprocess.Popen(
        [str(edgehook_bin), "serve", "--config", str(config)],
        env={"PATH": os.environ.get("PATH", ""), "EDGEHOOK_LOG": "info", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()

    def pump():
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            output.append(line)
            if SERVING.search(line):
                return "".join(output)
        pytest.fail(f"edgehook serve did not report serving:\n{''.join(output)}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def loopback_toml(toml_text: str, data_dir: Path) -> str:
    """The sidecar config with every listen address moved to a free
    loopback port and data_dir moved to `data_dir`, so a shipped config can
    be started here without clashing with anything."""
    text = re.sub(r'(?m)^listen\s*=\s*"[^"]*"', 'listen = "127.0.0.1:0"', toml_text)
    text, n = re.subn(r'(?m)^data_dir\s*=\s*"[^"]*"', f'data_dir = "{data_dir}"', text)
    assert n == 1, "expected one data_dir line"
    return text


@contextmanager
def running_envoy(envoy: Path, config: str, tmp_path: Path, env: dict[str, str]):
    """Runs Envoy on `config` (YAML text whose admin and listener ports are
    0) and yields the first listener's URL once Envoy reports ready."""
    path = tmp_path / "run.yaml"
    path.write_text(config)
    admin_file = tmp_path / "admin-address"
    proc = subprocess.Popen(
        [str(envoy), "-c", str(path), "--admin-address-path", str(admin_file),
         "--disable-hot-restart", "--concurrency", "1", "--log-level", "error"],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        listener = None
        while listener is None:
            if proc.poll() is not None:
                pytest.fail(f"envoy exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                pytest.fail("envoy did not become ready within 30 s")
            listener = _ready_listener(admin_file)
            if listener is None:
                time.sleep(0.05)  # polling Envoy's admin API for readiness
        yield listener
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ready_listener(admin_file: Path) -> str | None:
    try:
        admin = "http://" + admin_file.read_text().strip()
        with urllib.request.urlopen(admin + "/ready", timeout=2) as r:
            if r.status != 200:
                return None
        with urllib.request.urlopen(admin + "/listeners?format=json", timeout=2) as r:
            statuses = json.load(r)["listener_statuses"]
    except (OSError, ValueError, KeyError):
        return None
    address = statuses[0]["local_address"]["socket_address"]
    if not address.get("port_value"):
        return None
    return f"http://{address['address']}:{address['port_value']}"


def http(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body if method != "GET" else None, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
