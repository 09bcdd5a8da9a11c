"""The sidecar configs shipped for deployments, each started with the real
`edgehook serve` (addresses moved to free loopback ports, data to a temp
dir), so a key the sidecar does not know or a value it rejects fails here.
The ConfigMap's copy is started in test_manifests.py."""

import pytest

from conftest import REPO, loopback_toml, sidecar_starts

CONFIGS = {
    # file -> the environment it needs (secrets by reference)
    "sidecar/compose.toml": {},
    "envoy/production.toml": {
        "EDGEHOOK_ADMIN_TOKEN": "test-admin-token",
        "BILLING_SIGNING_SECRET": "whsec_dGVzdC1zaWduaW5nLXNlY3JldA==",
    },
}


@pytest.mark.parametrize("relative", sorted(CONFIGS))
def test_shipped_sidecar_config_starts(relative, edgehook_bin, tmp_path):
    text = loopback_toml((REPO / relative).read_text(), tmp_path / "data")
    output = sidecar_starts(edgehook_bin, text, tmp_path, CONFIGS[relative])
    for secret in CONFIGS[relative].values():
        assert secret not in output


def test_production_sidecar_refuses_to_start_without_its_admin_token(edgehook_bin, tmp_path):
    text = loopback_toml((REPO / "envoy/production.toml").read_text(), tmp_path / "data")
    env = {k: v for k, v in CONFIGS["envoy/production.toml"].items() if k != "EDGEHOOK_ADMIN_TOKEN"}
    with pytest.raises(pytest.fail.Exception, match="EDGEHOOK_ADMIN_TOKEN|admin.token"):
        sidecar_starts(edgehook_bin, text, tmp_path, env)
