"""Shared pytest configuration. rsca_core, pages and app are importable through `pip install -e .`."""
