"""Media content parts in the common (OpenAI) form, read once for every backend.

A message's ``content`` may hold, besides text parts:

- ``{"type": "image_url", "image_url": {"url": ...}}``: a ``data:`` URL (base64) or an
  http(s) URL;
- ``{"type": "file", "file": {...}}``: a document (a PDF, say), with ``file_data`` (a base64
  ``data:`` URL, or bare base64 with a ``filename`` whose extension names its type, a PDF
  without one), ``file_id`` (a file
  uploaded to the vendor), or ``file_url`` (an http(s) URL: not OpenAI's chat form, but what
  Claude's and Gemini's APIs take).

``read_media`` turns such a part into a ``Media``, checked, so that each backend only writes it
in its own form (or raises ``ConfigurationError`` naming the part and itself, via ``refuse``).
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._exceptions import ConfigurationError

MEDIA_PARTS = frozenset({"image_url", "file"})
DATA_URL = re.compile(r"data:(?P<media>[^;,]+)(?:;[^;,]*)*;base64,(?P<data>.*)", re.DOTALL)
# What a document is taken to be when nothing names its type (OpenAI's file parts are PDFs).
DEFAULT_DOCUMENT_TYPE = "application/pdf"
# The media types named by the extensions the vendors' image and document inputs take. A table of
# our own: the standard library's mimetypes reads the system's files on first use, which would
# block the event loop.
MEDIA_TYPES = {
    ".pdf": "application/pdf",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".html": "text/html",
    ".csv": "text/csv",
    ".json": "application/json",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}


@dataclass(frozen=True, slots=True)
class Media:
    """An image or a document, as one of: inline ``data`` (base64, with its ``media_type``), an
    http(s) ``url``, or a vendor's ``file_id``. ``filename`` and ``detail`` where given; for a
    URL or an id, ``media_type`` is what the name's extension says (None if nothing)."""

    kind: Literal["image", "document"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    file_id: str | None = None
    filename: str | None = None
    detail: str | None = None

    @property
    def part_type(self) -> str:
        """The common-form part type it came from, for error messages."""
        return "image_url" if self.kind == "image" else "file"


def refuse(media: Media | str, backend: str, where: str, how: str = "") -> ConfigurationError:
    """The error for a part a backend cannot take: it names the part, the backend and, in
    ``how``, what would do instead."""
    kind = media if isinstance(media, str) else media.part_type
    return ConfigurationError(f"{where}: {backend} cannot take {kind!r} parts{how}")


def _base64(where: str, text: str) -> str:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"{where}: the data is not valid base64") from exc
    return text


def _guess(name: str | None) -> str | None:
    """The media type a file name or URL path names by its extension (``MEDIA_TYPES``), if any."""
    if not name:
        return None
    path = name.split("?", 1)[0].split("#", 1)[0]
    return MEDIA_TYPES.get(posixpath.splitext(path)[1].lower())


def _http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def read_media(part: Mapping[str, Any], where: str) -> Media:
    """The ``Media`` an ``image_url`` or ``file`` part stands for; a malformed one (no URL, a
    URL that is neither ``data:`` base64 nor http(s), bad base64, no data, id or URL) raises
    ConfigurationError naming ``where``."""
    if part.get("type") == "image_url":
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, Mapping) else spec
        detail = spec.get("detail") if isinstance(spec, Mapping) else None
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"{where}: an image_url part needs a url")
        if detail is not None and not isinstance(detail, str):
            raise ConfigurationError(f"{where}: image_url detail must be a string")
        if _http(url):
            return Media("image", media_type=_guess(url), url=url, detail=detail)
        match = DATA_URL.fullmatch(url)
        if match is None:
            raise ConfigurationError(
                f"{where}: an image URL must be a base64 data: URL or an http(s) URL"
            )
        return Media(
            "image",
            media_type=match["media"].lower(),
            data=_base64(where, match["data"]),
            detail=detail,
        )
    spec = part.get("file")
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where}: a file part needs a 'file' object")
    filename, data = spec.get("filename"), spec.get("file_data")
    file_id, url = spec.get("file_id"), spec.get("file_url")
    for name, value in (("filename", filename), ("file_data", data), ("file_id", file_id)):
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"{where}: file.{name} must be a non-empty string")
    if url is not None and (not isinstance(url, str) or not _http(url)):
        raise ConfigurationError(f"{where}: file.file_url must be an http(s) URL")
    if sum(v is not None for v in (data, file_id, url)) != 1:
        raise ConfigurationError(f"{where}: a file part needs one of file_data, file_id, file_url")
    guessed = _guess(filename or url)
    if data is None:
        return Media("document", media_type=guessed, url=url, file_id=file_id, filename=filename)
    match = DATA_URL.fullmatch(data)
    # Bare base64 takes its type from the file name; with no name, it is taken for a PDF.
    media_type = match["media"].lower() if match else guessed
    if media_type is None and filename is None:
        media_type = DEFAULT_DOCUMENT_TYPE
    raw = match["data"] if match else data
    return Media("document", media_type=media_type, data=_base64(where, raw), filename=filename)
