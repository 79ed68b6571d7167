"""The ``tfedge`` command. Each subcommand is a thin layer over the public Python API.

Exit codes: 0 success, 1 a check failed (``CheckFailed``), 2 bad input or a failed step.
Errors print one line (``tfedge: error: ...``); ``--debug`` shows the traceback.

The subcommands import what they use inside their functions: ``tfedge --help``, ``inspect`` and
``export-c`` start without TensorFlow (seconds faster), and the heavy modules load only when needed.
This module imports at its top only light ones (no TensorFlow).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence

from tfedge import __version__
from tfedge.checks import check_fraction
from tfedge.errors import CheckFailed, InputError, TfedgeError, first_line
from tfedge.files import check_output_path
from tfedge.native import quiet_tensorflow_import
from tfedge.runtimes import RUNTIMES  # TensorFlow-free, like every import at the top of this module
from tfedge.targets import TARGETS
from tfedge.tflite import QUANTIZATION_MODES as CONVERT_MODES  # conversion.MODES, without TensorFlow
from tfedge.validation import DEFAULT_MIN_AGREEMENT, DEFAULT_MIN_REFERENCE_AGREEMENT  # TensorFlow-free too


def _load_model(path: str, trust: bool):
    from tfedge.models import load_model  # TensorFlow and TF-MOT: only for the commands that load a model

    return load_model(path, trust=trust)


def _cmd_demo(args: argparse.Namespace) -> int:
    from tfedge.pipeline import demo  # (each command imports what it needs: see the module docstring)

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
    from tfedge.graph import classes_of
    from tfedge.pipeline import compress

    check_fraction(args.sparsity, "--sparsity", high_open=True, hint="e.g. 0.5")
    flash = parse_size(args.flash, "--flash") if args.flash is not None else None
    ram = parse_size(args.ram, "--ram") if args.ram is not None else None
    check_range(args.max_accuracy_drop, "--max-accuracy-drop", 0.0, 100.0, hint="points of accuracy, e.g. 1.0")
    if args.confidence is not None:
        check_range(args.confidence, "--confidence", 0.5, 1.0, high_open=True, hint="e.g. 0.8")
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
    classes = classes_of(teacher, f"model '{args.model}'")
    for path, arrays in ((args.data, (x, y)), (args.val, val)):
        if arrays is not None:
            check_inputs_match(arrays[0], teacher.input_shape, f"data file '{path}'")
            check_labels_fit(arrays[1], classes, f"data file '{path}'")
    student = None
    if args.student:
        with strategy.scope():
            student = _load_model(args.student, args.trust_model)
    if task is not None:
        print(
            f"tfedge: multi-worker run: {task.type} {task.index} of {task.workers} tasks, "
            f"{strategy.num_replicas_in_sync} replicas in sync; "
            + (f"this chief writes {out}" if chief else "the chief writes the outputs, this task writes none"),
            flush=True,
        )
    try:
        report = compress(
            teacher,
            (x, y),
            val=val,
            student=student,
            sparsity=args.sparsity,
            epochs=args.epochs,
            flash=flash,
            ram=ram,
            max_accuracy_drop=args.max_accuracy_drop,
            **({} if args.confidence is None else {"confidence": args.confidence}),
            channels=args.channels,
            out_dir=str(out),
            name=Path(args.model).stem,
            strategy=strategy,
            write=chief,
            verbose=1,
        )
    except tf.errors.UnavailableError as exc:
        if task is None:
            raise
        raise lost_worker(task, exc) from None
    if task is not None:
        print(
            f"tfedge: {task.type} {task.index} done; final student weights sha256 {report['student_weights_sha256']}",
            flush=True,
        )
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from tfedge.conversion import convert  # heavy: TensorFlow
    from tfedge.datasets import load_npz  # numpy: not needed by --help

    target = args.target or ("tflm" if args.lut else "both")
    if args.lut and target != "tflm":
        raise InputError(
            f"--lut writes a TFLite-Micro-only file (LiteRT has no TFLM_DECODE kernel), but --target is "
            f"{target!r}: drop --target or use --target tflm"
        )
    bits = _lut_bits(args.lut) if args.lut else None
    check_output_path(args.out, inputs=(args.model, args.data), create_folder=True)
    model = _load_model(args.model, args.trust_model)
    x = load_npz(args.data)[0] if args.data else None
    tfl = convert(
        model, representative_data=x, quantization=args.quantization, int8_io=not args.float_io, target=target
    )
    if bits is not None:
        from tfedge.lut import lut_compress

        tfl = lut_compress(tfl, bits=bits, data=None if x is None else x[:200])
    tfl.save(args.out)
    for note in tfl.notes:
        print(f"note: {note}")
    print(
        f"wrote {args.out} ({tfl.size:,} bytes, {tfl.gzip_size:,} gzip, {args.quantization}, target {target}"
        f"{', LUT' if bits is not None else ''})"
    )
    return 0


def _lut_bits(value: str) -> int | str:
    """``--lut``: ``auto`` or an index width from 1 to 7, checked before any conversion starts."""
    if value == "auto":
        return value
    try:
        bits = int(value)
    except ValueError:
        bits = -1
    if not 1 <= bits <= 7:
        raise InputError(f"--lut must be auto or a number of bits from 1 to 7, got {value!r}: e.g. --lut 4")
    return bits


def _cmd_inspect(args: argparse.Namespace) -> int:
    from tfedge.inspection import inspect  # no TensorFlow: flatbuffer reading only

    info = inspect(args.file)
    print(json.dumps(info.to_dict(), indent=2) if args.json else info.format_table())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from tfedge.runtimes import check_runtimes  # the runtimes, imported by this command only
    from tfedge.validation import load_validation_data, validate

    runtimes = check_runtimes(args.runtimes)
    for value, flag in (
        (args.min_accuracy, "--min-accuracy"),
        (args.min_agreement, "--min-agreement"),
        (args.min_reference_agreement, "--min-reference-agreement"),
    ):
        if value is not None:
            check_fraction(value, flag, hint="a fraction of the samples, e.g. 0.95")
    from tfedge.runtimes import model_signature
    from tfedge.tflite import model_bytes

    inputs, _ = model_signature(*model_bytes(args.file))
    x, y = load_validation_data(args.data, num_inputs=len(inputs))
    if args.min_accuracy is not None and y is None:
        raise InputError(f"--min-accuracy needs labels: data file '{args.data}' has no array 'y'; save y=... too")
    reference = _load_model(args.reference, args.trust_model) if args.reference else None
    result = validate(
        args.file,
        x,
        y,
        reference=reference,
        runtimes=runtimes,
        output=args.output,
        trace=args.trace,
        verbose=0 if args.json else 1,
    )
    print(result.to_json() if args.json else result.format_table())
    failures = result.failed_checks(
        min_accuracy=args.min_accuracy,
        min_agreement=args.min_agreement,
        min_reference_agreement=args.min_reference_agreement,
    )
    if failures:
        raise CheckFailed("; ".join(failures))
    return 0


def _cmd_lut(args: argparse.Namespace) -> int:
    from tfedge.conversion import TFLiteModel
    from tfedge.datasets import load_npz
    from tfedge.files import check_output_path
    from tfedge.lut import lut_report

    check_output_path(args.out, inputs=(args.file, args.data), create_folder=True)
    bits = args.bits if args.bits == "auto" else _bits(args.bits)
    x = load_npz(args.data)[0] if args.data else None
    report = lut_report(TFLiteModel.from_file(args.file), bits=bits, tensors=args.tensors, data=x)
    report.model.save(args.out)
    for note in report.model.notes:
        print(f"note: {note}")
    print(
        f"wrote {args.out} ({report.flash_after:,} bytes, was {report.flash_before:,}; TFLite Micro arena "
        f"{report.arena_after:,} bytes, was {report.arena_before:,}; TFLite Micro only)"
    )
    return 0


def _bits(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--bits must be an integer from 1 to 7 or 'auto', got {text!r} (e.g. --bits 4)") from None


def _cmd_export_c(args: argparse.Namespace) -> int:
    from tfedge.export import c_identifier_from, check_c_identifier, export_c_array  # no TensorFlow

    name = (
        check_c_identifier(args.name)
        if args.name
        else c_identifier_from(os.path.splitext(os.path.basename(args.file))[0])
    )
    files = export_c_array(args.file, os.path.join(args.out, name), name=name)  # creates a missing --out folder
    if files.arena_bytes is not None:
        print(f"wrote {files[0]} and {files[1]} (array {name}, {name}_len, {name}_arena_size = {files.arena_bytes})")
    else:
        print(f"wrote {files[0]} and {files[1]} (array {name}, {name}_len; no arena size: {files.arena_note})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfedge",
        description="Prune, quantize, distill and convert Keras models to fully int8 TFLite, "
        "validated on LiteRT and TFLite Micro.",
    )
    parser.add_argument("--version", action="version", version=f"tfedge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)  # --debug also works after the subcommand
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the main job: teacher -> the best int8 student within 3,500 B on the bundled digits",
    )
    p.add_argument("--out", default="tflite_models", help="output folder (default: tflite_models)")
    p.add_argument("--quick", action="store_true", help="a short run for tests (under a minute)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "compress",
        parents=[common],
        help="compress your own model (the teacher) to a device budget, never below its plain int8 "
        "accuracy less --max-accuracy-drop",
    )
    p.add_argument("model", help="teacher model (.keras; .h5 / SavedModel need --trust-model)")
    p.add_argument("--data", required=True, help="training data .npz with x and y")
    p.add_argument("--val", help="validation data .npz with x and y (default: 20%% of --data, stratified)")
    p.add_argument("--student", help="your student model (.keras), one more candidate of the search")
    p.add_argument("--flash", help="flash budget: the deployed .tflite's bytes, e.g. 8000, 8KB or 8KiB")
    p.add_argument("--ram", help="RAM budget: the TFLite Micro arena's bytes, e.g. 4KiB")
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        help="accuracy points below the teacher's plain int8 model a shipped model may lose (default 1)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        help="how sure it must be that a smaller model is within --max-accuracy-drop on new data, judged from "
        "its agreement with the plain int8 model on each validation sample (default 0.8; 0.5: as measured)",
    )
    p.add_argument(
        "--channels",
        type=float,
        default=None,
        help="fraction of the teacher's channels to remove for its narrower candidate "
        "(default: 0.25, 0.5 and 0.75 are tried)",
    )
    p.add_argument(
        "--sparsity",
        type=float,
        default=0.0,
        help="magnitude sparsity (default 0: it buys gzip bytes only, a plain int8 .tflite stores zeros "
        "densely); lowered when it costs the accuracy floor",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per training stage (default: 10 to distill, 5 to prune, 3 for QAT, and more on "
        "small data: at least 1,500 distillation steps)",
    )
    p.add_argument(
        "--distribute",
        choices=("none", "mirrored", "multiworker"),
        default="none",
        help="tf.distribute strategy (multiworker reads TF_CONFIG)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--trust-model", action="store_true", help="allow .h5 / SavedModel (can run code)")
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("convert", parents=[common], help="convert a Keras model to TFLite (int8 audited op by op)")
    p.add_argument("model", help="Keras model (.keras; .h5 / SavedModel need --trust-model)")
    p.add_argument("--data", help="calibration data .npz with x (required for int8)")
    p.add_argument(
        "--quantization",
        choices=CONVERT_MODES,
        default="int8",
        help="int4 needs a model quantization-aware trained with 4-bit weight quantizers",
    )
    p.add_argument("--float-io", action="store_true", help="int8 / int16x8: keep float32 input and output")
    p.add_argument(
        "--target",
        choices=TARGETS,
        default=None,
        help="both (default): LiteRT and TFLite Micro; tflm: smaller, TFLite Micro only (checked "
        "bit-identical there); litert: keeps the signature and input/output names",
    )
    p.add_argument(
        "--lut",
        metavar="BITS|auto",
        default=None,
        help="LUT-compress the weights that pay (tfedge lut; implies --target tflm)",
    )
    p.add_argument("--out", required=True, help="output .tflite file (written atomically)")
    p.add_argument("--trust-model", action="store_true", help="allow .h5 / SavedModel (can run code)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="read any .tflite without running it: ops, dtypes, notes, TFLite Micro prediction, where the bytes go",
    )
    p.add_argument("file", help=".tflite file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser(
        "validate",
        parents=[common],
        help="run a .tflite on LiteRT (XNNPACK and reference kernels) and TFLite Micro: agreement "
        "matrix, accuracy, arena, latency, pass rule",
    )
    p.add_argument("file", help=".tflite file")
    p.add_argument(
        "--data",
        required=True,
        help="test data .npz: x (or one array per input, named after it or x0, x1, ...) and y for accuracy",
    )
    p.add_argument("--reference", help="Keras model to compare against (.keras)")
    runtimes = ",".join(RUNTIMES)
    p.add_argument("--runtimes", default=runtimes, help=f"comma-separated: {runtimes} (default all)")
    p.add_argument("--output", default=None, help="output (name or index) accuracy is read from (default 0)")
    p.add_argument("--trace", action="store_true", help="name the first op where differing kernels part ways")
    p.add_argument("--min-accuracy", type=float, default=None, help="exit 1 if any runtime is below this (0-1)")
    p.add_argument(
        "--min-agreement",
        type=float,
        default=DEFAULT_MIN_AGREEMENT,
        help=f"least top-1 agreement of LiteRT XNNPACK with the other kernels (default {DEFAULT_MIN_AGREEMENT})",
    )
    p.add_argument(
        "--min-reference-agreement",
        type=float,
        default=DEFAULT_MIN_REFERENCE_AGREEMENT,
        help=f"least top-1 agreement with the --reference model (default {DEFAULT_MIN_REFERENCE_AGREEMENT})",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--trust-model", action="store_true", help="allow an .h5 / SavedModel reference")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "lut", parents=[common], help="TFLite Micro LUT compression of clustered int8 weights, verified bit-exact"
    )
    p.add_argument("file", help="int8 .tflite file (weights clustered: tfedge.cluster + preserve_clusters QAT)")
    p.add_argument(
        "--bits", default="4", help="index bits, 1-7, or 'auto' (per tensor, the fewest lossless; default 4)"
    )
    p.add_argument(
        "--tensors",
        choices=("auto", "all"),
        default="auto",
        help="auto: the weight tensors that save more flash than they add arena (default); all: every one",
    )
    p.add_argument("--data", help="inputs .npz with x for the bit-exactness check (default: 32 generated inputs)")
    p.add_argument("--out", required=True, help="output .tflite file (TFLite Micro only; written atomically)")
    p.set_defaults(func=_cmd_lut)

    p = sub.add_parser("export-c", parents=[common], help="write the .tflite as a C array (.h/.cc) for TFLite Micro")
    p.add_argument("file", help=".tflite file")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
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
        if not args.debug and args.command not in ("inspect", "export-c", "lut"):  # these need no TensorFlow
            quiet_tensorflow_import()
        return int(args.func(args) or 0)
    except TfedgeError as exc:
        if args.debug:
            raise
        print(f"tfedge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `tfedge inspect FILE | head`: the reader left, nothing is wrong
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("tfedge: interrupted; no partial output files were left", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if args.debug:
            raise
        first = first_line(exc) if str(exc).strip() else ""
        print(f"tfedge: error: {type(exc).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        return 2


def entry() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
