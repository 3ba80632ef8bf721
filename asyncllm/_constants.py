"""Every default, named once. The retry and queue numbers are those of the system we rebuild."""

from __future__ import annotations

DEFAULT_MAX_RETRIES = 5
DEFAULT_INITIAL_RETRY_DELAY = 1.0
DEFAULT_BACKOFF_FACTOR = 2.0
DEFAULT_MAX_RETRY_DELAY = 16.0
DEFAULT_MAX_RETRY_AFTER = 120.0
# How long a call may wait for a rate budget (RateLimits.max_wait) before it fails instead.
DEFAULT_MAX_RATE_WAIT = 60.0
# The output a call that names no max_tokens is assumed to use when it reserves a token budget.
DEFAULT_OUTPUT_TOKENS = 1024
# The share of each rate budget that calls less urgent than HIGH leave for HIGH ones while calls
# wait for it (RateLimits.high_reserve).
DEFAULT_HIGH_RESERVE = 0.02

DEFAULT_MAX_CONCURRENT_REQUESTS = 5
DEFAULT_QUEUE_SIZE = 100
# Adaptive concurrency (AdaptiveConcurrency): an overload signal multiplies a lane's limit by the
# factor, at most once per interval (seconds); successes at this share of the limit in use grow it.
DEFAULT_ADAPTIVE_DECREASE = 0.9
DEFAULT_ADAPTIVE_INTERVAL = 1.0
DEFAULT_ADAPTIVE_UTILISATION = 0.9

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_RESET_TIMEOUT = 30.0
DEFAULT_HALF_OPEN_MAX_CALLS = 1

DEFAULT_TRACKER_TTL = 3600.0
DEFAULT_TRACKER_MAX_RECORDS = 10_000
TRACKER_MAX_RECORDS_PER_ID = 100
LATENCY_WINDOW = 1024

DEFAULT_TIMEOUT = 600.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_CLOSE_TIMEOUT = 5.0

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
# A stream's bytes that carry no event (blank lines, comments, fields of events without data) allowed
# in a row: each real event resets the count. Past it the stream is a ResponseValidationError.
DEFAULT_MAX_NOISE_BYTES = 64 * 1024
# The readers take a network chunk in pieces of at most this many bytes and hand control back to
# the event loop after each piece.
READ_STEP_BYTES = 16 * 1024
# A compressed body may decompress to at most this many times the bytes received, plus the
# allowance (so that small, highly compressible bodies pass); past it, ResponseValidationError.
MAX_DECOMPRESSION_RATIO = 100
DECOMPRESSION_ALLOWANCE = 1024 * 1024
# The encodings the built-in transport decodes itself (and so the only ones it asks for).
ACCEPT_ENCODING = "gzip, deflate"
BODY_EXCERPT_CHARS = 500
# An error's message and its server-given code and type are cut to this, so a hostile or
# runaway error body cannot flood logs through str(error).
MESSAGE_CHARS = 1000

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

REQUEST_ID_HEADER = "X-Request-ID"

# asyncllm.batch: items submitted and not yet written at most (memory follows this, not the
# input; the client's own limits decide the concurrency), and seconds between progress redraws.
DEFAULT_BATCH_WINDOW = 256
BATCH_PROGRESS_INTERVAL = 0.2

# Dispatcher(redis_url=...): how long a process's shared concurrency slots outlive its last
# heartbeat (a SIGKILLed process's slots come back within it; the heartbeat runs five times per
# lease), and the timeout of every Redis call.
DEFAULT_REDIS_LEASE = 10.0
DEFAULT_REDIS_TIMEOUT = 1.0
# The share of a lane's limits a process keeps while Redis is unreachable if it never saw how
# many processes share them.
DEFAULT_REDIS_SHARE = 0.25
