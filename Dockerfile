# syntax=docker/dockerfile:1
# The operator image: the `medusa-operator` controller only (no ML stack; the Jobs and serving
# pods use the builder and serving images: builder/Dockerfile, builder/reference.Dockerfile and
# runtime/Dockerfile).
#   docker build -t medusa-operator:0.1.0 .
# The chart runs it as UID 65532 with a read-only root filesystem and an emptyDir at /tmp (HOME).
# hack/images.py builds it here on a locally made Debian base (BASE_IMAGE); any base with
# Python 3.11 and its venv module works.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp

# Dependencies first, exactly as pinned, so that a source change reuses this layer; pip itself
# first, so that the pinned pip installs the rest.
WORKDIR /opt/medusa/src
COPY operator/requirements.txt ./operator/
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv \
 && pip install --no-input "$(grep '^pip==' operator/requirements.txt)" \
 && pip install --no-input --no-deps --requirement operator/requirements.txt

# The project, with nothing more from the network: a dependency the pins lack fails here.
# pyproject.toml names README.md as the long description; an empty one serves, so that editing
# the README does not change the image.
COPY pyproject.toml ./
COPY common ./common
COPY operator ./operator
RUN touch README.md \
 && pip install --no-input --no-index --no-build-isolation ./common . \
 && pip check \
 && cd / && rm -rf /opt/medusa \
 && medusa-operator --help > /dev/null

USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["medusa-operator"]
CMD ["run", "--all-namespaces"]
