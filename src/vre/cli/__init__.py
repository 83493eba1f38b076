"""The ``vre`` command."""
