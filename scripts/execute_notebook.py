"""Execute course notebooks in place, as committed (the fast setting unless SODLIB_FAST is set otherwise).

    python scripts/execute_notebook.py notebooks/06_super_resolution.ipynb [more.ipynb ...]

With ipywidgets 8 and nbclient 0.11, the reply to a cell that displays an explorer is sometimes only read when the
cell's timeout expires, so ``jupyter nbconvert --execute`` can sit on such a cell for its whole timeout (20 minutes
with the usual setting). Here an explorer cell gets a 20 s timeout and every other cell 15 minutes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def is_explorer_cell(cell) -> bool:
    source = "".join(cell.source)
    return "explorer(" in source and "_view(" not in source


def execute(path: Path) -> float:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout_func=lambda cell: 20 if is_explorer_cell(cell) else 900,
                            resources={"metadata": {"path": str(path.parent.resolve())}},
                            on_cell_executed=lambda cell, cell_index, execute_reply: print(
                                f"  cell {cell_index} done", flush=True))
    started = time.perf_counter()
    client.execute()
    nbformat.write(notebook, path)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("SODLIB_FAST", "1")
    for path in args.notebooks:
        if not path.is_file():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
        print(f"{path}: executed in {execute(path):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
