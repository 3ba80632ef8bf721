"""``asyncllm._wire.parts``: image and file parts read once for every backend, from a table."""

from __future__ import annotations

import re
from typing import Any

import pytest

import asyncllm
from asyncllm._wire.parts import Media, read_media

B64 = "aGVsbG8="  # b"hello"


def image(url: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def file(**spec: Any) -> dict[str, Any]:
    return {"type": "file", "file": spec}


@pytest.mark.parametrize(
    ("part", "media"),
    [
        (image(f"data:image/PNG;base64,{B64}"), Media("image", media_type="image/png", data=B64)),
        (image("https://x.invalid/a.jpg", detail="low"),
         Media("image", media_type="image/jpeg", url="https://x.invalid/a.jpg", detail="low")),
        ({"type": "image_url", "image_url": "http://x.invalid/a"},
         Media("image", url="http://x.invalid/a")),
        (file(file_data=f"data:application/pdf;base64,{B64}", filename="a.pdf"),
         Media("document", media_type="application/pdf", data=B64, filename="a.pdf")),
        (file(file_data=B64, filename="notes.txt"),
         Media("document", media_type="text/plain", data=B64, filename="notes.txt")),
        (file(file_data=B64), Media("document", media_type="application/pdf", data=B64)),
        (file(file_data=B64, filename="a.docx"), Media("document", data=B64, filename="a.docx")),
        (file(file_url="https://x.invalid/get?name=a.pdf"),
         Media("document", url="https://x.invalid/get?name=a.pdf")),
        (file(file_id="file-1"), Media("document", file_id="file-1")),
        (file(file_url="https://x.invalid/p.pdf"),
         Media("document", media_type="application/pdf", url="https://x.invalid/p.pdf")),
    ],
)  # fmt: skip
def test_a_part_is_read(part: dict[str, Any], media: Media) -> None:
    assert read_media(part, "here") == media


@pytest.mark.parametrize(
    ("part", "says"),
    [
        (image(None), "needs a url"),
        (image(""), "needs a url"),
        (image("ftp://x.invalid/a.png"), "data: URL or an http"),
        (image("data:image/png,rawbytes"), "data: URL or an http"),
        (image(f"data:image/png;base64,{B64}!"), "not valid base64"),
        (image("https://x.invalid/a", detail=3), "detail must be a string"),
        ({"type": "file"}, "needs a 'file' object"),
        (file(), "one of file_data, file_id, file_url"),
        (file(file_data=B64, file_id="f"), "one of file_data, file_id, file_url"),
        (file(file_data="not base64!"), "not valid base64"),
        (file(file_id=""), "file_id must be a non-empty string"),
        (file(file_url="file:///etc/passwd"), "file_url must be an http(s) URL"),
        (file(file_data=B64, filename=7), "filename must be a non-empty string"),
    ],
)  # fmt: skip
def test_a_malformed_part_is_refused_naming_where(part: dict[str, Any], says: str) -> None:
    with pytest.raises(asyncllm.ConfigurationError, match=re.escape(says)) as info:
        read_media(part, "messages[2].content[1]")
    assert str(info.value).startswith("messages[2].content[1]: ")
