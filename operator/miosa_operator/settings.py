"""Every setting of every miosa-operator process, in one object read from the environment.

One ``Settings`` class (pydantic-settings) names every environment variable the operator,
the ``fetch``/``serve``/``gc`` commands and the chart use; nothing else in the package reads
``os.environ`` for configuration.  The README's configuration table is generated from it
(``python -m miosa_operator.settings``) and a unit test fails when the two differ.

Design decisions:

* **The variable is the name.** Every field carries its environment variable as its alias,
  so an invalid value is reported as ``MIOSA_POLL_INTERVAL: …`` (``SettingsError``), the
  README table is generated from the same aliases, and ``grep`` finds each variable once.
* **One boolean and one size parser.** Booleans accept ``true/false``, ``1/0``, ``yes/no``,
  ``on/off`` (pydantic's rules) everywhere; byte sizes accept ``512Mi``-style suffixes as the
  chart's users write them (``ingest.limits.parse_size``).
* **Empty means unset**, as the chart renders optional values as empty strings.
* **Sub-settings are views.** The pure layers keep their own small frozen dataclasses
  (``IngestLimits``, ``S3Config``) because they must not depend on how a process is
  configured; ``Settings`` builds them (``limits``, ``s3_config``).
* **Tests never read the process environment by accident**: ``Settings.defaults(**fields)``
  and ``Settings.from_env(mapping)`` read only what they are given; ``Settings.load()`` is
  what processes call.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from .ingest.isolation import Budget
from .ingest.limits import IngestLimits, parse_size
from .kube.timeouts import Timeouts
from .sharding import Shard
from .store.s3store import S3Config
from .store.sources import SourcePolicy

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class SettingsError(ValueError):
    """An environment variable has an invalid value; the message names the variable."""


def _data_home() -> str:
    return os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")


def _default_releases_uri() -> str:
    return f"file://{_data_home()}/miosa-operator/releases"


DEFAULT_S3_UPLOADS = "s3://miosa-uploads"


def _size(value: Any) -> Any:
    return parse_size(value) if isinstance(value, str) else value


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _present(value: Any) -> Any:
    """Any non-empty value of one of boto3's own variables means "S3 through boto3"."""
    return bool(value) if isinstance(value, str) else value


def _strip_slash(value: Any) -> Any:
    return value.rstrip("/") if isinstance(value, str) else value


def _resource_map(value: Any) -> Any:
    """``cpu=50m,memory=64Mi`` -> {"cpu": "50m", "memory": "64Mi"}."""
    if not isinstance(value, str):
        return value
    pairs = [part.strip() for part in value.split(",") if part.strip()]
    if any("=" not in pair for pair in pairs):
        raise ValueError("expected name=quantity pairs separated by commas, e.g. cpu=50m,memory=64Mi")
    return {name.strip(): quantity.strip() for name, quantity in (pair.split("=", 1) for pair in pairs)}


def _quantities(value: dict[str, str]) -> dict[str, str]:
    for name, quantity in value.items():
        if not _QUANTITY.match(quantity):
            raise ValueError(f"{name}={quantity!r} is not a Kubernetes quantity (e.g. 100m, 0.5, 256Mi)")
    return value


_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$")

ByteSize = Annotated[int, BeforeValidator(_size)]
ResourceMap = Annotated[dict[str, str], NoDecode, BeforeValidator(_resource_map), AfterValidator(_quantities)]
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


def env(name: str, *fallbacks: str, section: str, **kwargs: Any) -> Any:
    """A field read from ``name`` (or the first set fallback, e.g. boto3's own ``AWS_*``)."""
    alias: str | AliasChoices = AliasChoices(name, *fallbacks) if fallbacks else name
    extra: dict[str, Any] = {"section": section, "variables": (name, *fallbacks)}
    return Field(validation_alias=alias, json_schema_extra=extra, **kwargs)


class Settings(BaseSettings):
    """Operator-wide settings; the Helm chart sets them as environment variables."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, env_ignore_empty=True)

    # ------------------------------------------------------------------ store
    releases_uri: Annotated[str, BeforeValidator(_strip_slash)] = env(
        "MIOSA_RELEASES_URI",
        section="store",
        default_factory=_default_releases_uri,
        description="Where canonical releases and build logs go: `<releases>/<tenant>/<dep id>/<ver id>/`; "
        "`s3://bucket[/prefix]` or `file:///dir` (default: `file://$XDG_DATA_HOME/miosa-operator/releases`).",
    )
    uploads_uri: Annotated[str | None, BeforeValidator(_strip_slash)] = env(
        "MIOSA_UPLOADS_URI",
        section="store",
        default=None,
        description="Where tenants upload bundles: a version of namespace `ns` may name sources under "
        "`<uploads>/ns/` (default: `s3://miosa-uploads` when S3 is configured, else "
        "`file://$XDG_DATA_HOME/miosa-operator/uploads`).",
    )
    source_prefixes: CommaList = env(
        "MIOSA_SOURCE_PREFIXES",
        section="store",
        default=(),
        description="Comma-separated extra URI prefixes bundles and build logs may come from, beside "
        "`<uploads>/<namespace>/`; `{namespace}` is the version's namespace (`s3://` alone allows any bucket). "
        "The releases location is never allowed.",
    )
    file_root: str | None = env(
        "MIOSA_FILE_ROOT",
        section="store",
        default=None,
        description="Confines `file://` URIs to this directory tree (symlinks resolved).",
    )
    s3_endpoint: str | None = env(
        "MIOSA_S3_ENDPOINT",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        section="store",
        default=None,
        description="S3-compatible endpoint URL; empty = AWS.",
    )
    s3_region: str = env(
        "MIOSA_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", section="store", default="us-east-1", description="S3 region."
    )
    s3_access_key_id: str | None = env(
        "MIOSA_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID", section="store", default=None, description="S3 access key id."
    )
    s3_secret_access_key: str | None = env(
        "MIOSA_S3_SECRET_ACCESS_KEY",
        "AWS_SECRET_ACCESS_KEY",
        section="store",
        default=None,
        repr=False,
        description="S3 secret access key (set together with the key id).",
    )
    s3_session_token: str | None = env(
        "MIOSA_S3_SESSION_TOKEN",
        "AWS_SESSION_TOKEN",
        section="store",
        default=None,
        repr=False,
        description="Temporary S3 session token, if the credentials are temporary.",
    )
    s3_addressing_style: Literal["path", "virtual", "auto"] = env(
        "MIOSA_S3_ADDRESSING_STYLE",
        section="store",
        default="path",
        description="`path` (most S3-compatible servers), `virtual` or `auto`.",
    )
    s3_head_before_put: bool = env(
        "MIOSA_S3_HEAD_BEFORE_PUT",
        section="store",
        default=False,
        description="HEAD before each conditional PUT (`If-None-Match: *`): only for S3-compatible servers "
        "that ignore that header and would overwrite a stored release.",
    )
    s3_ambient_credentials: Annotated[bool, BeforeValidator(_present)] = env(
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_PROFILE",
        section="store",
        default=False,
        description="Set by the platform (IAM role for service accounts, a container role, a profile): "
        "S3 through boto3's default credential chain.",
    )

    # ------------------------------------------------------------------ ingestion limits
    max_members: int = env(
        "MIOSA_MAX_MEMBERS", section="limits", default=IngestLimits.max_members, gt=0, description="Members per bundle."
    )
    max_file_bytes: ByteSize = env(
        "MIOSA_MAX_FILE_BYTES",
        section="limits",
        default=IngestLimits.max_file_bytes,
        gt=0,
        description="Bytes per file (`512Mi`).",
    )
    max_total_bytes: ByteSize = env(
        "MIOSA_MAX_TOTAL_BYTES",
        section="limits",
        default=IngestLimits.max_total_bytes,
        gt=0,
        description="Uncompressed bytes of all files of a bundle.",
    )
    max_compression_ratio: float = env(
        "MIOSA_MAX_COMPRESSION_RATIO",
        section="limits",
        default=IngestLimits.max_compression_ratio,
        ge=1,
        description="Decompressed / compressed bytes, checked after the first MiB.",
    )
    max_path_bytes: ByteSize = env(
        "MIOSA_MAX_PATH_BYTES",
        section="limits",
        default=IngestLimits.max_path_bytes,
        gt=0,
        description="Bytes of a member's path.",
    )
    max_bundle_bytes: ByteSize = env(
        "MIOSA_MAX_BUNDLE_BYTES",
        section="limits",
        default=IngestLimits.max_bundle_bytes,
        gt=0,
        description="Bytes of the uploaded bundle itself.",
    )
    max_path_depth: int = env(
        "MIOSA_MAX_PATH_DEPTH",
        section="limits",
        default=IngestLimits.max_path_depth,
        gt=0,
        description="Components of a member's path (`a/b/c.html` has 3).",
    )
    max_zstd_window: ByteSize = env(
        "MIOSA_MAX_ZSTD_WINDOW",
        section="limits",
        default=IngestLimits.max_zstd_window_bytes,
        ge=1 << 10,
        description="Largest window a zstd frame may declare (the decoder allocates it); `zstd -19` uses 8Mi.",
    )
    # ------------------------------------------------------------------ ingestion processes
    ingest_memory: ByteSize = env(
        "MIOSA_INGEST_MEMORY",
        section="ingestion",
        default=Budget.memory_bytes,
        ge=64 << 20,
        description="Address space of one ingestion worker process (RLIMIT_AS); beyond it: ResourceLimitExceeded.",
    )
    ingest_cpu_seconds: int = env(
        "MIOSA_INGEST_CPU_SECONDS",
        section="ingestion",
        default=Budget.cpu_seconds,
        gt=0,
        description="CPU seconds of one ingestion (RLIMIT_CPU); beyond them: ResourceLimitExceeded.",
    )
    ingest_timeout: float = env(
        "MIOSA_INGEST_TIMEOUT",
        section="ingestion",
        default=Budget.wall_seconds,
        gt=0,
        description="Wall-clock seconds of one ingestion; beyond them the worker is killed and the "
        "ingestion retried (a slow store is not the bundle's fault).",
    )
    max_concurrent_ingestions: int = env(
        "MIOSA_MAX_CONCURRENT_INGESTIONS",
        section="ingestion",
        default=4,
        gt=0,
        description="Ingestions running at once, operator-wide (each a worker of up to MIOSA_INGEST_MEMORY).",
    )
    ingest_niceness: int = env(
        "MIOSA_INGEST_NICENESS",
        section="ingestion",
        default=0,
        ge=0,
        le=19,
        description=(
            "CPU niceness of a namespace's first running ingestion (its further ones run at 19); "
            "higher favours the operator's reconciles over publish latency."
        ),
    )
    tenant_max_ingestions: int = env(
        "MIOSA_TENANT_MAX_INGESTIONS",
        section="ingestion",
        default=2,
        gt=0,
        description="Ingestions of one namespace running at once (a flood cannot take every slot).",
    )
    tenant_max_bytes_in_flight: ByteSize = env(
        "MIOSA_TENANT_MAX_BYTES_IN_FLIGHT",
        section="ingestion",
        default=4 << 30,
        gt=0,
        description="Bundle bytes of one namespace being ingested at once (one bundle always may run).",
    )
    tenant_max_pending: int = env(
        "MIOSA_TENANT_MAX_PENDING",
        section="ingestion",
        default=50,
        gt=0,
        description="Versions of one namespace queued or running; more wait outside the queue and retry later.",
    )
    max_interrupted_attempts: int = env(
        "MIOSA_MAX_INTERRUPTED_ATTEMPTS",
        section="ingestion",
        default=3,
        gt=0,
        description="Abnormal operator (or worker) deaths during one version's ingestion or health gate "
        "before it ends failed with IngestionAborted; graceful restarts do not count.",
    )

    # ------------------------------------------------------------------ reconciling
    health_gate_timeout: float = env(
        "MIOSA_HEALTH_GATE_TIMEOUT",
        section="reconciling",
        default=120.0,
        gt=0,
        description="Seconds a dynamic version's verification workload has to become ready.",
    )
    poll_interval: float = env(
        "MIOSA_POLL_INTERVAL",
        section="reconciling",
        default=2.0,
        gt=0,
        description="Seconds between checks while waiting on something in the cluster.",
    )
    number_order_patience: float = env(
        "MIOSA_NUMBER_ORDER_PATIENCE",
        section="reconciling",
        default=10.0,
        ge=0,
        description="Seconds a new version lets earlier unnumbered ones take their numbers first "
        "(numbers follow creation order); 0 numbers in processing order.",
    )
    claim_release_delay: float = env(
        "MIOSA_CLAIM_RELEASE_DELAY",
        section="reconciling",
        default=3.0,
        ge=0,
        le=60,
        description="Seconds a recorded number claim may wait in the Deployment's pendingNumbers to be "
        "released with the next claim on it (one status write fewer per version on a busy Deployment); "
        "0 releases each at once.",
    )
    static_server_image: str = env(
        "MIOSA_STATIC_SERVER_IMAGE",
        section="reconciling",
        default="ghcr.io/miosa/miosa-operator:0.1.0",
        description="The operator's own image, run by static pods: `miosa-operator fetch` (always this image) "
        "and `serve` (unless the Deployment names another server image).",
    )

    # ------------------------------------------------------------------ artifact endpoint
    artifacts_addr: str = env(
        "MIOSA_ARTIFACTS_ADDR",
        section="artifacts",
        default="127.0.0.1",
        description="Address the artifact endpoint (static pods download releases from it) listens on.",
    )
    artifacts_port: int = env("MIOSA_ARTIFACTS_PORT", section="artifacts", default=8081, ge=0, le=65535, description="Its port.")
    artifacts_url: str | None = env(
        "MIOSA_ARTIFACTS_URL",
        section="artifacts",
        default=None,
        description="URL static pods reach the endpoint at, e.g. its Service "
        "`http://miosa-operator-artifacts.miosa-system.svc:8081` (default: `http://<addr>:<port>`).",
    )
    artifacts_audience: str = env(
        "MIOSA_ARTIFACTS_AUDIENCE",
        section="artifacts",
        default="miosa-artifacts",
        min_length=1,
        description="Audience of the ServiceAccount tokens static pods present (and the only one accepted).",
    )
    artifacts_token_file: str = env(
        "MIOSA_ARTIFACTS_TOKEN_FILE",
        section="artifacts",
        default="/var/run/secrets/miosa/artifacts/token",
        description="`fetch`: the pod's projected token for the endpoint.",
    )
    artifacts_max_streams: int = env(
        "MIOSA_ARTIFACTS_MAX_STREAMS", section="artifacts", default=32, gt=0, description="Downloads served at once."
    )
    artifacts_max_streams_per_tenant: int = env(
        "MIOSA_ARTIFACTS_MAX_STREAMS_PER_TENANT",
        section="artifacts",
        default=4,
        gt=0,
        description="Downloads served at once for one namespace (the others wait and retry).",
    )

    # ------------------------------------------------------------------ workloads
    default_requests: ResourceMap = env(
        "MIOSA_DEFAULT_REQUESTS",
        section="workloads",
        default={"cpu": "50m", "memory": "64Mi"},
        description="Resource requests of a dynamic version's container when its Deployment sets no "
        "`spec.resources` (`name=quantity,…`).",
    )
    default_limits: ResourceMap = env(
        "MIOSA_DEFAULT_LIMITS",
        section="workloads",
        default={"cpu": "1", "memory": "512Mi"},
        description="Resource limits of a dynamic version's container when its Deployment sets no "
        "`spec.resources` (`name=quantity,…`).",
    )
    tmp_size_limit: str = env(
        "MIOSA_TMP_SIZE_LIMIT",
        section="workloads",
        default="256Mi",
        pattern=r"^[0-9]+([KMGT]i)?$",
        description="`sizeLimit` of the writable /tmp (an emptyDir) of dynamic versions' pods, whose root "
        "filesystem is read-only.",
    )

    # ------------------------------------------------------------------ retention
    retention_days: int = env(
        "MIOSA_RETENTION_DAYS",
        section="retention",
        default=30,
        ge=0,
        description="Days a version that is not live keeps its artifacts after it became ready or archived "
        "(a namespace's RetentionPolicy `default` overrides it).",
    )
    rollback_window: int = env(
        "MIOSA_ROLLBACK_WINDOW",
        section="retention",
        default=5,
        ge=0,
        description="The last N versions that were live are never collected.",
    )
    keep_build_logs: bool = env(
        "MIOSA_KEEP_BUILD_LOGS", section="retention", default=True, description="Keep build logs when collecting artifacts."
    )
    gc_interval: float = env(
        "MIOSA_GC_INTERVAL",
        section="retention",
        default=3600.0,
        ge=0,
        description="Seconds between retention sweeps; 0 disables the periodic collector.",
    )

    # ------------------------------------------------------------------ shards
    shards: int = env(
        "MIOSA_SHARDS",
        section="shards",
        default=1,
        ge=1,
        le=64,
        description="Operator processes that share the DeploymentVersions and Deployments by uid hash "
        "(needs the API server's `ShardedListAndWatch` feature gate above 1; the chart's `shards`).",
    )
    shard_index: int = env(
        "MIOSA_SHARD_INDEX",
        section="shards",
        default=0,
        ge=0,
        description="This process's shard, 0 … `MIOSA_SHARDS`-1 (the chart: the StatefulSet pod's ordinal).",
    )
    lease_namespace: str | None = env(
        "MIOSA_LEASE_NAMESPACE",
        section="shards",
        default=None,
        description="Namespace of the shards' Leases (one per shard, one for the singletons: the collector, "
        "offboarding sweeps, the webhook's caBundle); default: the pod's own namespace, else `miosa-system`.",
    )
    lease_seconds: float = env(
        "MIOSA_LEASE_SECONDS",
        section="shards",
        default=15.0,
        ge=2,
        description="A Lease not renewed for this long is free: how long a crashed shard's tenants or the "
        "singletons wait for another process.",
    )

    # ------------------------------------------------------------------ Kubernetes API
    kube_connect_timeout: float = env(
        "MIOSA_KUBE_CONNECT_TIMEOUT",
        section="kubernetes",
        default=5.0,
        gt=0,
        description="Seconds to connect to the Kubernetes API server, for every call of the operator.",
    )
    kube_read_timeout: float = env(
        "MIOSA_KUBE_READ_TIMEOUT",
        section="kubernetes",
        default=30.0,
        gt=0,
        description="Seconds to wait for the API server's answer (each read); a timed-out call is retried.",
    )

    # ------------------------------------------------------------------ admission webhook
    webhook_enabled: bool = env("MIOSA_WEBHOOK", section="webhook", default=True, description="Serve the admission webhook.")
    webhook_addr: str = env("MIOSA_WEBHOOK_ADDR", section="webhook", default="127.0.0.1", description="Address to listen on.")
    webhook_port: int = env("MIOSA_WEBHOOK_PORT", section="webhook", default=9443, ge=1, le=65535, description="Port.")
    webhook_host: str | None = env(
        "MIOSA_WEBHOOK_HOST",
        section="webhook",
        default=None,
        description="Host name or address a self-signed certificate is made for (default: the listen address).",
    )
    webhook_cert: str | None = env(
        "MIOSA_WEBHOOK_CERT",
        section="webhook",
        default=None,
        description="TLS certificate file; without it and the key a self-signed one is made.",
    )
    webhook_key: str | None = env("MIOSA_WEBHOOK_KEY", section="webhook", default=None, description="TLS key file.")
    webhook_ca: str | None = env(
        "MIOSA_WEBHOOK_CA",
        section="webhook",
        default=None,
        description="CA bundle the API server trusts for the webhook (default: the certificate).",
    )
    webhook_configuration: str | None = env(
        "MIOSA_WEBHOOK_CONFIGURATION",
        section="webhook",
        default=None,
        description="ValidatingWebhookConfiguration (installed by the chart) whose `caBundle` the operator "
        "keeps equal to the CA above at startup; empty: never touched.",
    )
    webhook_client_ca: str | None = env(
        "MIOSA_WEBHOOK_CLIENT_CA",
        section="webhook",
        default=None,
        description="CA file of the client certificate the API server presents to webhooks: clients without "
        "a certificate it signed are refused during the TLS handshake. Empty: no client verification.",
    )
    webhook_client_names: CommaList = env(
        "MIOSA_WEBHOOK_CLIENT_NAMES",
        section="webhook",
        default=(),
        description="Comma-separated names (CN or DNS SAN) the client certificate must carry; empty: any "
        "certificate the client CA signed.",
    )
    admission_workers: int = env(
        "MIOSA_ADMISSION_WORKERS",
        section="webhook",
        default=4,
        ge=1,
        description="Threads that answer admission reviews, apart from ingestion and reconciling.",
    )
    admission_timeout: float = env(
        "MIOSA_ADMISSION_TIMEOUT",
        section="webhook",
        default=4.0,
        gt=0,
        description="Seconds the webhook's own lookups may take (read and connect) before it answers "
        "that it cannot check right now; below the configuration's `timeoutSeconds`.",
    )

    # ------------------------------------------------------------------ observability
    metrics_addr: str = env(
        "MIOSA_METRICS_ADDR",
        section="observability",
        default="127.0.0.1",
        description="Address the `/metrics` endpoint listens on.",
    )
    metrics_port: int = env(
        "MIOSA_METRICS_PORT",
        section="observability",
        default=8082,
        ge=0,
        le=65535,
        description="Port of the Prometheus `/metrics` endpoint; 0 serves no metrics.",
    )
    log_format: Literal["text", "json"] = env(
        "MIOSA_LOG_FORMAT",
        section="observability",
        default="text",
        description="`text`, or `json`: one JSON object per line with the object's namespace, name and version id "
        "(`miosa-operator run --log-format` overrides it).",
    )

    # ------------------------------------------------------------------ HTTP API (`miosa-operator api`)
    api_host: str = env("MIOSA_API_HOST", section="api", default="127.0.0.1", description="Address the HTTP API listens on.")
    api_port: int = env("MIOSA_API_PORT", section="api", default=8090, ge=1, le=65535, description="Port of the HTTP API.")
    api_uploads_uri: Annotated[str, BeforeValidator(_strip_slash)] = env(
        "MIOSA_API_UPLOADS_URI",
        section="api",
        default="s3://miosa-uploads",
        description="Bundles published over HTTP go to `<uploads>/<namespace>/<dep id>/<sha256>.<ext>`, the tenant's "
        "upload prefix (pair with `MIOSA_SOURCE_PREFIXES=<uploads>/{namespace}/`).",
    )
    api_spool_dir: str | None = env(
        "MIOSA_API_SPOOL_DIR",
        section="api",
        default=None,
        description="Where a published bundle is spooled and hashed (default: the temp dir).",
    )
    api_max_bundle_bytes: ByteSize = env(
        "MIOSA_API_MAX_BUNDLE_BYTES",
        section="api",
        default=512 << 20,
        gt=0,
        description="Largest bundle a publish accepts (413).",
    )
    api_max_json_bytes: ByteSize = env(
        "MIOSA_API_MAX_JSON_BYTES", section="api", default=64 << 10, gt=0, description="Largest JSON request body (413)."
    )
    api_body_idle_timeout: float = env(
        "MIOSA_API_BODY_IDLE_TIMEOUT", section="api", default=30.0, gt=0, description="Seconds a request body may stall (408)."
    )
    api_max_uploads: int = env(
        "MIOSA_API_MAX_UPLOADS", section="api", default=8, ge=1, description="Bundle uploads in progress, all tenants (429)."
    )
    api_max_uploads_per_tenant: int = env(
        "MIOSA_API_MAX_UPLOADS_PER_TENANT",
        section="api",
        default=2,
        ge=1,
        description="Bundle uploads in progress per namespace (429).",
    )
    api_auth_cache_seconds: float = env(
        "MIOSA_API_AUTH_CACHE_SECONDS",
        section="api",
        default=10.0,
        ge=0,
        description="Seconds a TokenReview or SubjectAccessReview answer is reused (0: never).",
    )
    api_auth_cache_entries: int = env(
        "MIOSA_API_AUTH_CACHE_ENTRIES", section="api", default=10_000, ge=1, description="Cached review answers at most (LRU)."
    )
    api_page_size: int = env(
        "MIOSA_API_PAGE_SIZE", section="api", default=20, ge=1, description="Versions per page without `limit`."
    )
    api_max_page_size: int = env("MIOSA_API_MAX_PAGE_SIZE", section="api", default=100, ge=1, description="Largest `limit`.")
    api_max_wait_seconds: float = env(
        "MIOSA_API_MAX_WAIT_SECONDS", section="api", default=300.0, gt=0, description="Cap of `?wait=true` (its `timeout`)."
    )
    api_kube_timeout: float = env(
        "MIOSA_API_KUBE_TIMEOUT",
        section="api",
        default=30.0,
        gt=0,
        description="Timeout of each call to the Kubernetes API server.",
    )
    api_max_connections: int = env(
        "MIOSA_API_MAX_CONNECTIONS", section="api", default=200, ge=1, description="Concurrent connections served (503 beyond)."
    )
    api_shutdown_grace_seconds: float = env(
        "MIOSA_API_SHUTDOWN_GRACE_SECONDS",
        section="api",
        default=25.0,
        ge=0,
        description="On SIGTERM: seconds requests in flight may take to finish.",
    )

    # ------------------------------------------------------------------ kubectl miosa publish
    client_api_url: str | None = env(
        "MIOSA_API_URL",
        section="plugin",
        default=None,
        description="`kubectl miosa publish`: the HTTP API's address (or `--api`).",
    )
    client_api_token: str | None = env(
        "MIOSA_API_TOKEN",
        section="plugin",
        default=None,
        repr=False,
        description="`kubectl miosa publish`: bearer token (or `--token`; default: the kubeconfig user's token).",
    )

    _isolated: ClassVar[bool] = False

    @model_validator(mode="after")
    def _shard_in_range(self) -> Settings:
        if self.shard_index >= self.shards:
            raise ValueError(f"MIOSA_SHARD_INDEX {self.shard_index} must be below MIOSA_SHARDS ({self.shards})")
        return self

    @model_validator(mode="after")
    def _sources_are_valid(self) -> Settings:
        try:
            _ = self.source_policy  # builds and checks every prefix
        except ValueError as exc:
            raise ValueError(f"MIOSA_UPLOADS_URI / MIOSA_SOURCE_PREFIXES / MIOSA_RELEASES_URI: {exc}") from None
        return self

    # ------------------------------------------------------------------ construction
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,) if cls._isolated else (init_settings, env_settings)

    @classmethod
    def load(cls) -> Settings:
        """The process's settings, from its environment; ``SettingsError`` names a bad variable."""
        return _validated(cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``environ`` only (tests, and commands given an explicit environment)."""
        names = set(variable_names())
        given = {name: value for name, value in environ.items() if name in names and value.strip()}
        return _validated(_Isolated, **given)

    @classmethod
    def defaults(cls, **fields: Any) -> Settings:
        """The defaults with ``fields`` replaced, never reading the environment (tests)."""
        return _validated(_Isolated, **fields)

    # ------------------------------------------------------------------ views for the layers below
    @property
    def limits(self) -> IngestLimits:
        return IngestLimits(
            max_members=self.max_members,
            max_file_bytes=self.max_file_bytes,
            max_total_bytes=self.max_total_bytes,
            max_compression_ratio=self.max_compression_ratio,
            max_path_bytes=self.max_path_bytes,
            max_bundle_bytes=self.max_bundle_bytes,
            max_path_depth=self.max_path_depth,
            max_zstd_window_bytes=self.max_zstd_window,
        )

    @property
    def kube_timeouts(self) -> Timeouts:
        return Timeouts(connect=self.kube_connect_timeout, read=self.kube_read_timeout)

    @property
    def admission_timeouts(self) -> Timeouts:
        return Timeouts(connect=min(self.kube_connect_timeout, self.admission_timeout), read=self.admission_timeout)

    @property
    def budget(self) -> Budget:
        return Budget(memory_bytes=self.ingest_memory, cpu_seconds=self.ingest_cpu_seconds, wall_seconds=self.ingest_timeout)

    @property
    def s3_config(self) -> S3Config:
        return S3Config(
            endpoint_url=self.s3_endpoint,
            region=self.s3_region,
            access_key_id=self.s3_access_key_id,
            secret_access_key=self.s3_secret_access_key,
            addressing_style=self.s3_addressing_style,
            session_token=self.s3_session_token,
            head_before_put=self.s3_head_before_put,
        )

    @property
    def shard(self) -> Shard:
        return Shard(self.shard_index, self.shards)

    @property
    def leases_namespace(self) -> str:
        """``MIOSA_LEASE_NAMESPACE``, else the namespace of the pod's ServiceAccount, else miosa-system."""
        if self.lease_namespace:
            return self.lease_namespace
        try:
            return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip() or "miosa-system"
        except OSError:
            return "miosa-system"

    @property
    def artifacts_pod_url(self) -> str:
        """Where static pods download releases (``MIOSA_ARTIFACTS_URL`` or the listen address)."""
        if self.artifacts_url:
            return self.artifacts_url.rstrip("/")
        host = self.artifacts_addr if self.artifacts_addr not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.artifacts_port}"

    def limits_environment(self) -> dict[str, str]:
        """The ingestion limits as the environment variables that set them, for the pods that
        verify releases with the very limits the operator ingested them with."""
        values = self.model_dump()
        return {
            _variables(info)[0]: str(values[name]) for name, info in Settings.model_fields.items() if _section(info) == "limits"
        }

    @property
    def s3_wanted(self) -> bool:
        """Whether the operator is meant to talk to S3 at all (an endpoint, keys or an IAM role)."""
        return bool(self.s3_endpoint or self.s3_access_key_id or self.s3_ambient_credentials)

    def api_spool_directory(self) -> str:
        import tempfile

        return self.api_spool_dir or tempfile.gettempdir()

    @property
    def uploads(self) -> str:
        """Where tenants upload: ``MIOSA_UPLOADS_URI``, or the default for the store in use."""
        if self.uploads_uri:
            return self.uploads_uri
        return DEFAULT_S3_UPLOADS if self.s3_wanted else f"file://{_data_home()}/miosa-operator/uploads"

    @property
    def source_policy(self) -> SourcePolicy:
        """Tenants may name only sources under ``<uploads>/<namespace>/`` (and the extra
        prefixes); never the releases (``store.sources``)."""
        return SourcePolicy(self.uploads, self.source_prefixes, self.releases_uri)

    def source_allowed(self, uri: str, namespace: str) -> bool:
        """Whether a version of ``namespace`` may name ``uri`` (``source_policy`` says why not)."""
        try:
            self.source_policy.check(uri, namespace)
        except ValueError:
            return False
        return True


class _Isolated(Settings):
    """Settings that read only what they are given (``Settings.defaults``/``from_env``); a
    misspelt field is an error here, where the environment may hold anything."""

    model_config = SettingsConfigDict(**{**Settings.model_config, "extra": "forbid"})
    _isolated: ClassVar[bool] = True


def _validated(cls: type[Settings], **given: Any) -> Settings:
    try:
        return cls(**given)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" if error["loc"] else error["msg"]
            for error in exc.errors()
        ]
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


# ---------------------------------------------------------------------- documentation


def _variables(info: FieldInfo) -> tuple[str, ...]:
    extra = info.json_schema_extra
    assert isinstance(extra, dict), "every setting is declared with env()"
    return tuple(str(name) for name in extra["variables"])  # type: ignore[union-attr]


def _section(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    assert isinstance(extra, dict), "every setting is declared with env()"
    return str(extra["section"])


def variable_names() -> list[str]:
    """Every environment variable a setting is read from (primary names and fallbacks)."""
    return [name for info in Settings.model_fields.values() for name in _variables(info)]


def _default_text(name: str, info: FieldInfo) -> str:
    if name == "releases_uri":
        return "`file://…/miosa-operator/releases`"
    if name == "uploads_uri":
        return "see description"
    default = info.get_default(call_default_factory=False)
    if default is None or default == ():
        return "—"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, dict):
        return "`" + ",".join(f"{k}={v}" for k, v in default.items()) + "`"
    for suffix, unit in (("Gi", 1 << 30), ("Mi", 1 << 20)):
        if isinstance(default, int) and default >= unit and default % unit == 0:
            return f"`{default // unit}{suffix}`"
    return f"`{default}`"


TABLE_START = "<!-- settings table: generated by `python -m miosa_operator.settings` -->"
TABLE_END = "<!-- end of settings table -->"


def markdown_table() -> str:
    """The README's configuration table (between ``TABLE_START`` and ``TABLE_END``)."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        primary, *fallbacks = _variables(info)
        also = f" (or {', '.join(f'`{f}`' for f in fallbacks)})" if fallbacks else ""
        rows.append(f"| `{primary}`{also} | {_default_text(name, info)} | {info.description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
