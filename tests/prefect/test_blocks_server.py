"""`prefect block register -m blocks` against a real Prefect server, and what its API shows of a saved block.

The server is Prefect's test harness: a subprocess API server on loopback with a temporary SQLite database.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from prefect_http import prefect_http  # tests/prefect_http.py

REPO = Path(__file__).resolve().parents[2]
PREFECT = Path(sys.executable).with_name("prefect")


@pytest.fixture(scope="module")
def registered(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """Run the CLI exactly as the README tells users to, pointed at the harness server."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")
    } | {
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
        # The repository's packages first (as from a clone), whatever state the editable install is in.
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    proc = subprocess.run(
        [str(PREFECT), "block", "register", "-m", "blocks"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_register_lists_both_blocks(registered: subprocess.CompletedProcess[str]) -> None:
    out = registered.stdout
    assert "Alibaba Cloud Credentials" in out and "ACK Cluster" in out


@pytest.mark.parametrize(
    ("slug", "name", "secret_fields"),
    [
        ("alibaba-cloud-credentials", "Alibaba Cloud Credentials", {"access_key_secret", "security_token"}),
        ("ack-cluster", "ACK Cluster", {"credentials.access_key_secret", "credentials.security_token"}),
    ],
)
def test_block_types_carry_description_and_docs(
    registered: subprocess.CompletedProcess[str], slug: str, name: str, secret_fields: set[str]
) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug(slug)
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
    assert block_type.name == name
    assert block_type.description and len(block_type.description) > 20
    assert str(block_type.documentation_url).startswith("https://www.alibabacloud.com/help/")
    assert schema is not None
    assert secret_fields <= set(schema.fields.get("secret_fields", []))
    if slug == "alibaba-cloud-credentials":
        assert block_type.code_example and "get_client" in block_type.code_example
        props = schema.fields["properties"]
        assert props["access_key_secret"]["title"] == "AccessKey secret"
        assert props["access_key_secret"].get("format") == "password"


def test_saved_block_is_masked_in_the_api(registered: subprocess.CompletedProcess[str], prefect_api: str) -> None:
    from blocks.alibaba import AckCluster, AlibabaCloudCredentials

    secret = "sk" + secrets.token_hex(15)
    token = "sts." + secrets.token_urlsafe(32)
    creds = AlibabaCloudCredentials(
        access_key_id="LTAI5tTestAccessKey0001", access_key_secret=secret, security_token=token,
        region_id="cn-shanghai",
    )
    creds.save("masking-test", overwrite=True)
    AckCluster(cluster_id="c210fbedb96674b9eaf15f2dc47d169a8", credentials=creds).save(
        "masking-test-cluster", overwrite=True
    )

    with prefect_http(prefect_api) as http:
        docs = http.post("/block_documents/filter", json={"include_secrets": False})
        docs.raise_for_status()
        by_name = http.get("/block_types/slug/alibaba-cloud-credentials/block_documents/name/masking-test")
        by_name.raise_for_status()
    for text in (docs.text, by_name.text):
        assert secret not in text and token not in text
    data = by_name.json()["data"]
    assert data["access_key_secret"] == "********" and data["security_token"] == "********"
    assert data["access_key_id"] == "LTAI5tTestAccessKey0001" and data["region_id"] == "cn-shanghai"
    names = {d["name"] for d in docs.json()}
    assert {"masking-test", "masking-test-cluster"} <= names

    # The real values come back only to a client that loads the block to use it.
    loaded = AlibabaCloudCredentials.load("masking-test")
    assert loaded.access_key_secret.get_secret_value() == secret
    assert loaded.security_token is not None and loaded.security_token.get_secret_value() == token
    cluster = AckCluster.load("masking-test-cluster")
    assert cluster.credentials.access_key_secret.get_secret_value() == secret
    assert secret not in json.dumps(cluster.model_dump(mode="json"))
