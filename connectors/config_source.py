"""Where a connector's inbox list comes from: an environment variable holding JSON, or a file
(``.json``, anything else read as TOML), never both. Shared by the email and web chat connectors;
each parses the data into its own inboxes."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any


def load_source(
    *, inline: str | None, path: Path | None, env: str, error: type[Exception]
) -> Any | None:
    """The data of ``env`` (inline JSON) or ``<env>_FILE`` (``path``); None if neither is set.
    Raises ``error`` with what to change when both are set or the data cannot be read."""
    if inline and path:
        raise error(f"set either {env} or {env}_FILE")
    if inline:
        try:
            return json.loads(inline)
        except json.JSONDecodeError as exc:
            raise error(f"{env} is not JSON: {exc.msg}") from None
    if path:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise error(f"cannot read {path}: {exc.strerror}") from None
        try:
            return json.loads(text) if path.suffix == ".json" else tomllib.loads(text.decode())
        except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise error(f"{path} is not valid {path.suffix or 'TOML'}: {exc}") from None
    return None
