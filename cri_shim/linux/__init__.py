"""Thin, typed access to the Linux interfaces Python's standard library lacks (namespaces, mounts, /proc)."""
