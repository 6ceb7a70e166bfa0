"""What the store accepts: keys, values, versions and cursors, each refused with an error
that names the field; and how values and cursors are encoded."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from modhub.store.errors import InvalidKey, InvalidValue, ValueTooLarge, VersionConflict

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 1024 * 1024  # the largest value, as compact JSON (UTF-8 bytes)
MAX_PAGE = 1000
MAX_TTL = 100 * 365 * 24 * 3600  # seconds: 100 years (a date must stay one)


def check_version(if_version: int | None) -> None:
    if if_version is not None and (
        isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0
    ):
        raise InvalidValue(f"if_version must be a whole number >= 0, not {if_version!r}")


def expect(key: str, if_version: int | None, current: int) -> None:
    if if_version is not None and if_version != current:
        state = "is absent (version 0)" if current == 0 else f"is at version {current}"
        raise VersionConflict(f"'{key}' {state}, not at the expected version {if_version}")


def encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_key(key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"a key is a non-empty string, not {key!r}")
    if not encodable(key):
        raise InvalidKey(f"key {key!r} is not valid Unicode (a lone surrogate)")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(
            f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8, not {len(key.encode())}"
        )
    if "\x00" in key:
        raise InvalidKey(f"key {key!r} contains NUL, which no key may")


def encode(key: str, value: Any) -> str:
    try:
        data = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        size = len(data.encode())
    except (TypeError, ValueError, RecursionError) as exc:
        # ValueError covers NaN and integers past Python's digit limit; UnicodeEncodeError
        # (a ValueError) a lone surrogate in a string.
        raise InvalidValue(f"the value of '{key}' is not JSON: {exc}") from None
    if size > MAX_VALUE_BYTES:
        raise ValueTooLarge(
            f"the value of '{key}' is {size} bytes as JSON, over the {MAX_VALUE_BYTES} allowed"
        )
    return data


def successor(prefix: str) -> str | None:
    """Return the first string after every string starting with `prefix`, or None."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    return stripped[:-1] + chr(0xE000 if 0xD800 <= last < 0xE000 else last)


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_cursor(cursor: Any) -> str:
    bad = InvalidValue(f"cursor {cursor!r} is not one this store gave")
    if not isinstance(cursor, str) or not cursor:
        raise bad
    try:
        key = base64.b64decode(cursor.encode("ascii"), altchars=b"-_", validate=True).decode()
        check_key(key)
    except (binascii.Error, UnicodeError, InvalidKey):
        raise bad from None
    if encode_cursor(key) != cursor:
        raise bad
    return key
