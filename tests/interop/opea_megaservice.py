"""ChatQnA- and CodeGen-shaped megaservices on OPEA's own runtime (``opea-comps``), for
``test_opea_comps.py``. It runs in the ``opea`` interop environment, as its own process.

Our wiring, written for these tests after reading how GenAIExamples' ChatQnA and CodeGen
megaservices use ``ServiceOrchestrator`` and ``MicroService``: the same request and answer shapes
at the gateway (an OpenAI chat request in; an OpenAI chat answer, or OPEA's event stream, out),
the same microservice calls (TEI's ``/embed`` and ``/rerank``, OPEA's ``/v1/retrieval``,
``/v1/guardrails`` and LLM service, vLLM's ``/v1/chat/completions``), and the orchestrator's own
streaming, error and guardrail handling, which is what the tests are about. Our prompt templates
and parameter defaults are our own.

Usage: ``python opea_megaservice.py '<json>'`` where the JSON names the base URLs of the services
(``tei``, ``vllm``, ``opea``, and ``down``: a loopback port where nothing listens). The gateway
listens on a free loopback port and prints ``{"port": N}`` on a line of its own once it accepts
connections. Routes, each one megaservice::

    /v1/chatqna                  embedding -> retriever -> rerank -> LLM (vLLM)
    /guarded/v1/chatqna          guardrail -> embedding -> retriever -> rerank -> LLM
    /retriever-down/v1/chatqna   as /v1/chatqna, with the retriever at the "down" URL
    /llm-down/v1/chatqna         as /v1/chatqna, with the LLM at the "down" URL
    /v1/codegen                  LLM (OPEA's LLM service); with ``index_name``:
                                 embedding (OpenAI-style) -> retriever -> LLM
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from comps import MicroService, ServiceOrchestrator, ServiceRoleType, ServiceType
from comps.cores.mega.utils import handle_message
from comps.cores.proto.api_protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatMessage,
    UsageInfo,
)
from comps.cores.proto.docarray import LLMParams, RerankerParms, RetrieverParms
from fastapi import Request
from fastapi.responses import StreamingResponse

LLM_MODEL = "fake-opea-llm"


def rag_prompt(question: str, context: list[str], template: str | None) -> str:
    """The LLM's prompt: the user's ``template`` when it names ``{question}`` (and maybe
    ``{context}``), else ours. The fakes echo it, so the tests can see what reached the LLM."""
    joined = " | ".join(context)
    if template and "{question}" in template:
        return template.replace("{context}", joined).replace("{question}", question)
    return f"Context: {joined}\nQuestion: {question}"


def remote(name: str, url: str, endpoint: str, kind: ServiceType) -> MicroService:
    """A microservice the orchestrator calls at ``url`` + ``endpoint``."""
    parts = urlsplit(url)
    return MicroService(
        name=name,
        host=parts.hostname,
        port=parts.port,
        endpoint=endpoint,
        use_remote_service=True,
        service_type=kind,
    )


class ChatQnAFlow(ServiceOrchestrator):
    """How ChatQnA turns one service's answer into the next one's request."""

    def align_inputs(self, inputs: Any, cur_node: str, runtime_graph: Any, llm: dict, **kw: Any):
        kind = self.services[cur_node].service_type
        if kind == ServiceType.EMBEDDING:  # TEI's /embed
            return {"inputs": inputs["text"]}
        if kind == ServiceType.RETRIEVER:
            params = kw.get("retriever_parameters")
            return {**inputs, **(params.model_dump() if params else {})}
        if kind == ServiceType.LLM:  # an OpenAI chat request, as vLLM takes it
            return {
                "model": LLM_MODEL,
                "messages": [{"role": "user", "content": inputs["prompt"]}],
                "max_tokens": llm["max_tokens"],
                "temperature": llm["temperature"],
                "top_p": llm["top_p"],
                "stream": llm["stream"],
            }
        return inputs

    def align_outputs(
        self, data: Any, cur_node: str, inputs: Any, runtime_graph: Any, llm: dict, **kw: Any
    ):
        kind = self.services[cur_node].service_type
        if kind == ServiceType.EMBEDDING:  # TEI answers one vector per input
            return {"text": inputs["inputs"], "embedding": data[0]}
        if kind == ServiceType.RETRIEVER:
            texts = [doc["text"] for doc in data["retrieved_docs"]]
            question = data["initial_query"]
            if texts:
                return {"query": question, "texts": texts}
            # Nothing found: skip the reranker and prompt the LLM without context.
            for reranker in list(runtime_graph.downstream(cur_node)):
                for after in runtime_graph.downstream(reranker):
                    runtime_graph.add_edge(cur_node, after)
                runtime_graph.delete_node_if_exists(reranker)
            return {"prompt": rag_prompt(question, [], llm["chat_template"])}
        if kind == ServiceType.RERANK:  # TEI answers [{"index", "score"}], best first
            params = kw.get("reranker_parameters")
            best = [inputs["texts"][hit["index"]] for hit in data[: params.top_n if params else 1]]
            return {"prompt": rag_prompt(inputs["query"], best, llm["chat_template"])}
        if kind == ServiceType.LLM and not llm["stream"]:
            return {"text": data["choices"][0]["message"]["content"]}
        return data

    def align_generator(self, gen: Any, **kw: Any):
        """vLLM's OpenAI chunks as ChatQnA streams them: each delta's text as ``repr`` of its
        UTF-8 bytes, and ``[DONE]`` at the end whatever came before."""
        for raw in gen:
            line = raw.decode("utf-8")
            start, end = line.find("{"), line.rfind("}")
            if start < 0 or end < start:
                continue
            try:
                chunk = json.loads(line[start : end + 1])
            except ValueError:
                continue
            choices = chunk.get("choices") or []
            content = choices[0].get("delta", {}).get("content") if choices else None
            if isinstance(content, str):
                yield f"data: {content.encode('utf-8')!r}\n\n"
        yield "data: [DONE]\n\n"


class CodeGenFlow(ServiceOrchestrator):
    """CodeGen: the prompt to OPEA's LLM service, grounded in retrieved code with ``index_name``.
    Its stream is the LLM service's own, passed through."""

    def align_inputs(self, inputs: Any, cur_node: str, runtime_graph: Any, llm: dict, **kw: Any):
        kind = self.services[cur_node].service_type
        if kind == ServiceType.EMBEDDING:  # OpenAI-style embeddings
            return {"input": inputs["query"]}
        if kind == ServiceType.RETRIEVER:
            return {
                "index_name": llm["index_name"],
                "text": kw["query"],
                "embedding": inputs["data"][0]["embedding"],
            }
        if kind == ServiceType.LLM:
            if "retrieved_docs" in inputs:
                prompt = rag_prompt(
                    kw["query"], [d["text"] for d in inputs["retrieved_docs"]], None
                )
            else:
                prompt = inputs["query"]
            return {
                "model": LLM_MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": llm["max_tokens"],
                "temperature": llm["temperature"],
                "top_p": llm["top_p"],
                "stream": llm["stream"],
            }
        return inputs


def llm_parameters(request: ChatCompletionRequest, stream: bool) -> LLMParams:
    return LLMParams(
        max_tokens=request.max_tokens or 1024,
        top_k=request.top_k or 10,
        top_p=request.top_p or 0.95,
        temperature=request.temperature or 0.01,
        repetition_penalty=request.repetition_penalty or 1.03,
        stream=stream,
        chat_template=request.chat_template or None,
        model=request.model or None,
        index_name=request.index_name,
    )


def chat_answer(text: str, model: str) -> ChatCompletionResponse:
    choice = ChatCompletionResponseChoice(
        index=0, message=ChatMessage(role="assistant", content=text), finish_reason="stop"
    )
    return ChatCompletionResponse(model=model, choices=[choice], usage=UsageInfo())


def chatqna_handler(flow: ChatQnAFlow):
    """A ChatQnA gateway route: a request the gateway cannot read raises, and so does a
    microservice that fails; the runtime answers both with a bare 500."""

    async def handle(request: Request):
        data = await request.json()
        chat = ChatCompletionRequest.model_validate(data)
        results, graph = await flow.schedule(
            initial_inputs={"text": handle_message(chat.messages)},
            llm_parameters=llm_parameters(chat, data.get("stream", True)),
            retriever_parameters=RetrieverParms(
                search_type=chat.search_type or "similarity", k=chat.k or 4
            ),
            reranker_parameters=RerankerParms(top_n=chat.top_n or 1),
        )
        for answer in results.values():
            if isinstance(answer, StreamingResponse):
                return answer
        return chat_answer(results[graph.all_leaves()[-1]]["text"], "chatqna")

    return handle


def codegen_handler(llm_only: CodeGenFlow, grounded: CodeGenFlow):
    async def handle(request: Request):
        data = await request.json()
        chat = ChatCompletionRequest.model_validate(data)
        params = llm_parameters(chat, data.get("stream", True))
        query = handle_message(chat.messages)
        flow = grounded if params.index_name else llm_only
        results, graph = await flow.schedule(
            initial_inputs={"query": query}, llm_parameters=params, query=query
        )
        for answer in results.values():
            if isinstance(answer, StreamingResponse):
                return answer
        last = results[graph.all_leaves()[-1]]
        return chat_answer(last["choices"][0]["message"]["content"], "codegen")

    return handle


def chatqna(
    urls: dict[str, str], *, guarded: bool = False, retriever: str = "", llm: str = ""
) -> ChatQnAFlow:
    flow = ChatQnAFlow()
    steps = [
        remote("embedding", urls["tei"], "/embed", ServiceType.EMBEDDING),
        remote("retriever", retriever or urls["opea"], "/v1/retrieval", ServiceType.RETRIEVER),
        remote("rerank", urls["tei"], "/rerank", ServiceType.RERANK),
        remote("llm", llm or urls["vllm"], "/v1/chat/completions", ServiceType.LLM),
    ]
    if guarded:
        steps.insert(
            0, remote("guardrail_in", urls["opea"], "/v1/guardrails", ServiceType.GUARDRAIL)
        )
    for step in steps:
        flow.add(step)
    for before, after in itertools.pairwise(steps):
        flow.flow_to(before, after)
    return flow


def main() -> None:
    urls = json.loads(sys.argv[1])
    llm = remote("llm", urls["opea"], "/v1/chat/completions", ServiceType.LLM)
    llm_only = CodeGenFlow().add(llm)
    grounded = CodeGenFlow()
    embedding = remote("embedding", urls["opea"], "/v1/embeddings", ServiceType.EMBEDDING)
    retriever = remote("retriever", urls["opea"], "/v1/retrieval", ServiceType.RETRIEVER)
    grounded.add(embedding).add(retriever).add(llm)
    grounded.flow_to(embedding, retriever)
    grounded.flow_to(retriever, llm)

    gateway = MicroService(
        "OPEAInteropGateway",
        service_role=ServiceRoleType.MEGASERVICE,
        host="127.0.0.1",
        port=0,  # a free port, printed below
        endpoint="/v1/chatqna",
        input_datatype=ChatCompletionRequest,
        output_datatype=ChatCompletionResponse,
    )
    routes = {
        "/v1/chatqna": chatqna_handler(chatqna(urls)),
        "/guarded/v1/chatqna": chatqna_handler(chatqna(urls, guarded=True)),
        "/retriever-down/v1/chatqna": chatqna_handler(chatqna(urls, retriever=urls["down"])),
        "/llm-down/v1/chatqna": chatqna_handler(chatqna(urls, llm=urls["down"])),
        "/v1/codegen": codegen_handler(llm_only, grounded),
    }
    for path, handler in routes.items():
        gateway.add_route(path, handler, methods=["POST"])
    # The server is bound by now (MicroService sets it up); its socket names the port.
    port = gateway.server.servers[0].sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    gateway.start()


if __name__ == "__main__":
    main()
