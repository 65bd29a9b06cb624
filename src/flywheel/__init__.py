"""flywheel: run, journal and recover the omc-flywheel pipelines (see `flywheel.api` and `flywheel.cli`)."""

# The same as pyproject.toml's version (tests/test_version.py checks). Every run records it; reading it
# here rather than through importlib.metadata saves that module's imports (~20-40 ms) at each `flywheel run`.
__version__ = "0.1.0"
