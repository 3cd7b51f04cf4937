# miosa-operator: one image for the operator (`miosa-operator run`) and for the static
# server pods it creates (`miosa-operator fetch` in an init container, then `serve`).
#
#   docker build -t ghcr.io/miosa/miosa-operator:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Every dependency ships manylinux wheels: no compiler needed.
RUN python -m venv /opt/miosa \
 && /opt/miosa/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/miosa/bin/pip uninstall -y --disable-pip-version-check pip

FROM python:3.11-slim
LABEL org.opencontainers.image.title="miosa-operator" \
      org.opencontainers.image.description="Immutable DeploymentVersions, promotion, rollback and retention for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/miosa/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=build /opt/miosa /opt/miosa
# A numeric non-root user, so `runAsNonRoot: true` can be verified by the kubelet.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin miosa
USER 10001:10001
ENTRYPOINT ["miosa-operator"]
CMD ["run", "--standalone"]
