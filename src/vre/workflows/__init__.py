"""Reproducible workflows: reana.yaml specifications, runs, workspaces and staging."""
