"""The OCI runtime spec (config.json) of a container, built from CRI and image configuration.

spec.build_spec() is the entry point; the other modules each own one group of rules
(process, user, mounts, namespaces, resources, security, seccomp) so each can be read and
tested alone against the dict it produces.
"""
