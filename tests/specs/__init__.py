"""The official API specs the tests validate against, copied into the repository (see
``SOURCES.md`` beside this file for where each came from, at which commit, under which licence)."""

from __future__ import annotations

from pathlib import Path

SPECS = Path(__file__).resolve().parent
