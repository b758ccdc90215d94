"""The one table from the runtime's errors to gRPC codes, and domain code kept free of grpc."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

from cri_shim import errors
from cri_shim.image.content import DigestMismatch
from cri_shim.oci.rootpath import EscapeError
from cri_shim.runtime.runc import RuncError
from cri_shim.status import CODES, status_of

pytestmark = pytest.mark.unit


def _kinds() -> list[type[errors.CriError]]:
    return [k for k in vars(errors).values() if isinstance(k, type) and issubclass(k, errors.CriError) and k is not errors.CriError]


def test_every_error_kind_has_its_own_code() -> None:
    """A new kind added to errors.py without a row here would answer UNKNOWN: refuse that."""
    kinds = _kinds()
    assert sorted(k.__name__ for k in kinds) == sorted(k.__name__ for k in CODES)
    assert len(set(CODES.values())) == len(CODES)
    for kind in kinds:
        code, message = status_of(kind("why"))
        assert code == CODES[kind] and message == "why"


@pytest.mark.parametrize(("exc", "code"), [
    (RuncError("runc create failed: x", "x"), grpc.StatusCode.INTERNAL),
    (EscapeError("path escapes"), grpc.StatusCode.INVALID_ARGUMENT),
    (DigestMismatch("digest"), grpc.StatusCode.INTERNAL),
    (errors.CriError("bare"), grpc.StatusCode.UNKNOWN),
    (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED),
    (ValueError("bug"), grpc.StatusCode.UNKNOWN),
])
def test_derived_kinds_take_their_base_code(exc: BaseException, code: grpc.StatusCode) -> None:
    assert status_of(exc)[0] == code


def test_domain_modules_do_not_load_grpc() -> None:
    """Only the server and the table import the transport; the domain managers run without it."""
    probe = ("import sys\n"
             "import cri_shim.sandbox.manager, cri_shim.runtime.manager, cri_shim.image.pull, cri_shim.oci.spec\n"
             "print('grpc' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
