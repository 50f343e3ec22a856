# vivace in one image: the CLI, the run-history server, and what a Dask worker needs to run vivace
# tasks. Every role in docker-compose.yml uses it: `vivace server start`, `dask scheduler`,
# `dask worker`, and flows run with `python`.
#
#   docker build -t vivace .                              # extras: postgres, dask, server
#   docker build -t vivace --build-arg WITH_RAY=true .    # and ray
#   docker build -t vivace --build-arg WITH_KUBERNETES=true .   # and kubernetes (Jobs)
#   docker run --rm vivace vivace --help
#
# The default command serves the history on port 4200. It refuses to listen beyond the container
# without an API key: pass one (-e VIVACE_API_KEYS=admin:<key of 16+ characters>) or override the
# command with --allow-unauthenticated. VIVACE_DATABASE_URL names the database (PostgreSQL when
# several containers share it; without it, SQLite under VIVACE_HOME inside the container).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG WITH_RAY=false
ARG WITH_KUBERNETES=false
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vivace ./vivace
# A virtual environment, so the runtime stage copies exactly what was installed.
RUN extras="postgres,dask,server"; \
    if [ "$WITH_RAY" = "true" ]; then extras="$extras,ray"; fi; \
    if [ "$WITH_KUBERNETES" = "true" ]; then extras="$extras,kubernetes"; fi; \
    python -m venv /opt/vivace \
    && /opt/vivace/bin/pip install "/src[$extras]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/vivace/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VIVACE_HOME=/home/vivace/.vivace
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin vivace
COPY --from=build /opt/vivace /opt/vivace
COPY --chown=vivace:vivace examples /home/vivace/examples
USER vivace
WORKDIR /home/vivace
EXPOSE 4200
CMD ["vivace", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
