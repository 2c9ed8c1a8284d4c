"""Writing without losing anything: atomic writes, outputs kept apart from inputs, work folders that never
outlive their run.

- :func:`write_text_atomically` / :func:`write_json_atomically`: a temporary file beside the target, then a
  rename, so that a reader never sees half of a file.
- :func:`check_output_apart_from_inputs`: every command that writes calls it before any work, so that no
  output location is an input, lies inside an input folder, or holds an input.
- :func:`work_folder_beside` and :func:`remove_leftover_work_folders`: a whole output is written in a hidden
  folder ``.<name>-<8 characters>`` beside it and renamed into place; a folder left by a killed run is reported
  and removed by the next run for the same output.
- :func:`sigterm_unwinds`: while it is active, SIGTERM unwinds the stack like Ctrl-C does, so that ``finally``
  blocks remove what was half-written before the process ends.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

__all__ = ["write_text_atomically", "write_json_atomically", "check_output_apart_from_inputs", "Terminated",
           "sigterm_unwinds", "work_folder_beside", "remove_leftover_work_folders"]

logger = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------------------------------------
# Outputs apart from inputs
# ----------------------------------------------------------------------------------------------------------

def check_output_apart_from_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], *,
                                   what: str = "the output", kind: str = "input") -> None:
    """Refuse an ``output`` location that is one of ``inputs``, lies inside one, or holds one.

    Both sides are compared after resolving relative parts and symbolic links (:meth:`pathlib.Path.resolve`),
    and two existing paths that are the same file (a hard link, a bind mount) count as the same. ``None``
    entries of ``inputs`` are skipped, so that optional inputs can be passed as they are. Call it before any
    work starts: it only looks at paths.

    Raises:
        ValueError: naming ``what`` (e.g. ``"the output folder (--out)"``), both paths and the fix; ``kind``
        names what the inputs are to the caller (``"input"``; ``"course dataset"`` for a command that reads
        nothing but must not write over the course's data).
    """
    target = Path(output).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source or (target.exists() and source.exists() and os.path.samefile(target, source)):
            relation = f"is the {kind}"
        elif target.is_relative_to(source):
            relation = f"lies inside the {kind} folder"
        elif source.is_relative_to(target):
            relation = f"holds the {kind}"
        else:
            continue
        shown = output if Path(output).absolute() == target else f"{output} (that is {target})"
        raise ValueError(f"{what} {shown} {relation} {given}, which must not be written over, into or around; "
                         f"fix: pass a path apart from the {kind}s (not one of them, not inside one, not holding one)")


# ----------------------------------------------------------------------------------------------------------
# SIGTERM
# ----------------------------------------------------------------------------------------------------------

class Terminated(BaseException):
    """Raised by :func:`sigterm_unwinds` when SIGTERM arrives. Like ``KeyboardInterrupt`` it is no
    ``Exception``, so ``except Exception`` clauses let it pass; ``finally`` blocks run."""


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread, so that the ``finally``
    blocks inside remove what was half-written; then the previous handler is put back and the signal is sent
    again, so that the process ends as SIGTERM asks (killed by it, status -15), or the previous Python handler
    runs (if that handler returns, the exception goes on: the work was cut short all the same).

    The signal is sent again whenever one arrived in the block, even if the exception became another on the way
    (C code such as numpy's may replace an exception raised while it runs) or was swallowed. The previous
    handler is restored on every way out. Nothing is installed outside the main thread (Python allows handlers
    there only), nor where SIGTERM was ignored or handled outside Python. A process forked inside the block (a
    ``multiprocessing`` worker) starts with the default SIGTERM again (:func:`_default_sigterm_in_forked_child`),
    so that ``Pool.terminate()`` ends it at once.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield
        return
    owner = os.getpid()
    received = []

    def unwind(signum, frame):
        if os.getpid() != owner:  # a child forked a moment ago, before it could reset its handler
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        received.append(signum)
        raise Terminated(f"stopped by signal {signum} (SIGTERM)")

    unwind.sodlib_unwinds = True  # recognised in forked children
    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:
            signal.raise_signal(signal.SIGTERM)  # with the default handler the process ends here


def _default_sigterm_in_forked_child() -> None:
    """Run in every child right after ``os.fork()``: a child forked inside :func:`sigterm_unwinds` (a
    ``multiprocessing`` worker) gets the default SIGTERM back, so that ``Pool.terminate()`` ends it at once. An
    inherited Python handler runs only when the child's main thread comes back to Python code: never if the
    signal lands just before the worker blocks in C on its task queue, and ``Pool.terminate()`` then waits
    forever for it."""
    if getattr(signal.getsignal(signal.SIGTERM), "sodlib_unwinds", False):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_default_sigterm_in_forked_child)


# ----------------------------------------------------------------------------------------------------------
# Work folders
# ----------------------------------------------------------------------------------------------------------

def _work_folder_pattern(target: Path) -> re.Pattern:
    # exactly 8 characters after the dash, so that ``.out-2-xxxxxxxx`` (a folder of the output "out-2") never
    # passes for one of "out"; the alphabet is tempfile's too, which earlier versions of sodlib used
    return re.compile(rf"\.{re.escape(target.name)}-[a-z0-9_]{{8}}")


@contextlib.contextmanager
def _holding(folder: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder`` for the block; yields ``False`` if another process holds it.
    Where there are no such locks (not POSIX, a file system without them) every folder counts as free. The
    lock ends with the block, or with the process however it ends."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield True
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        except OSError:  # pragma: no cover - no locks on this file system
            free = True
        yield free
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def work_folder_beside(target: str | os.PathLike) -> Iterator[Path]:
    """A new empty folder ``.<target name>-<8 hex digits>`` beside ``target``, removed with whatever is still in
    it when the block ends (a folder renamed into place before is no longer there to remove).

    The folder is locked (``flock``) while the block runs, so that :func:`remove_leftover_work_folders` of
    another run for the same target leaves it alone; a killed process loses its lock, so its folder is then a
    leftover."""
    target = Path(os.path.abspath(target))  # "out/", "." and ".." get the folder's own name
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = target.parent / f".{target.name}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    with _holding(folder):
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _folder_size(folder: str | os.PathLike) -> int:
    """Bytes in the files under ``folder`` (symbolic links not followed)."""
    total = 0
    for parent, _, files in os.walk(folder):
        total += sum(os.lstat(os.path.join(parent, name)).st_size for name in files)
    return total


def remove_leftover_work_folders(target: str | os.PathLike) -> list[tuple[Path, int]]:
    """Remove the work folders that runs for ``target`` left behind (killed before they could clean up).

    They are the folders ``.<target name>-<8 characters>`` beside ``target`` that no running process holds
    (see :func:`work_folder_beside`). Each one is logged as a warning. Returns ``[(folder, bytes)]`` of the
    removed ones, for a command to print.
    """
    target = Path(os.path.abspath(target))
    pattern = _work_folder_pattern(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for candidate in sorted(target.parent.iterdir()):
        if not pattern.fullmatch(candidate.name) or candidate.is_symlink() or not candidate.is_dir():
            continue
        with _holding(candidate) as free:
            if not free:
                continue  # a running process writes there
            size = _folder_size(candidate)
            shutil.rmtree(candidate, ignore_errors=True)
        logger.warning("removed %s (%.1f MB), a work folder left by an interrupted run for %s", candidate,
                       size / 1e6, target)
        removed.append((candidate, size))
    return removed
