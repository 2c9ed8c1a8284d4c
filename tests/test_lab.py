"""`make lab`'s launcher: JupyterLab starts and lists every course notebook through its REST API, and stops
with the launcher."""
from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_lab_serves_the_course_notebooks():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lab.py"), "--port", "0", "--check"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    notebooks = sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))
    assert f"JupyterLab serves {len(notebooks)} notebooks" in result.stdout
    assert "Open the course at: http://127.0.0.1:" in result.stdout and "/lab?token=" in result.stdout
    assert "news pop-up setting (fetchNews): 'false'" in result.stdout  # no "Jupyter news?" question on any page


@pytest.mark.slow
def test_lab_serves_a_copy_and_keeps_a_students_work(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "00_start_here.ipynb").write_text("{}")  # a student's own version, not to be overwritten
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lab.py"), "--port", "0", "--check", "--copy",
                             str(work)], capture_output=True, text=True, timeout=180)
    notebooks = sorted(path.name for path in (ROOT / "notebooks").glob("*.ipynb"))
    assert f"({len(notebooks)} file(s) copied now" in result.stdout  # the other notebooks and REFERENCES.md
    assert (work / "00_start_here.ipynb").read_text() == "{}"
    assert sorted(p.name for p in work.glob("*.ipynb")) == notebooks and (work / "REFERENCES.md").is_file()
    refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "lab.py"), "--check", "--copy",
                              str(ROOT / "notebooks")], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "own notebooks folder" in refused.stderr


@pytest.mark.slow
def test_sigterm_of_the_launcher_stops_jupyterlab():
    psutil = pytest.importorskip("psutil")
    launcher = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "lab.py"), "--port", "0"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    lab = []
    try:
        url = next(line.split("at: ")[1].strip() for line in launcher.stdout if "Open the course at" in line)
        lab = psutil.Process(launcher.pid).children()
        assert lab, "the launcher started no JupyterLab"
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(lab, timeout=20)
        assert alive == [], f"JupyterLab outlived its launcher: {alive}"
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)
    finally:
        for process in lab:
            if process.is_running():
                process.kill()
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
