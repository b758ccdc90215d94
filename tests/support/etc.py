"""A root filesystem holding only /etc/passwd and /etc/group, for spec rules that read them."""

from __future__ import annotations

from pathlib import Path


def minimal_rootfs(root: Path, passwd: str, group: str) -> Path:
    """root with the given passwd and group files; returns root."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(passwd)
    (root / "etc/group").write_text(group)
    return root
