"""Helpers shared by the test tiers: daemon processes, registries, images, namespaces."""
