"""The data lake: scopes, DIDs, metadata, RSEs, storage and replicas."""
