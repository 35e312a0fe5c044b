"""Alibaba Cloud credentials and the ACK cluster they reach, as Prefect blocks (in the style of prefect-aws).

The AccessKey secret and the STS token are ``SecretStr``: masked in the Prefect UI and API, in ``repr()`` and in
logs. They are unwrapped only at the moment an SDK client is built.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import oss2
from aliyun.log import LogClient
from aliyunsdkcore.auth.credentials import AccessKeyCredential, StsTokenCredential
from aliyunsdkcore.client import AcsClient
from prefect.blocks.abstract import CredentialsBlock
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, WithJsonSchema, field_validator

# The ACK documentation home; the procedure this project automates is "Elastic inference on ECS" there.
DOCS_URL = "https://www.alibabacloud.com/help/en/ack/"


def _split_endpoint(endpoint: str, default_scheme: str = "https") -> tuple[str, str]:
    """'http://127.0.0.1:8080' -> ('http', '127.0.0.1:8080'); 'cs.cn-hangzhou.aliyuncs.com' -> ('https', ...)."""
    if "://" not in endpoint:
        return default_scheme, endpoint.rstrip("/")
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"endpoint {endpoint!r} must be host[:port] or http(s)://host[:port]")
    return parsed.scheme, parsed.netloc


# The SDKs log at DEBUG what they sign and send: oss2 the string to sign and the request headers, aliyunsdkcore the
# request headers. With STS credentials those hold the security token. This filter blanks the secrets of every
# credentials block that built a client from those loggers' records.
_SDK_LOGGERS = (
    "oss2.auth",
    "oss2.http",
    "oss2.api",
    "oss2.credentials",
    "aliyunsdkcore.client",
    "aliyunsdkcore.http.http_response",
    "aliyunsdkcore.auth.signers.sts_token_signer",
    "aliyunsdkcore.auth.signers.access_key_signer",
    "aliyun.log.logclient",
    "aliyun.log.auth",
)


class _RedactSecrets(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, "******")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_REDACT = _RedactSecrets()


def _redact_in_sdk_logs(*secrets: str) -> None:
    _REDACT.secrets.update(s for s in secrets if s)
    for name in _SDK_LOGGERS:
        sdk_logger = logging.getLogger(name)
        if _REDACT not in sdk_logger.filters:
            sdk_logger.addFilter(_REDACT)


class AlibabaCloudCredentials(CredentialsBlock):
    """An Alibaba Cloud AccessKey pair (optionally with an STS token) and the endpoints to use it with.

    Builds the SDK clients the flow needs: an ``AcsClient`` for the ACK (CS) OpenAPI and ``oss2.Bucket`` objects.
    Leave the endpoints empty for the region's public endpoints; set them to reach a VPC endpoint, or the sandbox.
    """

    _block_type_name = "Alibaba Cloud Credentials"
    _block_type_slug = "alibaba-cloud-credentials"
    _documentation_url = DOCS_URL
    _description = (
        "AccessKey (and optional STS token) for Alibaba Cloud, with the region and optional ACK (CS) and OSS "
        "endpoint overrides. Used by elastic-inference to create node pools and upload models."
    )
    _code_example = """
```python
from blocks import AlibabaCloudCredentials
creds = AlibabaCloudCredentials.load("BLOCK_NAME")
client = creds.get_client("cs")          # aliyunsdkcore AcsClient
bucket = creds.get_client("oss", bucket="my-models")   # oss2.Bucket
```"""

    access_key_id: str = Field(title="AccessKey ID", description="AccessKey ID of a RAM user or role session")
    access_key_secret: SecretStr = Field(title="AccessKey secret", description="AccessKey secret (masked)")
    security_token: SecretStr | None = Field(
        default=None, title="STS token", description="Security token of temporary (STS) credentials"
    )
    region_id: str = Field(default="cn-hangzhou", title="Region", description="Region id, e.g. cn-hangzhou")
    cs_endpoint: str | None = Field(
        default=None,
        title="ACK (CS) endpoint",
        description="Override of the CS OpenAPI endpoint, host[:port] or http(s)://host[:port]; "
        "default cs.<region>.aliyuncs.com",
    )
    oss_endpoint: str | None = Field(
        default=None,
        title="OSS endpoint",
        description="Override of the OSS endpoint; default https://oss-<region>.aliyuncs.com",
    )
    sls_endpoint: str | None = Field(
        default=None,
        title="SLS endpoint",
        description="Override of the Log Service endpoint the rollout analysis reads the ingress access log from; "
        "default https://<region>.log.aliyuncs.com (a bare IPv4 address is reached on port 80, as the SDK does)",
    )

    @field_validator("access_key_id")
    @classmethod
    def _ak(cls, v: str) -> str:
        if not v or not v.isascii() or any(c.isspace() for c in v):
            raise ValueError("access_key_id must be a non-empty ASCII string without spaces")
        return v

    @field_validator("region_id")
    @classmethod
    def _region(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c == "-" for c in v):
            raise ValueError(f"region_id {v!r} must look like cn-hangzhou")
        return v

    @field_validator("cs_endpoint", "oss_endpoint", "sls_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v:
            _split_endpoint(v)
        return v or None

    # ---- endpoints -------------------------------------------------------------------------------------------
    def cs_domain(self) -> tuple[str, str]:
        """(protocol, host[:port]) of the ACK OpenAPI."""
        return _split_endpoint(self.cs_endpoint or f"cs.{self.region_id}.aliyuncs.com")

    def oss_endpoint_url(self) -> str:
        scheme, netloc = _split_endpoint(self.oss_endpoint or f"oss-{self.region_id}.aliyuncs.com")
        return f"{scheme}://{netloc}"

    def sls_endpoint_url(self) -> str:
        """What ``LogClient`` is given: the override as written (a bare IP stays bare: the SDK then addresses the
        project by Host header only), else the region's public HTTPS endpoint (SLS "Endpoints")."""
        return self.sls_endpoint or f"https://{self.region_id}.log.aliyuncs.com"

    # ---- clients ---------------------------------------------------------------------------------------------
    def get_sls_client(self) -> LogClient:
        """An ``aliyun-log-python-sdk`` client with this AccessKey (and STS token)."""
        secret = self.access_key_secret.get_secret_value()
        token = self.security_token.get_secret_value() if self.security_token is not None else None
        _redact_in_sdk_logs(secret, token or "")
        return LogClient(self.sls_endpoint_url(), self.access_key_id, secret, securityToken=token)

    def get_acs_client(self, **kwargs: Any) -> AcsClient:
        secret = self.access_key_secret.get_secret_value()
        token = self.security_token.get_secret_value() if self.security_token is not None else ""
        _redact_in_sdk_logs(secret, token)
        if self.security_token is not None:
            cred = StsTokenCredential(self.access_key_id, secret, token)
        else:
            cred = AccessKeyCredential(self.access_key_id, secret)
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("timeout", 30)
        return AcsClient(region_id=self.region_id, credential=cred, **kwargs)

    def get_oss_auth(self) -> oss2.Auth | oss2.StsAuth:
        secret = self.access_key_secret.get_secret_value()
        token = self.security_token.get_secret_value() if self.security_token is not None else ""
        _redact_in_sdk_logs(secret, token)
        if self.security_token is not None:
            return oss2.StsAuth(self.access_key_id, secret, token)
        return oss2.Auth(self.access_key_id, secret)

    def get_oss_bucket(self, bucket: str, **kwargs: Any) -> oss2.Bucket:
        kwargs.setdefault("connect_timeout", 30)
        return oss2.Bucket(self.get_oss_auth(), self.oss_endpoint_url(), bucket, **kwargs)

    def get_oss_service(self) -> oss2.Service:
        return oss2.Service(self.get_oss_auth(), self.oss_endpoint_url())

    def get_client(self, client_type: Literal["cs", "oss"] = "cs", bucket: str | None = None, **kwargs: Any):
        if client_type == "cs":
            return self.get_acs_client(**kwargs)
        if client_type == "oss":
            if not bucket:
                raise ValueError("get_client('oss') needs bucket=")
            return self.get_oss_bucket(bucket, **kwargs)
        raise ValueError(f"client_type must be 'cs' or 'oss', got {client_type!r}")


class AckCluster(Block):
    """An ACK cluster, by id, with the credentials that manage it."""

    _block_type_name = "ACK Cluster"
    _block_type_slug = "ack-cluster"
    _documentation_url = DOCS_URL
    _description = "An Alibaba Cloud Container Service for Kubernetes (ACK) cluster and the credentials to reach it."
    _code_example = """
```python
from blocks import AckCluster
cluster = AckCluster.load("BLOCK_NAME")
cluster.cluster_id                       # the ACK cluster id
client = cluster.credentials.get_client("cs")   # aliyunsdkcore AcsClient
```"""

    cluster_id: str = Field(title="Cluster ID", description="ACK cluster id (c followed by hex)")
    # A title of its own: without one the form labels the field with the nested block's class name.
    credentials: AlibabaCloudCredentials = Field(
        title="Credentials", description="An Alibaba Cloud Credentials block with access to the cluster"
    )
    kubeconfig_minutes: int = Field(
        default=60,
        ge=15,
        le=4320,
        title="Kubeconfig lifetime (min)",
        description="Lifetime in minutes (15-4320) of the temporary kubeconfig fetched with "
        "DescribeClusterUserKubeconfig",
    )
    private_ip: bool = Field(
        default=False,
        title="Private IP",
        description="Ask for the API server's internal (VPC) address in the kubeconfig",
    )


# A flow parameter naming the cluster to work on. Prefect renders a parameter typed as a block class as a picker
# of the saved blocks of that type, and hands the flow the loaded block (prefect.flows.Flow.validate_parameters
# resolves the UI's {"$ref": {"block_document_id": ...}}); the name of a saved block keeps working for the CLI,
# prefect.yaml and `prefect deployment run --param cluster_block=NAME`.
AckClusterRef = AckCluster | Annotated[
    str,
    WithJsonSchema({"type": "string", "title": "Block name", "description": "Name of a saved ACK Cluster block"}),
]


def load_cluster(ref: AckCluster | str) -> AckCluster:
    """The block itself, or the saved block of that name."""
    return ref if isinstance(ref, AckCluster) else AckCluster.load(ref)
