"""Test-wide settings: hypothesis runs are derandomized, keep no example database and have no per-example deadline
(deterministic, offline, and independent of how fast the machine is)."""

from hypothesis import settings

settings.register_profile("rftkit", derandomize=True, database=None, print_blob=False, deadline=None)  # no per-example time limit: a slower machine must pass too
settings.load_profile("rftkit")
