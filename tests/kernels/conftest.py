"""Fixtures for every kernel test."""
import pytest


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    monkeypatch.delenv("SIGNGD_KERNEL", raising=False)
