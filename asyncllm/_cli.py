"""The ``asyncllm`` command line: chat, batch, fake-server and bench.

Only argparse and the core package load for ``--help`` and argument errors: a backend module
loads when its client is made, and ``rich`` (the ``cli`` extra) only to draw on a terminal, so the
command starts fast and works without the extra. Keys and base URLs come from the environment
variables the clients read (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ...): no key is ever taken
on the command line, where shell history and ``ps`` would show it.

Exit codes: 0 done (items that failed are lines of the output, counted in the summary), 1 an
unexpected error, 2 bad input or settings (nothing sent, nothing written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pkgutil
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncllm

from . import batch
from ._config import RetryConfig
from ._exceptions import AsyncLLMError, ConfigurationError

# The names --backend takes, and the client each makes (loaded only then).
BACKENDS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "claude": "Claude",
    "groq": "Groq",
    "gemini": "Gemini",
    "ollama": "Ollama",
    "tgi": "TGI",
    "tei": "TEI",
    "vllm": "VLLM",
    "ovms": "OVMS",
    "opea": "OPEA",
}
# The embedded fakes, by protocol: the modules of asyncllm.testing.fakes, listed without
# importing them (or aiohttp's server), so that --help stays light.
PROTOCOLS = tuple(
    sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent / "testing" / "fakes")])
        if not m.name.startswith("_")
    )
)
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# Keys of a batch input line that are not chat parameters.
LINE_KEYS = frozenset({"id", "messages", "prompt", "input", "model"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        """One line, not argparse's usage block: the error is what a reader needs to see."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="asyncllm",
        description="Chat, batch runs, benchmarks and fake servers, through asyncllm's clients.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def client_options(p: argparse.ArgumentParser, *, model_required: bool = True) -> None:
        p.add_argument("--backend", default="openai", help=f"one of: {', '.join(BACKENDS)}")
        p.add_argument(
            "--model",
            required=model_required,
            help="model name" + ("" if model_required else " (lines may name their own)"),
        )
        p.add_argument(
            "--base-url", help="server URL (default: the backend's variable, or its API)"
        )
        p.add_argument("--max-retries", type=int, help="retries per call (default: the client's)")
        p.add_argument("--timeout", type=float, help="seconds per attempt")

    chat = commands.add_parser("chat", help="stream one answer to the terminal")
    client_options(chat)
    chat.add_argument("prompt", nargs="?", help="the prompt (default: read from stdin)")
    chat.add_argument("--system", help="a system message")
    chat.set_defaults(handler=_chat)

    run = commands.add_parser(
        "batch",
        help="run a JSONL file of requests, writing a JSONL file of answers",
        description=(
            "Each input line is a JSON object: messages (or prompt; input with --embed), an "
            "optional id and model, and any chat parameter (temperature, max_tokens, ...). "
            "Each output line: id, index and response or error, written as calls finish."
        ),
    )
    run.add_argument("input", type=Path)
    run.add_argument("output", type=Path)
    client_options(run, model_required=False)
    run.add_argument("--concurrency", type=int, default=8, help="calls in flight at once")
    run.add_argument("--resume", action="store_true", help="skip items the output already holds")
    run.add_argument("--ordered", action="store_true", help="sort the output by input order")
    run.add_argument("--embed", action="store_true", help="embed each line's input, not chat")
    run.set_defaults(handler=_batch)

    fake = commands.add_parser("fake-server", help="serve an embedded fake until Ctrl-C")
    fake.add_argument("protocol", help=f"one of: {', '.join(PROTOCOLS)}")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=8000, help="0 for any free port")
    fake.add_argument("--latency", type=float, default=0.0, help="milliseconds per request")
    fake.add_argument("--fault-rate", type=float, default=0.0, help="share answered with an error")
    fake.add_argument("--fault-status", default="500,502,503", help="statuses the errors draw from")
    fake.add_argument(
        "--rate-limit-rate", type=float, default=0.0, help="share answered 429 (Retry-After: 0)"
    )
    fake.add_argument("--drop-rate", type=float, default=0.0, help="share of dropped connections")
    fake.add_argument("--seed", type=int, default=0, help="seed of the faults' random draws")
    fake.set_defaults(handler=_fake_server)

    bench = commands.add_parser("bench", help="throughput and latency of chat calls")
    client_options(bench)
    bench.add_argument("--concurrency", type=int, default=8, help="calls in flight at once")
    bench.add_argument("--requests", type=int, default=200, help="calls in all")
    bench.add_argument("--prompt", default="Say hello.", help="the prompt of every call")
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigurationError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except AsyncLLMError as exc:
        _say(f"error: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    except OSError as exc:  # say, an output in a folder that does not exist
        _say(f"error: {exc}")
        return EXIT_ERROR
    return code


def _say(message: str) -> None:
    print(f"asyncllm: {message}", file=sys.stderr)


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on a new event loop; Ctrl-C cancels it (its cleanup runs, so calls in
    flight end and connections close) and then raises KeyboardInterrupt.

    Python 3.11's ``asyncio.Runner`` does this itself. On 3.10 ``asyncio.run`` lets the
    KeyboardInterrupt land wherever the loop happens to be, possibly inside a callback of the
    transport, so SIGINT is turned into the same cancellation here.
    """
    if sys.version_info >= (3, 11):
        with asyncio.Runner() as runner:
            return runner.run(main)
    loop = asyncio.new_event_loop()  # pragma: no cover - Python 3.10
    asyncio.set_event_loop(loop)
    task = loop.create_task(main)
    try:
        # Windows, or not the main thread: KeyboardInterrupt as asyncio.run gives it.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, task.cancel)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            raise KeyboardInterrupt from None
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
        rest = asyncio.all_tasks(loop)
        for t in rest:
            t.cancel()
        if rest:
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()


def _client_name(backend: str) -> str:
    name = BACKENDS.get(backend)
    if name is None:
        raise ConfigurationError(
            f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}"
        )
    return name


def _client(args: argparse.Namespace, **options: Any) -> Any:
    """The client --backend names, made from the options given and the environment. An unknown
    backend or a missing key is a ConfigurationError naming it."""
    name = _client_name(args.backend)
    if args.base_url:
        options["base_url"] = args.base_url
    if args.max_retries is not None:
        options["retry"] = RetryConfig(max_retries=args.max_retries)
    if args.timeout is not None:
        options["timeout"] = args.timeout
    return getattr(asyncllm, name)(**options)


# -- chat -------------------------------------------------------------------------------------


def _chat(args: argparse.Namespace) -> int:
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    messages = [{"role": "user", "content": prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    client = _client(args)

    async def stream() -> int:
        async with client, client.stream_chat(messages, model=args.model) as chunks:
            async for chunk in chunks:
                sys.stdout.write(chunk.delta)
                sys.stdout.flush()
        sys.stdout.write("\n")
        return 0

    try:
        return _run(stream())
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return EXIT_INTERRUPTED


# -- batch ------------------------------------------------------------------------------------


def _check_input(path: Path, embed: bool, model: str | None) -> int:
    """Read the input once before anything is sent: a bad line is refused with its number while
    the output is untouched. Returns the number of items."""
    if not path.is_file():
        raise ConfigurationError(f"{path}: no such file")
    n = 0
    for number, line in batch._numbered_jsonl(path):
        n += 1
        where = f"{path}:{number}"
        if embed:
            if not isinstance(line.get("input"), (str, list)):
                raise ConfigurationError(f"{where}: needs 'input', a string or a list of them")
        elif not isinstance(line.get("messages"), list) and not isinstance(line.get("prompt"), str):
            raise ConfigurationError(f"{where}: needs 'messages' (a list) or 'prompt' (a string)")
        if model is None and not isinstance(line.get("model"), str):
            raise ConfigurationError(f"{where}: names no model, and no --model was given")
    return n


@dataclass
class _Seen:
    """The last progress report, for the message after an interruption."""

    progress: batch.BatchProgress | None = None


def _display(total: int) -> batch.Progress | None:
    """A progress bar on a terminal (rich's if installed, else a line of text); none otherwise."""
    if not sys.stderr.isatty():
        return None
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    except ImportError:
        return batch.TextProgress()
    bar = Progress(
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[line]}"),
        console=Console(stderr=True),
    )
    task = bar.add_task("batch", total=total, line="")

    def show(p: batch.BatchProgress) -> None:
        bar.start()  # at the first report: a run refused before it starts draws nothing
        eta = "-" if p.eta is None else batch._clock_text(p.eta)
        line = (
            f"{p.failed} failed  {p.retried} retried  {p.calls_per_second:.1f} calls/s  ETA {eta}"
        )
        bar.update(task, completed=p.done + p.skipped, line=line)
        if p.final:
            bar.stop()

    return show


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column table: rich's on a terminal (if installed), plain text otherwise."""
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title)
            table.add_column("")
            table.add_column("", justify="right")
            for name, value in rows:
                table.add_row(name, value)
            Console().print(table)
            return
    print(batch._two_columns(rows))


def _batch(args: argparse.Namespace) -> int:
    if args.concurrency < 1:
        raise ConfigurationError("--concurrency must be at least 1")
    _client_name(args.backend)  # an unknown backend is refused before the input is read
    if args.output.exists() and not args.resume:
        raise ConfigurationError(f"{args.output} exists: pass --resume or choose another output")
    total = _check_input(args.input, args.embed, args.model)
    client = _client(args, max_concurrent_requests=args.concurrency)
    if args.embed and not hasattr(client, "embed"):
        raise ConfigurationError(f"backend {args.backend!r} has no embed")
    default_model = args.model
    seen = _Seen()
    display = _display(total)

    def report(p: batch.BatchProgress) -> None:
        seen.progress = p
        if display is not None:
            display(p)

    async def call(line: dict[str, Any]) -> Any:
        model = line.get("model", default_model)
        if args.embed:
            return await client.embed(line["input"], model=model)
        messages = line.get("messages") or [{"role": "user", "content": line["prompt"]}]
        params = {k: v for k, v in line.items() if k not in LINE_KEYS}
        return await client.chat(messages, model=model, **params)

    async def go() -> int:
        async with client:
            summary = await batch.run(
                call,
                batch.read_jsonl(args.input),
                args.output,
                window=2 * args.concurrency,
                resume=args.resume,
                ordered_output=args.ordered,
                # A line's bad parameter (a TypeError before anything is sent) is its own error.
                capture=(AsyncLLMError, TypeError),
                id_of=lambda line: line.get("id"),
                total=total,
                progress=report,
                dispatcher=client.dispatcher,
            )
        _print_table(f"asyncllm batch: {args.output}", summary.rows())
        return 0

    try:
        return _run(go())
    except KeyboardInterrupt:
        p = seen.progress
        written = 0 if p is None else p.done + p.skipped
        _say(
            f"interrupted: {written} of {total} items in {args.output}; "
            "run again with --resume to finish"
        )
        return EXIT_INTERRUPTED


# -- fake-server ------------------------------------------------------------------------------


def _fake_server(args: argparse.Namespace) -> int:
    from .testing import FakeServer, Faults

    if args.protocol not in PROTOCOLS:
        raise ConfigurationError(
            f"unknown protocol {args.protocol!r}; choose one of: {', '.join(PROTOCOLS)}"
        )
    try:
        statuses = tuple(int(s) for s in args.fault_status.split(","))
    except ValueError:
        raise ConfigurationError("--fault-status must be statuses separated by commas") from None
    for option in ("fault_rate", "rate_limit_rate", "drop_rate"):
        if not 0 <= getattr(args, option) <= 1:
            raise ConfigurationError(f"--{option.replace('_', '-')} must be between 0 and 1")
    faults = Faults(
        error_rate=args.fault_rate,
        error_statuses=statuses,
        rate_limit_rate=args.rate_limit_rate,
        drop_rate=args.drop_rate,
        latency=args.latency / 1000,
    )

    async def serve() -> int:
        server = FakeServer(
            args.protocol, faults=faults, seed=args.seed, host=args.host, port=args.port
        )
        async with server:
            print(f"asyncllm fake-server: {args.protocol} on {server.base_url}", flush=True)
            for route in server.app.router.routes():
                info = route.resource.canonical if route.resource is not None else ""
                print(f"  {route.method} {info}", flush=True)
            await asyncio.Event().wait()
        return 0  # pragma: no cover - the wait ends only by cancellation

    try:
        return _run(serve())
    except KeyboardInterrupt:
        return 0


# -- bench ------------------------------------------------------------------------------------


def _bench(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.requests < 1:
        raise ConfigurationError("--concurrency and --requests must be at least 1")
    client = _client(args, max_concurrent_requests=args.concurrency)
    messages = [{"role": "user", "content": args.prompt}]

    async def go() -> int:
        latencies = batch._Latencies()
        errors: dict[str, int] = {}
        async with client:
            start = time.perf_counter()
            results = batch.imap(
                lambda _: client.chat(messages, model=args.model),
                range(args.requests),
                window=2 * args.concurrency,
            )
            async for r in results:
                latencies.add(r.latency)
                if r.error is not None:
                    name = type(r.error).__name__
                    errors[name] = errors.get(name, 0) + 1
            elapsed = time.perf_counter() - start
            failed = sum(errors.values())
            rows = [
                ("calls", str(args.requests)),
                ("failed", str(failed)),
                *((f"  {name}", str(n)) for name, n in sorted(errors.items())),
                ("seconds", f"{elapsed:.2f}"),
                ("calls/s", f"{args.requests / elapsed:.1f}"),
            ]
            for q in (0.5, 0.95, 0.99):
                value = latencies.percentile(q)
                rows.append((f"latency p{round(q * 100)}", f"{(value or 0) * 1000:.1f} ms"))
            _print_table(f"asyncllm bench: {args.backend}", rows)
            print()
            print(client.dispatcher.stats_table())
        return 0

    try:
        return _run(go())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
