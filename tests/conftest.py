"""Test-wide settings: hypothesis runs are derandomized and keep no example database (deterministic, offline)."""

from hypothesis import settings

settings.register_profile("rftkit", derandomize=True, database=None, print_blob=False)
settings.load_profile("rftkit")
