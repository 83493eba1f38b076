"""The native REST API under /api/v1."""
