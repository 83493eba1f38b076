"""Workflow engines: the order in which steps run."""
