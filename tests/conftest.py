"""Shared fixtures. Each real component has its own fixture module under tests/fixtures/."""

pytest_plugins = [
    "fixtures.cluster",
    "fixtures.s3",
    "fixtures.model",
    "fixtures.triton",
    "fixtures.operator",
    "fixtures.interpreter",
]


def pytest_collection_modifyitems(items: list) -> None:
    """Tests marked host_state start and stop a real node of their own; a machine holds one real
    node at a time, so they run first, before the session's cluster starts its own."""
    items.sort(key=lambda item: item.get_closest_marker("host_state") is None)
