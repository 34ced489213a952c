"""Runners: load an artifact in its own runtime and generate greedily from token ids."""
