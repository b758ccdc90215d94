"""A test certificate authority made with openssl: server and client certificates it signs.

    pki = Pki(workdir)
    cert, key = pki.issue("registry", ["IP:127.0.0.1", "DNS:registry.test"])
    cert, key = pki.issue("node", [], client=True)
    pki.ca   # the CA certificate (PEM) to trust
"""

from __future__ import annotations

import subprocess
from pathlib import Path

KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Pki:
    def __init__(self, workdir: Path, name: str = "cri-shim-test-ca") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / f"{name}.crt"
        self.ca_key = self.dir / f"{name}.key"
        _openssl("req", "-x509", *KEY, "-keyout", str(self.ca_key), "-out", str(self.ca), "-days", "2", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str, sans: list[str], client: bool = False) -> tuple[Path, Path]:
        """(certificate, key) for name, signed by this CA, for a server (with these subject
        alternative names) or a client."""
        cert, key, csr, ext = (self.dir / f"{name}.{suffix}" for suffix in ("crt", "key", "csr", "ext"))
        _openssl("req", *KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        lines = [f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}"]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca), "-CAkey", str(self.ca_key), "-CAcreateserial",
                 "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return cert, key
