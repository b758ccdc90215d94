"""Durable records of sandboxes, containers and images, and their in-memory indexes."""
