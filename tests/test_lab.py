"""`make lab`'s launcher: JupyterLab starts and lists every course notebook through its REST API."""
from __future__ import annotations

import subprocess
import sys
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
