"""The ``tfedge`` command. Each subcommand is a thin layer over the public Python API.

Exit codes: 0 success, 1 a check failed (``CheckFailed``), 2 bad input or a failed step.
Errors print one line (``tfedge: error: ...``); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

from tfedge.errors import InputError, TfedgeError, first_line


def _version() -> str:
    import tfedge

    return tfedge.__version__


def _quiet_tensorflow() -> None:
    """Import TensorFlow with the C++ start-up chatter (oneDNN, CUDA probes) kept off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tfedge._keras  # noqa: F401  (imports TensorFlow once, quietly)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_model(path: str, trust: bool):
    from tfedge.models import load_model

    return load_model(path, trust=trust)


def _cmd_demo(args: argparse.Namespace) -> int:
    from tfedge.pipeline import demo

    demo(out_dir=args.out, quick=args.quick, verbose=1)
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    # imported here, not at the top: `tfedge --help`, inspect and export-c start without TensorFlow
    from pathlib import Path

    from tfedge._keras import tf
    from tfedge.budget import parse_size
    from tfedge.checks import check_fraction, check_int, check_range
    from tfedge.datasets import check_inputs_match, check_labels_fit, load_npz
    from tfedge.distribute import cluster_task, lost_worker, strategy_for
    from tfedge.pipeline import compress

    check_fraction(args.sparsity, "--sparsity", high_open=True, hint="e.g. 0.5")
    flash = parse_size(args.flash, "--flash") if args.flash is not None else None
    ram = parse_size(args.ram, "--ram") if args.ram is not None else None
    check_range(args.max_accuracy_drop, "--max-accuracy-drop", 0.0, 100.0, hint="points of accuracy, e.g. 1.0")
    if args.channels is not None:
        check_fraction(args.channels, "--channels", high_open=True, hint="the fraction of channels to remove, e.g. 0.5")
    if args.epochs is not None:
        check_int(args.epochs, "--epochs", minimum=1, hint="e.g. 5")
    out = Path(args.out)
    task = cluster_task(os.environ.get("TF_CONFIG")) if args.distribute == "multiworker" else None
    if task is None or task.chief:  # only the chief writes: the other workers never touch the output folder
        if out.exists() and not out.is_dir():
            raise InputError(f"output folder '{out}' is a file: give a folder")
        if not out.exists() and not (out.parent if str(out.parent) else Path(".")).is_dir():
            raise InputError(f"the parent of output folder '{out}' does not exist: create it first (mkdir -p {out})")
    # read the data before joining a cluster, so that a bad file stops this worker at once
    x, y = load_npz(args.data, labels=True)
    val = load_npz(args.val, labels=True) if args.val else None
    if val is None and len(x) < 10:
        raise InputError(f"data file '{args.data}' has {len(x)} samples; give at least 10, or a separate --val file")
    strategy, chief = strategy_for(args.distribute)
    with strategy.scope():  # the Distiller needs teacher and student built under the same strategy
        teacher = _load_model(args.model, args.trust_model)
    for path, arrays in ((args.data, (x, y)), (args.val, val)):
        if arrays is not None:
            check_inputs_match(arrays[0], teacher.input_shape, f"data file '{path}'")
            check_labels_fit(arrays[1], int(teacher.output_shape[-1]), f"data file '{path}'")
    student = None
    if args.student:
        with strategy.scope():
            student = _load_model(args.student, args.trust_model)
    if task is not None:
        print(f"tfedge: multi-worker run: {task.type} {task.index} of {task.workers} tasks, "
              f"{strategy.num_replicas_in_sync} replicas in sync; "
              + (f"this chief writes {out}" if chief else "the chief writes the outputs, this task writes none"),
              flush=True)
    try:
        report = compress(teacher, (x, y), val=val, student=student, sparsity=args.sparsity, epochs=args.epochs,
                          flash=flash, ram=ram, max_accuracy_drop=args.max_accuracy_drop, channels=args.channels,
                          out_dir=str(out), name=Path(args.model).stem, strategy=strategy, write=chief, verbose=1)
    except tf.errors.UnavailableError as exc:
        if task is None:
            raise
        raise lost_worker(task, exc) from None
    if task is not None:
        print(f"tfedge: {task.type} {task.index} done; final student weights sha256 "
              f"{report['student_weights_sha256']}", flush=True)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from tfedge.conversion import convert
    from tfedge.datasets import load_npz
    from tfedge.files import check_output_path

    check_output_path(args.out, inputs=(args.model, args.data))
    model = _load_model(args.model, args.trust_model)
    x = load_npz(args.data)[0] if args.data else None
    tfl = convert(model, representative_data=x, quantization=args.quantization, int8_io=not args.float_io)
    tfl.save(args.out)
    for note in tfl.notes:
        print(f"note: {note}")
    print(f"wrote {args.out} ({tfl.size:,} bytes, {tfl.gzip_size:,} gzip, {args.quantization})")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from tfedge.inspection import inspect

    info = inspect(args.file)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.format_table())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from tfedge.datasets import load_npz
    from tfedge.errors import CheckFailed
    from tfedge.runtimes import check_runtimes
    from tfedge.validation import validate

    runtimes = check_runtimes(args.runtimes)
    if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1:
        raise InputError(f"--min-accuracy must be a fraction in [0, 1], got {args.min_accuracy:g} (e.g. 0.95)")
    x, y = load_npz(args.data, labels=args.min_accuracy is not None)
    reference = _load_model(args.reference, args.trust_model) if args.reference else None
    result = validate(args.file, x, y, reference=reference, runtimes=runtimes, verbose=0 if args.json else 1)
    print(result.to_json() if args.json else result.format_table())
    failures = result.failed_checks(min_accuracy=args.min_accuracy)
    if failures:
        raise CheckFailed("; ".join(failures))
    return 0


def _cmd_export_c(args: argparse.Namespace) -> int:
    from tfedge.export import c_identifier_from, check_c_identifier, export_c_array

    if not os.path.isdir(args.out):
        raise InputError(f"output folder '{args.out}' does not exist: create it first (mkdir -p {args.out})")
    name = check_c_identifier(args.name) if args.name else c_identifier_from(
        os.path.splitext(os.path.basename(args.file))[0])
    header, source = export_c_array(args.file, os.path.join(args.out, name), name=name)
    print(f"wrote {header} and {source} (array {name}, {name}_len, {name}_arena_size)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfedge",
        description="Prune, quantize, distill and convert Keras models to fully int8 TFLite, "
        "validated on LiteRT and TFLite Micro.",
    )
    parser.add_argument("--version", action="version", version=f"tfedge {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # --debug also works after the subcommand
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")

    p = sub.add_parser("demo", parents=[common],
                       help="the main job: teacher -> the best int8 student within 3,500 B on the bundled digits")
    p.add_argument("--out", default="tflite_models", help="output folder (default: tflite_models)")
    p.add_argument("--quick", action="store_true", help="a short run for tests (under a minute)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("compress", parents=[common],
                       help="compress your own model (the teacher) to a device budget, never below its plain int8 "
                            "accuracy less --max-accuracy-drop")
    p.add_argument("model", help="teacher model (.keras; .h5 / SavedModel need --trust-model)")
    p.add_argument("--data", required=True, help="training data .npz with x and y")
    p.add_argument("--val", help="validation data .npz with x and y (default: 20%% of --data, stratified)")
    p.add_argument("--student", help="your student model (.keras), one more candidate of the search")
    p.add_argument("--flash", help="flash budget: the deployed .tflite's bytes, e.g. 8000, 8KB or 8KiB")
    p.add_argument("--ram", help="RAM budget: the TFLite Micro arena's bytes, e.g. 4KiB")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0,
                   help="accuracy points below the teacher's plain int8 model a shipped model may lose (default 1)")
    p.add_argument("--channels", type=float, default=None,
                   help="fraction of the teacher's channels to remove for its narrower candidate "
                        "(default: 0.25, 0.5 and 0.75 are tried)")
    p.add_argument("--sparsity", type=float, default=0.0,
                   help="magnitude sparsity (default 0: it buys gzip bytes only, a plain int8 .tflite stores zeros "
                        "densely); lowered when it costs the accuracy floor")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per training stage (default: 10 to distill, 5 to prune, 3 for QAT, and more on "
                        "small data: at least 1,500 distillation steps)")
    p.add_argument("--distribute", choices=("none", "mirrored", "multiworker"), default="none",
                   help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--trust-model", action="store_true", help="allow .h5 / SavedModel (can run code)")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("convert", parents=[common], help="convert a Keras model to TFLite (int8 audited op by op)")
    p.add_argument("model", help="Keras model (.keras; .h5 / SavedModel need --trust-model)")
    p.add_argument("--data", help="calibration data .npz with x (required for int8)")
    p.add_argument("--quantization", choices=("int8", "int16x8", "float16", "dynamic", "float32"), default="int8")
    p.add_argument("--float-io", action="store_true", help="int8 / int16x8: keep float32 input and output")
    p.add_argument("--out", required=True, help="output .tflite file (written atomically)")
    p.add_argument("--trust-model", action="store_true", help="allow .h5 / SavedModel (can run code)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("inspect", parents=[common], help="read a .tflite without running it: ops, dtypes, sparsity, size")
    p.add_argument("file", help=".tflite file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("validate", parents=[common], help="run a .tflite on LiteRT and TFLite Micro: accuracy, agreement, arena, latency")
    p.add_argument("file", help=".tflite file")
    p.add_argument("--data", required=True, help="test data .npz with x (and y for accuracy)")
    p.add_argument("--reference", help="Keras model to compare against (.keras)")
    p.add_argument("--runtimes", default="litert,tflm", help="comma-separated: litert,tflm (default both)")
    p.add_argument("--min-accuracy", type=float, default=None, help="exit 1 if any runtime is below this (0-1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--trust-model", action="store_true", help="allow an .h5 / SavedModel reference")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("export-c", parents=[common], help="write the .tflite as a C array (.h/.cc) for TFLite Micro")
    p.add_argument("file", help=".tflite file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", help="C identifier (default: from the file name)")
    p.set_defaults(func=_cmd_export_c)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        if not args.debug and args.command not in ("inspect", "export-c"):  # these two need no TensorFlow
            _quiet_tensorflow()
        return int(args.func(args) or 0)
    except TfedgeError as exc:
        if args.debug:
            raise
        print(f"tfedge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `tfedge inspect FILE | head`: the reader left, nothing is wrong
        with __import__("contextlib").suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("tfedge: interrupted; no partial output files were left", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if args.debug:
            raise
        first = first_line(exc) if str(exc).strip() else ""
        print(f"tfedge: error: {type(exc).__name__}: {first} (run with --debug for the traceback)",
              file=sys.stderr)
        return 2


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
