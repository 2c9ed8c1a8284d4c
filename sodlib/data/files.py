"""Writing files so that a reader never sees half of one: a temporary file beside the target, then a rename."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["write_text_atomically", "write_json_atomically"]


def write_text_atomically(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and :func:`os.replace`; on any
    error the temporary file is removed and ``path`` is left as it was. The file gets mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(document: Mapping | Sequence, path: str | os.PathLike) -> Path:
    """``document`` as compact json (no spaces after separators), written by :func:`write_text_atomically`."""
    return write_text_atomically(json.dumps(document, separators=(",", ":")), path)
