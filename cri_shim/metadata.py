"""Bounds on what clients attach to pods and containers: metadata names, labels and annotations.

Everything bounded here is stored in records, echoed in every List response and (for pod
names, namespaces and uids) passed to CNI plugins in their environment, so nothing unbounded
may get past RunPodSandbox or CreateContainer. The bounds are Kubernetes' own, so that no pod
the API server accepts is refused:
- a pod name is a DNS subdomain (at most 253 characters), a namespace a DNS label (63), a uid
  a UUID (36; 128 allowed for clients that make their own); a container name is a DNS label in
  Kubernetes, but CRI clients such as critest use longer ones, so it gets the subdomain's 253;
- labels: a key is a qualified name (a 253-character DNS-subdomain prefix, '/', a 63-character
  name); a value is at most 63 characters in Kubernetes, but kubelet's own labels carry the pod
  name (io.kubernetes.pod.name), so 253 here;
- annotations, and labels, total at most 256 KiB of keys plus values each (Kubernetes'
  TotalAnnotationSizeLimitB), for pods and containers alike.
Only the character checks that matter to this runtime are made (names name files and CNI_ARGS
entries: no '/', NUL, ';' or '='), not Kubernetes' full syntax, which critest's names break.
Refusals never echo the whole value: a 128 KiB name would make the status itself too large.
"""

from __future__ import annotations

from collections.abc import Mapping

from cri_shim.errors import InvalidArgument

MAX_POD_NAME_BYTES = 253
MAX_NAMESPACE_BYTES = 63
MAX_UID_BYTES = 128
MAX_CONTAINER_NAME_BYTES = 253
MAX_LABEL_KEY_BYTES = 253 + 1 + 63
MAX_LABEL_VALUE_BYTES = 253
MAX_LABELS_BYTES = 256 * 1024
MAX_ANNOTATIONS_BYTES = 256 * 1024

# Characters a metadata name must not hold: '/' (names are joined into paths), NUL (a C string's
# end), ';' and '=' (CNI_ARGS is "K=V;K=V": a pod named "x;IP=10.0.0.9" would choose its address).
FORBIDDEN = ("/", "\x00", ";", "=")

ECHO_CHARS = 64


def clip(value: str, limit: int = ECHO_CHARS) -> str:
    """value quoted for a message, cut to its first limit characters with its full length noted."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value.encode())} bytes)"


def check_name(what: str, value: str, max_bytes: int) -> None:
    """A metadata name: non-empty, at most max_bytes, none of FORBIDDEN (InvalidArgument)."""
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    size = len(value.encode())
    if size > max_bytes:
        raise InvalidArgument(f"{what} is {size} bytes, over the {max_bytes}-byte limit")
    bad = [c for c in FORBIDDEN if c in value]
    if bad:
        shown = " ".join("NUL" if c == "\x00" else repr(c) for c in bad)
        raise InvalidArgument(f"{what} {clip(value)} must not contain {shown}")


def size(pairs: Mapping[str, str]) -> int:
    """Keys plus values in bytes, as Kubernetes counts annotations."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in pairs.items())


def check_labels_and_annotations(what: str, labels: Mapping[str, str], annotations: Mapping[str, str]) -> None:
    """The labels and annotations of a pod or container within the bounds above (InvalidArgument)."""
    for key, value in labels.items():
        if not key or len(key.encode()) > MAX_LABEL_KEY_BYTES:
            raise InvalidArgument(f"{what} labels: key {clip(key)} must be 1 to {MAX_LABEL_KEY_BYTES} bytes")
        if len(value.encode()) > MAX_LABEL_VALUE_BYTES:
            raise InvalidArgument(f"{what} labels: {clip(key)} has a value of {len(value.encode())} bytes, "
                                  f"over the {MAX_LABEL_VALUE_BYTES}-byte limit")
    for kind, pairs, limit in (("labels", labels, MAX_LABELS_BYTES), ("annotations", annotations, MAX_ANNOTATIONS_BYTES)):
        total = size(pairs)
        if total > limit:
            raise InvalidArgument(f"{what} {kind} total {total} bytes, over the {limit}-byte limit")
