"""Shared pytest set-up. The plugins below (servers and network fixtures) serve every layer;
each layer's conftest.py imports the data fixtures its tests share from tests/support."""

pytest_plugins: list[str] = []
pytest_plugins += ["tests.support.servers", "tests.support.network"]
