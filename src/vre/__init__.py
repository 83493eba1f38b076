"""Virtual Research Environment."""

__version__ = "0.1.0"
