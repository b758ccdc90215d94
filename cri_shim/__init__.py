"""cri-shim: a Kubernetes container runtime speaking CRI runtime.v1 over a unix socket."""

__version__ = "0.1.0"
