# miosa-operator: one image for the operator (`miosa-operator run`) and for the static
# server pods it creates (`miosa-operator fetch` in an init container, then `serve`).
#
#   docker build -t ghcr.io/miosa/miosa-operator:0.1.0 .
#
# Debian's python3 (it carries Debian's security patches) in a venv at /opt/miosa.
# hack/build-images.sh builds the same image without a container engine, step for step
# (debootstrap instead of FROM); tests/e2e/test_images.py checks the two recipes agree.
FROM debian:trixie-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Every dependency ships manylinux wheels: no compiler needed.
RUN python3 -m venv /opt/miosa \
 && /opt/miosa/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/miosa/bin/pip uninstall -y --disable-pip-version-check pip

FROM debian:trixie-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
LABEL org.opencontainers.image.title="miosa-operator" \
      org.opencontainers.image.description="Immutable DeploymentVersions, promotion, rollback and retention for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/miosa/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/miosa /opt/miosa
# Refuse a base whose python3 lacks the tarfile security fixes (CVE-2024-6232, CVE-2025-8194):
# Debian ships them as security updates of the suite's python3 (ingest/patched.py).
RUN /opt/miosa/bin/python -m miosa_operator.ingest.patched
# A numeric non-root user, so `runAsNonRoot: true` can be verified by the kubelet.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin miosa
USER 10001:10001
ENTRYPOINT ["miosa-operator"]
CMD ["run", "--standalone"]
