"""Registry credentials (from the pull request or a Docker config.json) and auth challenges.

kubelet passes credentials in PullImageRequest.auth: username/password, `auth` (base64 of
user:password), an identity token (an OAuth2 refresh token for the registry's token
endpoint) or a registry token (a bearer token used as is). Without those, the configured
config.json is looked up by registry host, as docker and CRI-O do, through the credential
helper it names for the host (cri_shim/image/credhelper.py) or its "auths" entries.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cri_shim.errors import InvalidArgument
from cri_shim.image import credhelper

_PARAM = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token or self.registry_token)

    def basic(self) -> str:
        """The value of a Basic Authorization header."""
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


ANONYMOUS = Credentials()


def _decode_auth(auth: str, where: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(auth, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(f"{where}: auth is not base64 of user:password") from None
    user, sep, password = text.partition(":")
    if not sep:
        raise InvalidArgument(f"{where}: auth is not base64 of user:password")
    return user, password


def from_request(auth: Any) -> Credentials:
    """Credentials from a CRI AuthConfig message (all fields may be empty)."""
    if auth is None:
        return ANONYMOUS
    user, password = auth.username, auth.password
    if auth.auth and not user:
        user, password = _decode_auth(auth.auth, "PullImageRequest.auth")
    return Credentials(user, password, auth.identity_token, auth.registry_token)


def _host_of(key: str) -> str:
    """The registry host of a config.json key ("https://index.docker.io/v1/" -> docker.io)."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def _server_url(host: str) -> str:
    """The server URL docker stores credentials of host under (a helper's lookup key)."""
    return "https://index.docker.io/v1/" if host == "docker.io" else host


def from_auth_file(path: str, host: str) -> Credentials:
    """Credentials for host in a Docker-style config.json: its credential helper (credHelpers
    by host, else credsStore), else its entry in "auths" ({"auths": {host: {...}}})."""
    if not path:
        return ANONYMOUS
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return ANONYMOUS
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"images.auth_file {path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"images.auth_file {path}: not a JSON object")
    helpers = data.get("credHelpers") or {}
    helper = next((name for key, name in helpers.items() if _host_of(key) == host), None) if isinstance(helpers, dict) else None
    helper = helper or data.get("credsStore")
    if isinstance(helper, str) and helper:
        found = credhelper.get(helper, _server_url(host))
        if found is not None:
            user, secret = found
            return Credentials(identity_token=secret) if user == "<token>" else Credentials(user, secret)
    for key, entry in (data.get("auths") or {}).items():
        if _host_of(key) != host or not isinstance(entry, dict):
            continue
        user, password = entry.get("username", ""), entry.get("password", "")
        if entry.get("auth"):
            user, password = _decode_auth(entry["auth"], f"{path} entry {key}")
        return Credentials(user, password, entry.get("identitytoken", ""), entry.get("registrytoken", ""))
    return ANONYMOUS


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """The first challenge of a WWW-Authenticate header (`Bearer realm="...",service="..."`)."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)
