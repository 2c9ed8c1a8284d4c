"""sodlib.data.files: outputs kept apart from inputs, SIGTERM that unwinds, work folders and their leftovers."""
from __future__ import annotations

import os
import re
import signal
import time

import pytest

from sodlib.data.files import (Terminated, check_output_apart_from_inputs, remove_leftover_work_folders,
                               sigterm_unwinds, work_folder_beside)


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "ds" / "images").mkdir(parents=True)
    (tmp_path / "ds" / "instances.json").write_text("{}")
    return tmp_path / "ds" / "instances.json", tmp_path / "ds" / "images"


@pytest.mark.parametrize("output, relation", [
    ("ds/instances.json", "is the input"), ("ds/images", "is the input"), ("ds/images/a/b", "lies inside the input folder"),
    ("ds", "holds the input"), (".", "holds the input"), ("ds/images/../instances.json", "is the input"),
    ("hardlink.json", "is the input"), ("link/sub", "lies inside the input folder"),
])
def test_an_output_on_an_input_is_refused(inputs, tmp_path, monkeypatch, output, relation):
    os.link(inputs[0], tmp_path / "hardlink.json")
    (tmp_path / "link").symlink_to(inputs[1])
    monkeypatch.chdir(tmp_path)
    shown = rf"{re.escape(output)}( \(that is {re.escape(str(tmp_path))}/[^)]+\))?"  # a link or '..' shows where it leads
    with pytest.raises(ValueError, match=f"^the output {shown} {relation} .*fix: pass a path apart from the inputs"):
        check_output_apart_from_inputs(output, [None, *inputs])


@pytest.mark.parametrize("output", ["ds/augmented", "ds2", "ds/images2", "elsewhere/ds/images"])
def test_an_output_apart_from_the_inputs_passes(inputs, tmp_path, monkeypatch, output):
    monkeypatch.chdir(tmp_path)
    check_output_apart_from_inputs(output, inputs)


def test_sigterm_unwinds_then_hands_the_signal_to_the_previous_handler():
    received = []

    def previous_handler(signum, frame):
        received.append(signum)

    saved = signal.signal(signal.SIGTERM, previous_handler)
    try:
        steps = []
        with pytest.raises(Terminated):
            with sigterm_unwinds():
                assert signal.getsignal(signal.SIGTERM) is not previous_handler
                try:
                    signal.raise_signal(signal.SIGTERM)  # handled before it returns
                    steps.append("not reached")
                finally:
                    steps.append("cleaned up")
        assert steps == ["cleaned up"] and received == [signal.SIGTERM]  # cleaned up first, then the old handler
        assert signal.getsignal(signal.SIGTERM) is previous_handler
        with pytest.raises(TypeError):  # C code may turn the exception into another: the signal still goes on
            with sigterm_unwinds():
                try:
                    signal.raise_signal(signal.SIGTERM)
                except Terminated:
                    raise TypeError("what numpy raised instead") from None
        assert received == [signal.SIGTERM, signal.SIGTERM]
        with sigterm_unwinds():
            pass
        assert received == [signal.SIGTERM, signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is previous_handler  # restored on every way out
    finally:
        signal.signal(signal.SIGTERM, saved)


def test_work_folders_are_removed_unless_a_running_process_holds_them(tmp_path):
    target = tmp_path / "out"
    with work_folder_beside(target) as work:
        assert work.parent == tmp_path and work.name.startswith(".out-") and len(work.name) == len(".out-") + 8
        (work / "file").write_bytes(b"x" * 1000)
        assert remove_leftover_work_folders(target) == []  # this run holds it
    assert not work.exists()
    (tmp_path / ".out-abcdefgh").mkdir()
    (tmp_path / ".out-abcdefgh" / "file").write_bytes(b"x" * 1000)
    (tmp_path / ".out-longer-abcdefgh").mkdir()
    assert remove_leftover_work_folders(target) == [(tmp_path / ".out-abcdefgh", 1000)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out-longer-abcdefgh"]


def test_a_process_forked_inside_sigterm_unwinds_ends_at_once_on_sigterm():
    ready, tell = os.pipe()
    with sigterm_unwinds():
        child = os.fork()
        if child == 0:  # the child: wait in C, where no Python handler could run (as an idle pool worker does)
            try:
                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
                os.write(tell, b"1" if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else b"0")
                signal.sigwait([signal.SIGUSR1])
            finally:
                os._exit(3)
    finished = False
    try:
        assert os.read(ready, 1) == b"1"  # the default handler, set back right after the fork
        os.kill(child, signal.SIGTERM)
        for _ in range(100):  # 10 s at most, so that a regression fails instead of hanging
            finished, status = os.waitpid(child, os.WNOHANG)
            if finished:
                break
            time.sleep(0.1)
        assert finished, "the forked child outlived SIGTERM"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    finally:
        if not finished:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        os.close(ready)
        os.close(tell)
