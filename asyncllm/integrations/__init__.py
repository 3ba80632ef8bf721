"""Integrations with other libraries, each an optional extra imported only when used:
``asyncllm.integrations.fastapi`` (``asyncllm[fastapi]``) and ``asyncllm.integrations.otel``
(``asyncllm[otel]``)."""
