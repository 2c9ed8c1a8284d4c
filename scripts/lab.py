"""Start JupyterLab on the course notebooks, check it through its REST API, and print the URL.

    python scripts/lab.py [--port 8888]      # serve until Ctrl-C (what `make lab` runs)
    python scripts/lab.py --copy work/       # serve a copy of the notebooks in work/ (`make lab COPY=work`)
    python scripts/lab.py --check            # start, check, stop (what the tests run)

The course notebooks are committed with their outputs, so running them in place rewrites them; ``--copy DIR``
copies every notebook that DIR does not hold yet (a student's work there is never overwritten) and serves DIR.
JupyterLab reads its default settings from ``scripts/jupyterlab_settings/overrides.json``: no news pop-up and no
update check (the machines of the course may have no network).

The check asks the server for the contents of its root folder (``GET /api/contents/``) and requires
every notebook in ``notebooks/`` to be listed there, so a printed URL always points at a working course.

The launcher stops the JupyterLab it started however it ends: normally, on Ctrl-C, and on SIGTERM (a process
manager, ``kill``), after which it exits with status 143 (128 + SIGTERM), as a process killed by it would.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
SETTINGS_DIR = Path(__file__).resolve().parent / "jupyterlab_settings"
NOTIFICATION_SETTINGS = "@jupyterlab/apputils-extension:notification"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def copy_course(destination: Path) -> list[str]:
    """Copy the course notebooks (and REFERENCES.md) that ``destination`` does not hold yet; return their names."""
    destination.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted([*NOTEBOOK_DIR.glob("*.ipynb"), NOTEBOOK_DIR / "REFERENCES.md"]):
        target = destination / source.name
        if source.is_file() and not target.exists():
            shutil.copy2(source, target)
            copied.append(source.name)
    return copied


def start_lab(port: int, token: str, root: Path = NOTEBOOK_DIR) -> subprocess.Popen:
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               "--port-retries=0", f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
               # no network here: do not fetch announcements or look for updates, and do not ask about them
               "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--LabApp.app_settings_dir={SETTINGS_DIR}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def listed_notebooks(port: int, token: str, timeout: float = 90.0, server: subprocess.Popen | None = None) -> list[str]:
    """Poll ``/api/contents/`` until the server answers; return the notebook names it lists."""
    url = f"http://127.0.0.1:{port}/api/contents/"
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    deadline = time.monotonic() + timeout
    while True:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {server.returncode}:\n{server.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                listing = json.load(response)
            return sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"JupyterLab did not answer on {url} within {timeout:.0f} s") from None
            time.sleep(0.5)


def news_setting(port: int, token: str) -> object:
    """The ``fetchNews`` setting JupyterLab gives its pages (``"false"``: no "Jupyter news?" pop-up; JupyterLab's
    own default ``"none"`` asks)."""
    url = f"http://127.0.0.1:{port}/lab/api/settings/{NOTIFICATION_SETTINGS}"
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    # the overrides become the schema's defaults; a user's own choice, if any, is in "settings"
    return answer["settings"].get("fetchNews", answer["schema"]["properties"]["fetchNews"]["default"])


def _exit_on_sigterm(signum, frame) -> None:
    """SIGTERM unwinds ``main`` like Ctrl-C does, so that its ``finally`` stops JupyterLab."""
    raise SystemExit(128 + signum)


def stop_lab(server: subprocess.Popen) -> None:
    """Terminate ``server`` if it still runs, and kill it if it has not ended 15 s later."""
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8888, help="port to serve on (a free one if it is taken)")
    parser.add_argument("--check", action="store_true", help="start, verify the notebook list, then stop")
    parser.add_argument("--copy", default=None, metavar="DIR",
                        help="serve a copy of the notebooks in DIR (notebooks DIR already holds are kept as they are)")
    args = parser.parse_args()
    root = NOTEBOOK_DIR
    if args.copy:
        root = Path(args.copy).resolve()
        if root == NOTEBOOK_DIR:
            print("error: --copy names the course's own notebooks folder; fix: another folder, e.g. work/",
                  file=sys.stderr)
            return 2
        copied = copy_course(root)
        print(f"serving a copy of the course in {root} ({len(copied)} file(s) copied now, the others kept as they were)")

    port = args.port if args.port and port_is_free(args.port) else free_port()
    token = secrets.token_hex(16)
    expected = sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb"))  # a copy holds them all too
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    server = None
    try:
        server = start_lab(port, token, root)
        listed = listed_notebooks(port, token, server=server)
        missing = sorted(set(expected) - set(listed))
        if missing:
            print(f"error: JupyterLab does not list {missing}", file=sys.stderr)
            return 1
        print(f"JupyterLab serves {len(listed)} notebooks: {', '.join(listed)}")
        if args.check:
            print(f"news pop-up setting (fetchNews): {news_setting(port, token)!r}")
        print(f"Open the course at: http://127.0.0.1:{port}/lab?token={token}", flush=True)
        if args.check:
            return 0
        server.wait()
        return server.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            stop_lab(server)
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
