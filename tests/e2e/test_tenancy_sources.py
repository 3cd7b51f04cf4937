"""Sources are confined per tenant: tenant A, holding only the write role, tries to make the
operator read tenant B's upload in every spelling, learn whether B's objects exist, and learn
B's digest. Each attempt ends ``failed`` with ``SourceNotAllowed``, decided before a byte is
read, and says nothing about B's object; A's own uploads work."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from .conftest import RELEASES_BUCKET, UPLOADS_BUCKET, Environment, OperatorProcess, Tenant
from .helpers import Objects, condition, sha256, static_spec, tar_gz


def upload(env: Environment, namespace: str, name: str, data: bytes) -> str:
    env.s3().put_object(Bucket=UPLOADS_BUCKET, Key=f"{namespace}/{name}", Body=data)
    return f"s3://{UPLOADS_BUCKET}/{namespace}/{name}"


def outcome(objects: Objects, name: str) -> tuple[str, str, str]:
    body = objects.wait_state(name, "ready", "failed", timeout=120)
    ready = condition(body, "Ready") or {}
    return body["status"]["state"], ready.get("reason", ""), ready.get("message", "")


def test_a_tenant_cannot_read_probe_or_learn_the_digest_of_another_tenants_upload(
    env: Environment, api: client.ApiClient, operator: OperatorProcess, tenants: Any
) -> None:
    a: Tenant = tenants("a")
    b: Tenant = tenants("b")
    mine, theirs = Objects(a.api, a.namespace), Objects(b.api, b.namespace)
    mine.create_deployment("site")
    theirs.create_deployment("site")

    secret_site = tar_gz({"index.html": b"<h1>tenant B's unreleased site</h1>"})
    b_uri = upload(env, b.namespace, "site.tar.gz", secret_site)
    theirs.create_version("site-v1", static_spec("site", b_uri, sha256(secret_site)))
    assert outcome(theirs, "site-v1")[:2] == ("ready", "Ready")
    b_release = theirs.version("site-v1")["status"]["artifactUri"]
    assert b_release.startswith(f"s3://{RELEASES_BUCKET}/{b.namespace}/")

    b_digest = sha256(secret_site)
    own = tar_gz({"index.html": b"<h1>A</h1>"})
    own_uri = upload(env, a.namespace, "site.tar.gz", own)
    attempts = {
        "steal": (b_uri, b_digest),  # B's upload with B's (leaked) digest: would be served from A
        "probe": (b_uri, "0" * 64),  # ...with a wrong digest, to learn the real one
        "probe-missing": (b_uri.replace("site.tar.gz", "no-such.tar.gz"), "0" * 64),
        "dot-dot": (f"s3://{UPLOADS_BUCKET}/{a.namespace}/../{b.namespace}/site.tar.gz", b_digest),
        "escaped": (f"s3://{UPLOADS_BUCKET}/{a.namespace}/%2E%2E/{b.namespace}/site.tar.gz", b_digest),
        "escaped-slash": (f"s3://{UPLOADS_BUCKET}/{a.namespace}%2F..%2F{b.namespace}/site.tar.gz", b_digest),
        "double-slash": (f"s3://{UPLOADS_BUCKET}//{b.namespace}//site.tar.gz", b_digest),
        "prefix-of-name": (f"s3://{UPLOADS_BUCKET}/{a.namespace[:-1]}/site.tar.gz", b_digest),
        "b-release": (b_release, theirs.version("site-v1")["status"]["artifactSha256"]),
        "other-bucket": (f"s3://miosa-logs/{a.namespace}/site.tar.gz", b_digest),
    }
    for name, (uri, digest) in attempts.items():
        mine.create_version(name, static_spec("site", uri, digest))
    mine.create_version("log-probe", static_spec("site", own_uri, sha256(own), buildLog={"uri": b_uri}))
    mine.create_version("own", static_spec("site", own_uri, sha256(own)))

    messages = {}
    for name in [*attempts, "log-probe"]:
        state, reason, message = outcome(mine, name)
        assert (state, reason) == ("failed", "SourceNotAllowed"), (name, message)
        messages[name] = message
        status = mine.version(name)["status"]
        assert "artifactUri" not in status and "artifactSha256" not in status
    assert outcome(mine, "own")[:2] == ("ready", "Ready")

    # No existence oracle: the refusals of an existing and a missing object read the same.
    assert messages["probe"].replace("site.tar.gz", "X") == messages["probe-missing"].replace("no-such.tar.gz", "X")
    # Nothing the operator tells A (conditions, events, build logs) names B's digest unless A
    # wrote it in its own spec, or shows B's bytes.
    for name, (_, digest) in attempts.items():
        said = messages[name] + events_text(api, a.namespace, name) + build_log(env, mine, name)
        assert "unreleased site" not in said, name
        if digest != b_digest:
            assert b_digest not in said, name


def events_text(api: client.ApiClient, namespace: str, name: str) -> str:
    events = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
    return "\n".join(f"{e.reason} {e.message}" for e in events)


def build_log(env: Environment, objects: Objects, name: str) -> str:
    uri = objects.version(name)["status"].get("buildLogUri")
    if not uri:
        return ""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return env.s3().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
