"""Execute the notebooks on a Jupyter kernel and save them with their outputs and plots.

    python notebooks/build.py            # refresh the committed notebooks in place (full training)
    python notebooks/build.py --quick --out /tmp/nb   # a few epochs each, written elsewhere (the test suite)

Each notebook runs top to bottom in a fresh kernel whose working folder is a temporary one (files the
notebook writes do not land in the repository) and which imports tfedge from this checkout. The
"Open in Colab" link at the top of each notebook is (re)written from REPOSITORY.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The GitHub repository the Colab links and the notebooks' install cell point at.
REPOSITORY = "tfedge/tfedge"
BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def colab_url(name: str) -> str:
    """The "Open in Colab" address of the notebook file ``name``."""
    return f"https://colab.research.google.com/github/{REPOSITORY}/blob/main/notebooks/{name}"


def add_colab_link(notebook: nbformat.NotebookNode, name: str) -> None:
    """Put (or refresh) the "Open in Colab" badge as the first line of the notebook's title cell."""
    title = notebook.cells[0]
    if title.cell_type != "markdown":
        raise SystemExit(f"{name}: the first cell must be the markdown title, got a {title.cell_type} cell")
    lines = [line for line in title.source.splitlines() if BADGE not in line]
    title.source = "\n".join([f"[![Open In Colab]({BADGE})]({colab_url(name)})", "", *lines]).replace("\n\n\n", "\n\n")


# C++ log lines (absl, oneDNN, CUDA probing) that TensorFlow writes to the kernel's stderr: machine noise,
# not results.
_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ )")


def _rendered(text: str) -> str:
    """Stream text as a terminal shows it: a progress bar redrawn with \\r / \\b keeps its last state."""
    return "\n".join(line.split("\r")[-1].replace("\b", "") for line in text.split("\n"))


def tidy(notebook: nbformat.NotebookNode) -> None:
    """Drop TensorFlow's C++ log lines from the outputs, merge consecutive stream outputs, render progress bars."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        outputs: list = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                text = "".join(line for line in output.text.splitlines(keepends=True) if not _LOG_LINE.match(line))
                if not text:
                    continue
                if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1].name == output.name:
                    outputs[-1].text += text
                    continue
                output.text = text
            outputs.append(output)
        for output in outputs:
            if output.get("output_type") == "stream":
                output.text = _rendered(output.text)
        cell.outputs = outputs


def execute(path: Path, out_dir: Path, *, quick: bool, timeout: int = 900) -> Path:
    """Run the notebook at ``path`` and write it, executed, to ``out_dir`` (same file name)."""
    notebook = nbformat.read(path, as_version=4)
    add_colab_link(notebook, path.name)
    env = {
        "TFEDGE_QUICK": "1" if quick else "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "TFEDGE_SOURCE": str(ROOT),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process' environment
    try:
        with tempfile.TemporaryDirectory(prefix="tfedge-nb-") as work:
            client = NotebookClient(
                notebook,
                timeout=timeout,
                kernel_name="python3",
                record_timing=False,
                resources={"metadata": {"path": work}},
            )
            client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    tidy(notebook)
    target = out_dir / path.name
    tmp = target.with_name(f".{target.name}.tmp")
    nbformat.write(notebook, tmp)
    os.replace(tmp, target)  # atomic: a failed run leaves the previous notebook intact
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all in notebooks/)")
    parser.add_argument("--quick", action="store_true", help="a few epochs each (TFEDGE_QUICK=1)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write the executed notebooks to")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"output folder '{args.out}' does not exist: create it first (mkdir -p {args.out})")
    paths = [p.resolve() for p in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        start = time.perf_counter()
        target = execute(path, args.out, quick=args.quick)
        print(f"{path.name}: executed in {time.perf_counter() - start:.0f} s -> {target}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
