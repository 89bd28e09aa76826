# baxo-mqtt in a container.
#
#   docker build -t baxo-mqtt .
#   docker run --rm -v ./config.toml:/etc/baxo-mqtt/config.toml:ro baxo-mqtt
#
# Configuration: mount a TOML file at /etc/baxo-mqtt/config.toml, or leave the
# image's empty one in place and give every setting as BAXO_MQTT_<SECTION>__<KEY>
# variables. Secrets: never in the image or in plain variables; mount them as
# files (Docker or compose secrets land in /run/secrets) and point
# BAXO_MQTT_BAXO__PASSWORD_FILE / BAXO_MQTT_MQTT__PASSWORD_FILE at them.
# compose.yaml shows both, with a broker and the built-in simulator.

# The base of both stages: the official slim Python image, or any Debian-like
# image with python3 and its venv module (the container tests build on a Debian
# bookworm made by mmdebstrap: docker build --build-arg PYTHON_IMAGE=...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the package and its dependencies into a virtualenv -----------------
# Every dependency ships wheels, so no compiler is needed even here; the stage
# exists so that pip's caches and the sources never reach the final image.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY baxo_mqtt ./baxo_mqtt
# A wheelhouse/ folder in the build context (scripts/setup-docker builds one
# with pip wheel) is installed offline, with --no-index: the package and every
# dependency exactly as tested, and no index needed. Without one, pip installs
# from PyPI. The glob lets the folder be absent; pyproject.toml beside it keeps
# the COPY from matching nothing.
COPY pyproject.toml wheelhouse* /wheels/
# The virtualenv lives at the same path in both stages: its scripts name their
# interpreter by absolute path, and the final stage has the same Python there.
RUN python3 -m venv /opt/baxo-mqtt \
    && if ls /wheels/*.whl >/dev/null 2>&1; then \
         /opt/baxo-mqtt/bin/pip install --no-index --find-links /wheels baxo-mqtt; \
       else \
         /opt/baxo-mqtt/bin/pip install /src; \
       fi \
    && /opt/baxo-mqtt/bin/python -m compileall -q /opt/baxo-mqtt/lib

# --- runtime: the slim base, the virtualenv, a user without privileges ------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="baxo-mqtt" \
      org.opencontainers.image.description="Bridge BAXO Connect measuring instruments to MQTT" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric id, so orchestrators can check runAsNonRoot and file owners
# on mounted secrets can be planned.
RUN groupadd --system --gid 10001 baxo-mqtt \
    && useradd --system --uid 10001 --gid baxo-mqtt --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin baxo-mqtt \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/baxo-mqtt

COPY --from=build /opt/baxo-mqtt /opt/baxo-mqtt
COPY deploy/image-config.toml /etc/baxo-mqtt/config.toml

# Metrics bind to 127.0.0.1 by default, which nothing outside the container can
# reach; here Prometheus needs them on every interface. (A variable wins over the
# file, so only this one setting is forced; log.format "auto" already picks JSON
# when there is no terminal.)
#
# STATE_DIRECTORY is where state.dir = "" looks first (as under systemd's
# StateDirectory=): history cursors and the Sparkplug bdSeq must outlive the
# container, so they live on the volume below.
ENV PATH=/opt/baxo-mqtt/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BAXO_MQTT_METRICS__HOST=0.0.0.0 \
    STATE_DIRECTORY=/var/lib/baxo-mqtt

# A new named volume starts as a copy of this directory, owned by the bridge's
# user; a bind mount must be made writable for uid 10001 by its owner.
VOLUME ["/var/lib/baxo-mqtt"]

USER 10001:10001
EXPOSE 9877

# The daemon publishes "offline" and exits 0 on SIGTERM within 5 seconds.
STOPSIGNAL SIGTERM

# /healthz answers 200 while the bridge is connected and polling (or starting),
# 503 otherwise. The slim image has no curl: Python's urllib asks instead, and
# raises (exit 1) on a 503 or a refused connection. It follows a port moved with
# BAXO_MQTT_METRICS__PORT; a port moved in the TOML file needs a matching
# healthcheck in compose (or --health-cmd).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BAXO_MQTT_METRICS__PORT', '9877') + '/healthz', timeout=4)"]

ENTRYPOINT ["baxo-mqtt"]
CMD ["run", "-c", "/etc/baxo-mqtt/config.toml"]
