"""The mappings of a pod user namespace: what kubelet and critest send passes, the rest is refused."""

from __future__ import annotations

import pytest

from cri_shim import idmappings
from cri_shim.api import api_pb2 as api
from cri_shim.errors import InvalidArgument
from cri_shim.idmappings import IdMappings, Mapping

pytestmark = pytest.mark.unit


def options(uids: list[tuple[int, int, int]], gids: list[tuple[int, int, int]] | None = None, mode: int = api.POD,
            **modes: int) -> api.NamespaceOption:
    def ids(triples: list[tuple[int, int, int]]) -> list[api.IDMapping]:
        return [api.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in triples]
    return api.NamespaceOption(userns_options=api.UserNamespace(mode=mode, uids=ids(uids), gids=ids(uids if gids is None else gids)),
                               **modes)


def test_kubelets_and_critests_mappings_pass() -> None:
    assert idmappings.check(options([(0, 65536, 65536)])) == IdMappings((Mapping(0, 65536, 65536),), (Mapping(0, 65536, 65536),))
    ids = idmappings.check(options([(0, 1000, 100000)], [(0, 2000, 100000)]))
    assert ids is not None and ids.root() == (1000, 2000)
    assert ids.oci() == {"uidMappings": [{"containerID": 0, "hostID": 1000, "size": 100000}],
                         "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 100000}]}
    top = 2**32 - 1 - 65536
    assert idmappings.check(options([(0, top, 65536)])) is not None  # the last mappable id is 2^32-2


def test_no_user_namespace_of_its_own() -> None:
    assert idmappings.check(api.NamespaceOption()) is None
    assert idmappings.check(api.NamespaceOption(userns_options=api.UserNamespace(mode=api.NODE))) is None


@pytest.mark.parametrize("opts,message", [
    (options([]), "exactly one uid"),
    (options([(0, 65536, 65536)], []), "exactly one gid"),
    (options([(0, 65536, 65536), (65536, 200000, 65536)]), "exactly one uid"),
    (options([(1, 65536, 65536)]), "container id 0"),
    (options([(0, 65536, 0)]), "at least 65536"),
    (options([(0, 65536, 65535)]), "at least 65536"),
    (options([(0, 0, 65536)]), "host id 0"),
    (options([(0, 2**32 - 65536, 65536)]), "32-bit"),
    (options([(0, 1, 2**32 - 1)]), "32-bit"),
    (options([(0, 65536, 65536)], mode=api.CONTAINER), "CONTAINER"),
    (options([(0, 65536, 65536)], mode=api.TARGET), "TARGET"),
    (options([(0, 65536, 65536)], mode=17), "17"),
    (options([(0, 65536, 65536)], mode=api.NODE), "NODE takes no"),
    (options([(0, 65536, 65536)], network=api.NODE), "network"),
    (options([(0, 65536, 65536)], ipc=api.NODE), "ipc"),
    (options([(0, 65536, 65536)], pid=api.NODE), "pid"),
])
def test_the_rest_is_invalid(opts: api.NamespaceOption, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        idmappings.check(opts)


def test_a_mounts_mappings_are_compared_with_the_pods() -> None:
    ids = idmappings.check(options([(0, 65536, 65536)]))
    assert ids is not None
    same = [api.IDMapping(container_id=0, host_id=65536, length=65536)]
    other = [api.IDMapping(container_id=0, host_id=131072, length=65536)]
    assert ids.same_as(same, same)
    assert not ids.same_as(same, other) and not ids.same_as(other, same) and not ids.same_as([], [])
