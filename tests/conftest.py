"""Shared pytest set-up. Fixture modules of each area are listed in pytest_plugins."""

pytest_plugins: list[str] = []
pytest_plugins += ["tests.servers"]
