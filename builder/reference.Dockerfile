# syntax=docker/dockerfile:1
# The reference builder image: the reference serving image (runtime/Dockerfile) plus the
# `medusa-builder` steps (medusa-builder with its `runtime` extra: the reference backend's build
# and package steps and the tuning steps load the PyTorch runtime). The reference backend's Jobs
# run `medusa-builder <step>` from it, and so does the init container that fetches a serving
# pod's model repository. Built on the serving image, it shares that image's layers on a node.
#   docker build -f runtime/Dockerfile -t medusa-reference-serving:0.1.0 .
#   docker build -f builder/reference.Dockerfile --build-arg BASE_IMAGE=medusa-reference-serving:0.1.0 \
#       -t medusa-reference-builder:0.1.0 .
# It runs as UID 1000 (the serving image's user) with a read-only root filesystem and writes only
# where a pod mounts an emptyDir: /tmp (HOME and every cache) and /work (the steps' --work-dir).
ARG BASE_IMAGE=ghcr.io/medusa-operator/medusa-reference-serving:0.1.0
FROM ${BASE_IMAGE}

USER root
# What the builder adds to the serving image's environment, exactly as pinned (the serving
# image's pins hold for everything both need).
WORKDIR /opt/medusa/src
COPY builder/reference-requirements.txt ./builder/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-input --no-deps --requirement builder/reference-requirements.txt

# The steps, with nothing more from the network: medusa-common and medusa-runtime are the serving
# image's; a dependency the pins lack fails here.
COPY builder/pyproject.toml ./builder/
COPY builder/medusa_builder ./builder/medusa_builder
RUN pip install --no-input --no-index --no-build-isolation "./builder[runtime]" \
 && pip check \
 && cd / && rm -rf /opt/medusa \
 && medusa-builder --help > /dev/null

USER 1000:1000
WORKDIR /work
CMD ["medusa-builder", "--help"]
