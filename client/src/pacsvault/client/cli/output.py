"""What every command prints the same way: JSON with real numbers, progress bars on terminals."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from tqdm import tqdm

_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}
_WELL_KNOWN = "google.protobuf."  # Timestamp and friends keep their JSON form (RFC 3339 text)


def as_json(message: Message, enum_prefixes: dict[str, str] | None = None) -> dict[str, Any]:
    """A message as JSON: .proto field names, every field, 64-bit integers as numbers (protobuf's
    JSON mapping writes them as strings), and enums named in ``enum_prefixes`` as plain words."""
    body = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return _numbers(message.DESCRIPTOR, body, enum_prefixes or {})  # type: ignore[arg-type]


def _numbers(descriptor: Descriptor, body: dict[str, Any], enums: dict[str, str]) -> dict[str, Any]:
    for field in descriptor.fields:
        if field.name not in body:
            continue
        value = body[field.name]
        repeated = field.is_repeated
        nested = field.message_type
        if nested is not None and nested.GetOptions().map_entry:
            continue  # the only maps (metrics) hold doubles, already numbers
        if nested is not None and not nested.full_name.startswith(_WELL_KNOWN):
            body[field.name] = ([_numbers(nested, v, enums) for v in value] if repeated
                                else _numbers(nested, value, enums))
        elif field.type in _INT64:
            body[field.name] = [int(v) for v in value] if repeated else int(value)
        elif field.enum_type is not None and field.name in enums:
            prefix = enums[field.name]
            body[field.name] = ([v.removeprefix(prefix).lower() for v in value] if repeated
                                else value.removeprefix(prefix).lower())
    return body


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress_bar(total: float | None, unit: str, desc: str = "",
                 *, enabled: bool = True) -> tqdm:  # type: ignore[type-arg]
    """A bar on stderr, drawn only when stderr is a terminal (never into logs or pipes)."""
    return tqdm(total=total, unit=unit, desc=desc or None, file=sys.stderr, dynamic_ncols=True,
                disable=not (enabled and on_terminal()))


def say(bar: tqdm, line: str, *, err: bool = False) -> None:  # type: ignore[type-arg]
    """Prints a line without tearing the progress bar."""
    bar.write(line, file=sys.stderr if err else sys.stdout)


def add_wait_flags(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--wait", dest="wait", action="store_true", default=None,
                       help=f"follow {what} until it is done (the default when stderr is a terminal, "
                            "with a progress bar)")
    group.add_argument("--no-wait", dest="wait", action="store_false", help="return as soon as it started")


def should_wait(args: argparse.Namespace) -> bool:
    return on_terminal() if args.wait is None else bool(args.wait)


def follow(bar: tqdm, poll: Callable[[], tuple[int, bool, str]],  # type: ignore[type-arg]
           interval_s: float = 1.0) -> None:
    """Polls ``poll`` -> (work left, finished, a word of state) into ``bar`` until finished."""
    start = bar.total
    while True:
        left, finished, state = poll()
        if start is None:
            start = bar.total = max(left, 1)
        bar.n = max(0, start - left)
        bar.set_postfix_str(state, refresh=False)
        bar.refresh()
        if finished:
            return
        time.sleep(interval_s)
