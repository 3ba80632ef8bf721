"""Which part of the Responses API a server serves, and ``client.responses`` on its clients.

Kept apart from ``asyncllm._wire.responses`` (the bodies, the typed replies and the calls), which
loads on the first ``client.responses``: constructing a client that serves the Responses API
then costs only this module, not the pydantic models of a part most chat users never call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .._exceptions import ConfigurationError
from .._http._backend import HttpBackend

if TYPE_CHECKING:
    from .responses import Responses

# -- what each server serves ------------------------------------------------------------------


@dataclass(frozen=True)
class ResponsesSupport:
    """The part of the Responses API a server serves, from its own documentation.

    ``instructions``, ``text_format`` (structured output in ``text.format``),
    ``previous_response_id``, ``store``, ``background`` and ``builtin_tools`` (``web_search``,
    ``file_search``, ``code_interpreter``... passed through as given) are create's parameters;
    ``retrieve``, ``cancel``, ``delete``, ``input_items`` and ``input_tokens`` the other calls.
    ``note`` is added to the error for what is missing (say, a server flag that enables it).
    """

    vendor: str
    instructions: bool = True
    text_format: bool = True
    previous_response_id: bool = True
    store: bool = True
    background: bool = True
    builtin_tools: bool = True
    retrieve: bool = True
    cancel: bool = True
    delete: bool = True
    input_items: bool = True
    input_tokens: bool = True
    note: str = ""

    def require(self, feature: str, what: str) -> None:
        """Raise ``ConfigurationError`` if this server lacks ``feature`` (a field name)."""
        if not getattr(self, feature):
            raise ConfigurationError(
                f"{self.vendor}'s Responses API has no {what}"
                + (f": {self.note}" if self.note else "")
            )


# OpenAI: everything.
OPENAI_RESPONSES = ResponsesSupport("OpenAI")
# vLLM: create and stream, retrieve and cancel; store, previous_response_id and background only
# on a server started with VLLM_ENABLE_RESPONSES_API_STORE=1 (without it, store is ignored and
# background answers 400). No delete, input items or token counting.
VLLM_RESPONSES = ResponsesSupport(
    "vLLM",
    delete=False,
    input_items=False,
    input_tokens=False,
    note="vLLM serves create, stream, retrieve and cancel (store, previous_response_id and "
    "background need a server started with VLLM_ENABLE_RESPONSES_API_STORE=1)",
)
# OVMS /v3/responses: create and stream with function tools only; the documented list of
# parameters it does not take includes instructions, previous_response_id, text, store and
# background. No other route.
OVMS_RESPONSES = ResponsesSupport(
    "OVMS",
    instructions=False,
    text_format=False,
    previous_response_id=False,
    store=False,
    background=False,
    builtin_tools=False,
    retrieve=False,
    cancel=False,
    delete=False,
    input_items=False,
    input_tokens=False,
    note="OVMS serves create and stream with function tools (instructions go in the input as "
    "a system message; response_format for chat does structured output)",
)
# Groq: create and stream, structured output and its built-in tools; no stored state at all.
GROQ_RESPONSES = ResponsesSupport(
    "Groq",
    previous_response_id=False,
    store=False,
    background=False,
    retrieve=False,
    cancel=False,
    delete=False,
    input_items=False,
    input_tokens=False,
    note="Groq keeps no state: send the whole conversation as input",
)


class ServesResponses(HttpBackend):
    """A client whose server serves the Responses API: ``client.responses``."""

    responses_path: ClassVar[str] = "/responses"
    responses_support: ClassVar[ResponsesSupport] = OPENAI_RESPONSES

    @property
    def responses(self) -> Responses:
        """The Responses API: ``create``, ``stream``, ``retrieve``, ``cancel``, ``delete``,
        ``input_items.list`` and ``input_tokens.count``, as this server serves them."""
        from .responses import Responses  # loaded on first use: see the docstring

        return Responses(self)
