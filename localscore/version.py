"""The version, the package's only copy (pyproject.toml reads it from here): outputs record it, so it stands on the
ground floor, where the layers that make outputs can import it."""

__version__ = "0.1.0"
