"""Building blocks for tests that drive clients through a MockTransport (no I/O)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncllm
from asyncllm.testing import MockResponse, MockTransport

USER = [{"role": "user", "content": "hi"}]


def chat_json(text: str = "ok") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def ok(text: str = "ok") -> MockResponse:
    return MockResponse(200, json=chat_json(text), headers={"x-request-id": "srv-1"})


def client(
    handler: Callable[[Any], MockResponse | Awaitable[MockResponse]],
    dispatcher: asyncllm.Dispatcher | None = None,
    **kwargs: Any,
) -> asyncllm.OpenAI:
    kwargs.setdefault("retry", asyncllm.RetryConfig(initial_delay=0.0, max_delay=0.0))
    return asyncllm.OpenAI(
        api_key="sk-test-secret",
        base_url="http://mock.invalid/v1",
        transport=MockTransport(handler),
        dispatcher=dispatcher or asyncllm.Dispatcher(),
        **kwargs,
    )


class Gate:
    """A handler that holds every request until released, recording arrival order."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.release = asyncio.Event()
        self.running = 0
        self.max_running = 0

    async def __call__(self, request: Any) -> MockResponse:
        self.arrived.append(request.json()["messages"][0]["content"])
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return ok()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "asyncllm test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
