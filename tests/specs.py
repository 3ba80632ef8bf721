"""Where the official API specs live: ``shared/specs`` beside the repository checkout."""

from __future__ import annotations

from pathlib import Path

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs"
