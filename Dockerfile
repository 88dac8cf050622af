# The operator image: the `medusa-operator` controller only (no ML stack; the Jobs use the
# builder image in builder/Dockerfile).
#   docker build -t medusa-operator:0.1.0 .
# It cannot be built on the project's development machines (no container engine there); the
# chart runs it as UID 65532 with a read-only root filesystem.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY builder ./builder
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN medusa-operator --help > /dev/null
USER 65532:65532
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080 8081
ENTRYPOINT ["medusa-operator"]
CMD ["run", "--all-namespaces"]
