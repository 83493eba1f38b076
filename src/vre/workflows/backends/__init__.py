"""Compute backends: where one step's commands run."""
