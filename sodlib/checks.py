"""Checks shared by every layer of sodlib: names given that are not known, with the nearest known one suggested."""
from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["refuse_unknown_names"]


def refuse_unknown_names(given: Iterable[str], known: Iterable[str], where: str, what: str = "key") -> None:
    """Raise ``ValueError`` when ``given`` holds names outside ``known``: ``"<where>: unknown key 'backbon'
    (did you mean 'backbone'?); known: ..."``, with the closest known name (``difflib``) for each."""
    known = sorted(set(known))
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return
    hints = []
    for name in unknown:
        near = difflib.get_close_matches(str(name), known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    plural = "s" if len(unknown) > 1 else ""
    raise ValueError(f"{where}: unknown {what}{plural} {', '.join(hints)}; known: {', '.join(known)}")
