"""Keep the test suite out of the user's home: caches go to a per-run temporary folder."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_home(tmp_path_factory):
    """Point $XDG_CACHE_HOME (read by the text-row cache, inherited by spawned nodes) at a
    temporary folder for the whole run."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache_home"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
