"""Multipart forms for the OPEA routes that take files (DocSum, FaqGen, dataprep): every file and
field checked before anything is sent, files read off the event loop, a fresh form per attempt."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from ..._exceptions import ConfigurationError
from ..._http import _json

# A file to send: a path, or (file name, content) with an optional content type.
FileSpec = str | os.PathLike[str] | tuple[str, bytes] | tuple[str, bytes, str]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _form_text(what: str, text: str, *, header: bool = False) -> str:
    """Text for a multipart form, checked before anything is sent: aiohttp refuses what it
    cannot write only when it writes the form. Names and content types go into part headers."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigurationError(f"{what} is not valid text: {exc}") from exc
    if header and _CONTROL.search(text):
        raise ConfigurationError(f"{what} holds a control character (CR, LF, NUL...)")
    return text


def _form_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = _json.dumps(value).decode()
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"form field {name!r} cannot be sent: {exc}") from exc
    return _form_text(f"form field {name!r}", text)


# A checked file: (name, content or the path to read it from, content type).
CheckedFile = tuple[str, bytes | Path, str]


def check_files(files: Sequence[FileSpec] | None) -> list[CheckedFile]:
    """Check the file list before anything is sent; paths must name existing files."""
    if files is None:
        return []
    if isinstance(files, (str, bytes, os.PathLike)) or not isinstance(files, Sequence):
        raise ConfigurationError("files must be a list of paths or (name, bytes) tuples")
    checked: list[CheckedFile] = []
    for i, item in enumerate(files):
        source: bytes | Path
        if isinstance(item, tuple):
            if len(item) not in (2, 3) or not isinstance(item[0], str) or not item[0]:
                raise ConfigurationError(f"files[{i}] must be (name, bytes) or (name, bytes, type)")
            name, content = item[0], item[1]
            if not isinstance(content, (bytes, bytearray)):
                raise ConfigurationError(f"files[{i}] content must be bytes")
            ctype = item[2] if len(item) == 3 else None
            if ctype is not None and not isinstance(ctype, str):
                raise ConfigurationError(f"files[{i}] content type must be a string")
            source = bytes(content)
        elif isinstance(item, (str, os.PathLike)):
            source = Path(item)
            try:
                found = source.is_file()
            except OSError:  # say, a name too long for the file system
                found = False
            if not found:
                raise ConfigurationError(f"files[{i}] is not a readable file: {str(source)!r}")
            name, ctype = source.name, None
        else:
            raise ConfigurationError(f"files[{i}] must be a path or a (name, bytes) tuple")
        _form_text(f"files[{i}] name", name, header=True)
        if ctype is not None:
            _form_text(f"files[{i}] content type", ctype, header=True)
        checked.append((name, source, ctype or mimetypes.guess_type(name)[0] or "text/plain"))
    return checked


async def read_files(files: list[CheckedFile]) -> list[tuple[str, bytes, str]]:
    """The files' contents, paths read off the event loop."""
    loaded: list[tuple[str, bytes, str]] = []
    for name, source, ctype in files:
        if isinstance(source, Path):
            try:
                source = await asyncio.to_thread(source.read_bytes)
            except OSError as exc:
                raise ConfigurationError(f"file {name!r} cannot be read: {exc}") from exc
        loaded.append((name, source, ctype))
    return loaded


def form_fields(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The form's text fields, checked now (before anything is sent); None values are left out."""
    items = []
    for key, value in fields.items():
        if value is None:
            continue
        if not isinstance(key, str) or not key:
            raise ConfigurationError(f"form field names must be non-empty strings, not {key!r}")
        _form_text(f"form field name {key!r}", key, header=True)
        items.append((key, _form_value(key, value)))
    return items


def form_builder(
    items: list[tuple[str, str]], files: list[tuple[str, bytes, str]]
) -> Callable[[], aiohttp.FormData]:
    """A FormData is consumed when sent, so every attempt gets a fresh one."""

    def build() -> aiohttp.FormData:
        try:
            form = aiohttp.FormData(default_to_multipart=True)
        except TypeError:  # aiohttp < 3.10: urlencoded without files, which OPEA also reads
            form = aiohttp.FormData()
        for key, value in items:
            form.add_field(key, value)
        for name, data, ctype in files:
            form.add_field("files", data, filename=name, content_type=ctype)
        return form

    return build


def lazy_form(items: list[tuple[str, str]], files: list[CheckedFile]) -> Callable[[], Any]:
    """For a stream, which cannot await before it starts: the files are read on the first
    attempt, and each attempt still gets a fresh form."""
    built: list[Callable[[], aiohttp.FormData]] = []

    async def form() -> aiohttp.FormData:
        if not built:
            built.append(form_builder(items, await read_files(files)))
        return built[0]()

    return form
