"""Values a container request hands to the kernel and runc as they are: ids, C strings, argv.

Checked before anything is made, so a request the kernel would refuse gets INVALID_ARGUMENT
naming the field, instead of runc failing half-way (INTERNAL) or an exec failing (E2BIG):
- uids and gids are 32-bit and (uid_t)-1 means "no change" to the kernel: 0..2^32-2;
- no string of the config may hold NUL: args, env, paths, names and profile references all
  become C strings (runc refuses NUL in env; elsewhere it would cut the string short);
- an argv and environment must fit execve: each string under MAX_ARG_STRLEN, all of them and
  their pointers under ARG_MAX as this host sets it (the container inherits its stack limit).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cri_shim.api import api_pb2
from cri_shim.errors import InvalidArgument

MAX_ID = 2**32 - 2
# The kernel's MAX_ARG_STRLEN (32 pages) counts the terminating NUL.
MAX_ARG_STRLEN = 32 * 4096
POINTER_BYTES = 8


def check_id(what: str, value: int) -> None:
    """InvalidArgument unless value is a uid or gid the kernel can set."""
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"{what} {value} is out of range (0..{MAX_ID})")


def _strings(message: Message, path: str) -> Iterator[tuple[str, str]]:
    """(field path, value) of every string set in message, map keys and values included."""
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                yield f"{name} key", key
                if isinstance(item, Message):
                    yield from _strings(item, f"{name}[{key!r}]")
                elif isinstance(item, str):
                    yield f"{name}[{key!r}]", item
            continue
        items = value if field.is_repeated else [value]
        for i, item in enumerate(items):
            where = f"{name}[{i}]" if field.is_repeated else name
            if field.type == FieldDescriptor.TYPE_STRING:
                yield where, item
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                yield from _strings(item, where)


def check_config(config: api_pb2.ContainerConfig) -> None:
    """Refuses NUL in any string of the config and ids out of range."""
    for where, value in _strings(config, ""):
        if "\x00" in value:
            raise InvalidArgument(f"{where} must not contain NUL")
    sc = config.linux.security_context
    if sc.HasField("run_as_user"):
        check_id("run_as_user", sc.run_as_user.value)
    if sc.HasField("run_as_group"):
        check_id("run_as_group", sc.run_as_group.value)
    for gid in sc.supplemental_groups:
        check_id("supplemental group", gid)


def check_exec(argv: Iterable[str], env: Iterable[str] = ()) -> None:
    """Refuses an argv and environment execve would fail with (NUL, E2BIG)."""
    total = 0
    for kind, strings in (("argument", argv), ("environment entry", env)):
        for i, value in enumerate(strings):
            if "\x00" in value:
                raise InvalidArgument(f"{kind} {i} must not contain NUL")
            size = len(value.encode()) + 1
            if size > MAX_ARG_STRLEN:
                raise InvalidArgument(f"{kind} {i} is {size} bytes, over the kernel's {MAX_ARG_STRLEN} per string")
            total += size + POINTER_BYTES
    limit = os.sysconf("SC_ARG_MAX")
    if total > limit:
        raise InvalidArgument(f"arguments and environment take {total} bytes, over this host's ARG_MAX of {limit}")
