"""The tfedge command: help, version and its error contract (one line, exit codes)."""

from __future__ import annotations

import inspect as pyinspect
import shutil
import subprocess
import sys

import pytest

import tfedge
from tfedge import cli

SUBCOMMANDS = ("demo", "compress", "convert", "inspect", "validate", "export-c", "lut")


def _console_script() -> list[str]:
    exe = shutil.which("tfedge", path=str(__import__("pathlib").Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "tfedge"]


def test_version_from_package_metadata():
    out = subprocess.run([*_console_script(), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.strip() == f"tfedge {tfedge.__version__}"
    from importlib.metadata import version

    assert tfedge.__version__ == version("tfedge")


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in text


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    assert "usage: tfedge " + name in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage: tfedge" in capsys.readouterr().out


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["convert", "m.keras", "--quantization", "int2", "--out", "x.tflite"])
    assert info.value.code == 2
    assert "invalid choice: 'int2'" in capsys.readouterr().err


def test_cli_and_api_stay_in_step():
    """Signature parity: the CLI's options map onto the public functions' parameters."""
    convert_params = pyinspect.signature(tfedge.convert).parameters
    assert "quantization" in convert_params and "representative_data" in convert_params
    validate_params = pyinspect.signature(tfedge.validate).parameters
    assert {"reference", "runtimes"} <= set(validate_params)
    export_params = pyinspect.signature(tfedge.export_c_array).parameters
    assert "name" in export_params


def test_min_accuracy_is_checked_before_any_file_is_read(tmp_path, capsys):
    missing = str(tmp_path / "missing.tflite")
    code = cli.main(["validate", missing, "--data", str(tmp_path / "missing.npz"), "--min-accuracy", "95"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "tfedge: error: --min-accuracy must be in [0, 1], got 95.0: a fraction of the samples, e.g. 0.95"
    )


def test_fast_commands_start_without_tensorflow():
    """--help, inspect and export-c import no TensorFlow: the CLI imports heavy modules inside its commands."""
    code = (
        "import sys; from tfedge import cli; cli.build_parser(); "
        "import tfedge.inspection, tfedge.export; print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def _choices(command: str, option: str) -> tuple:
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


def test_cli_choices_are_the_library_constants():
    """The parser keeps its choices as literals (the CLI starts without importing these modules): stay in step."""
    from tfedge.conversion import MODES
    from tfedge.distribute import STRATEGIES

    assert _choices("convert", "--quantization") == MODES
    assert _choices("compress", "--distribute") == STRATEGIES
