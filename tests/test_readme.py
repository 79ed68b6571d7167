"""The README stays true: its set-up commands are the ones CI runs, and its quick start runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _bash_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", README, re.S)]


def test_two_setup_commands_main_job_and_tests():
    blocks = _bash_blocks()
    demo = [b for b in blocks if "tfedge demo" in b]
    tests = [b for b in blocks if "pytest" in b]
    assert len(demo) == 1 and len(tests) == 1
    for command in (demo[0], tests[0]):
        assert "\n" not in command, "each set-up command is a single copy-pasteable line"
        assert command.startswith("python3.11 -m venv .venv && ")


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(b for b in _bash_blocks() if "pytest" in b)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_quick_start_runs(tmp_path, monkeypatch):
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md quick start", "exec"), namespace)
    assert (tmp_path / "digits_int8.tflite").stat().st_size > 1000
    assert (tmp_path / "digits_model.h").exists() and (tmp_path / "digits_model.cc").exists()
    assert namespace["tfedge"].inspect(namespace["tfl"]).fully_int8


def test_fewer_bytes_example_runs(tmp_path, monkeypatch):
    """The "Fewer bytes on the device" example: channel pruning, a TFLite-Micro-only file, validation."""
    code = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "prune_channels" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md fewer bytes", "exec"), namespace)
    tfl, small, model = namespace["tfl"], namespace["small"], namespace["model"]
    assert small.count_params() < 0.5 * model.count_params()
    result = namespace["tfedge"].validate(tfl, namespace["data"].x_test, namespace["data"].y_test, verbose=0)
    assert result.status["litert"]["status"] == "skipped" and result.status["tflm"]["status"] == "ran"
