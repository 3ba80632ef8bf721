"""The request ID travels in a ContextVar, so it follows the caller into tasks it creates."""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .._constants import REQUEST_ID_HEADER
from .._exceptions import ConfigurationError

_request_id: ContextVar[str | None] = ContextVar("asyncllm_request_id", default=None)


# IDs need to be unique, not secret: a private generator seeded from os.urandom is half the
# cost of secrets.token_hex. Private, so a caller's random.seed() cannot make IDs repeat, and
# reseeded in a forked child so that parent and child never share a sequence.
_ids = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.seed)
_bits = _ids.getrandbits


def new_request_id() -> str:
    return f"req_{_bits(96):024x}"


# RFC 9110: a field name is a token; a value holds no control character but HTAB.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_header_value(name: str, value: str) -> str:
    """Refuse values that would split a header (CR/LF), hold other control characters or are
    not text UTF-8 can carry, before anything is sent. The value is never shown: it may be a key."""
    if not isinstance(value, str):
        raise ConfigurationError(f"header {name!r} must be a str, not {type(value).__name__}")
    if _CONTROL.search(value):
        raise ConfigurationError(f"header {name!r} contains a control character (CR, LF, NUL...)")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigurationError(f"header {name!r} is not valid text") from None
    return value


def check_header_name(name: Any) -> str:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ConfigurationError(f"{name!r} is not a valid HTTP header name")
    return name


# Headers the SDK or the HTTP layer own. Framing and hop-by-hop headers describe the connection
# and the body aiohttp builds (a caller's Content-Length made aiohttp drop the JSON body); the
# request-ID header must carry the ID the call, its errors and the tracker report.
_FRAMING_HEADERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    }
)
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.lower()


def _check_owned_header(name: str, what: str) -> None:
    lowered = name.lower()
    if lowered in _FRAMING_HEADERS:
        raise ConfigurationError(
            f"{what} must not set {name!r}: framing and connection headers are set by the HTTP "
            "layer from the request it sends"
        )
    if lowered == _REQUEST_ID_HEADER:
        raise ConfigurationError(
            f"{what} must not set {name!r}: asyncllm sends each call's request ID there; set the "
            "ID with `with asyncllm.request_context(request_id): ...`"
        )


def check_headers(headers: Any, what: str) -> dict[str, str]:
    """``headers`` (a mapping) checked name by name and value by value; framing headers
    (Content-Length, Transfer-Encoding, Host, Connection and the other hop-by-hop ones) and the
    request-ID header are refused."""
    if not isinstance(headers, Mapping):
        raise ConfigurationError(f"{what} must be a mapping of header names to values")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        check_header_name(name)
        _check_owned_header(name, what)
        checked[name] = check_header_value(name, value)
    return checked


def current_request_id() -> str | None:
    """The request ID of the enclosing ``request_context``, if any."""
    return _request_id.get()


@contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Give every call made inside the block (and in tasks started from it) one request ID.

    The ID is sent as ``X-Request-ID`` and appears on log records, errors, responses and the
    tracker. One is generated when none is given.
    """
    rid = new_request_id() if request_id is None else check_header_value("request_id", request_id)
    token = _request_id.set(rid)
    try:
        yield rid
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current one, or "-") to records that lack it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get() or "-"
        return True
