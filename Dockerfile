# The agent-cache operator image: the Helm chart (charts/agent-cache-operator) runs it as `agent-cache-operator`.
#   ./dev image          builds agent-cache-operator:<version in pyproject.toml>, the image the chart runs by default
#   docker build -t agent-cache-operator:0.1.0 .      the same by hand (push it to your registry as you need)
# Non-root (uid 10001, the chart's securityContext), read-only root filesystem friendly: nothing writes outside /tmp.
# tests/observability/test_dockerfile.py checks the build context and the entry point without Docker.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY library ./library
COPY operator ./operator
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/agent-cache \
 && /opt/agent-cache/bin/pip install "$(ls /wheels/agent_cache-*.whl)[operator]"

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="agent-cache-operator" \
      org.opencontainers.image.description="Kopf operator: AgentCache resources become live cache configuration in Valkey" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 agentcache \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin agentcache
COPY --from=build /opt/agent-cache /opt/agent-cache
ENV PATH=/opt/agent-cache/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 8080: /healthz (liveness), 9090: /metrics
EXPOSE 8080 9090
ENTRYPOINT ["agent-cache-operator"]
