"""Shared fixtures. Each real component has its own fixture module under tests/fixtures/."""

pytest_plugins = [
    "fixtures.cluster",
    "fixtures.s3",
    "fixtures.model",
    "fixtures.triton",
    "fixtures.operator",
]
