"""The end-to-end recipe: teacher -> distilled student -> pruned (still distilled) -> sparsity-preserving
QAT (still distilled) -> full-int8 TFLite -> validated on LiteRT and TFLite Micro -> C array -> report.

It is a short composition of the public functions a user calls by hand (``tfedge.Distiller``,
``tfedge.prune``, ``tfedge.PruningCallback``, ``tfedge.strip``, ``tfedge.quantize_aware``,
``tfedge.convert``, ``tfedge.validate``, ``tfedge.export_c_array``). Every stage writes its outputs
as soon as it is done, atomically, so a failed stage leaves the earlier stages' files in place.

>>> from tfedge.pipeline import PipelineConfig
>>> PipelineConfig(sparsity=0.5).sparsity
0.5
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfedge._keras import keras, tf
from tfedge.distribute import cluster_task, lost_worker, strategy_for, weights_sha256
from tfedge.errors import InputError, TfedgeError


@dataclasses.dataclass
class PipelineConfig:
    """Everything the pipeline needs besides data and models. Epoch counts are per stage.

    The defaults are the measured digits recipe: a 3,938-parameter student distilled from a
    151k-parameter teacher, pruned to 30 %, QAT with the prune-preserving scheme, about 6.9 KB int8.
    """

    out_dir: str = "tflite_models"
    name: str = "digits"
    sparsity: float = 0.3
    temperature: float = 4.0
    alpha: float = 0.1
    teacher_epochs: int = 15
    teacher_learning_rate: float = 1e-3
    teacher_batch_size: int = 128
    distill_epochs: int = 12
    prune_epochs: int = 8
    qat_epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 3e-3
    qat_learning_rate: float = 5e-4
    augment: bool = True
    seed: int = 0
    calibration_samples: int = 500
    runtimes: tuple[str, ...] = ("litert", "tflm")
    verbose: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise InputError(f"sparsity must be in [0, 1), got {self.sparsity}: e.g. 0.5")
        for field in ("teacher_epochs", "distill_epochs", "prune_epochs", "qat_epochs", "batch_size",
                      "teacher_batch_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < (0 if field in ("teacher_epochs", "distill_epochs") else 1):
                raise InputError(f"{field} must be a positive whole number, got {value!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> "PipelineConfig":
        """A short run (under a minute on 2 cores) for tests and notebooks; lower accuracy."""
        base = dict(teacher_epochs=4, distill_epochs=5, prune_epochs=3, qat_epochs=2, calibration_samples=200)
        base.update(overrides)
        return cls(**base)


# --------------------------------------------------------------------------------------------
# models for the bundled digits


def digits_teacher(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The teacher trained by ``tfedge demo``: a float CNN, 151,306 parameters (logits output)."""
    return keras.Sequential(
        [
            keras.layers.Input(input_shape),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_teacher",
    )


def digits_student(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The deployed student: 3,938 parameters, every op full-int8 on TFLite Micro (about 6.9 KB)."""
    return keras.Sequential(
        [
            keras.layers.Input(input_shape),
            keras.layers.Conv2D(12, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalMaxPooling2D(),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_student",
    )


# --------------------------------------------------------------------------------------------
# helpers


def _log(config: PipelineConfig, message: str) -> None:
    if config.verbose:
        print(f"tfedge: {message}", flush=True)


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int):
    """A shuffled tf.data pipeline, sharded by data (each worker sees a different part of every batch)."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).with_options(options).prefetch(tf.data.AUTOTUNE)


def shifted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images plus their four one-pixel shifts (up, down, left, right; zero fill): 5x the data.

    >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
    >>> xs, ys = shifted(x, np.array([7]))
    >>> xs.shape, ys.tolist()
    ((5, 2, 2, 1), [7, 7, 7, 7, 7])
    """
    copies = [x]
    for axis, step in ((1, 1), (1, -1), (2, 1), (2, -1)):
        moved = np.roll(x, step, axis=axis)
        index = [slice(None)] * x.ndim
        index[axis] = 0 if step == 1 else -1
        moved[tuple(index)] = 0.0
        copies.append(moved)
    return np.concatenate(copies), np.tile(y, len(copies))


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def _float_bytes(model: keras.Model) -> tuple[int, int]:
    from tfedge.conversion import convert

    tfl = convert(model, quantization="float32")
    return tfl.size, tfl.gzip_size


def _distill(student, teacher, train, config, epochs, strategy, lr, callbacks=()):
    from tfedge.distillation import Distiller

    x, y = train
    with strategy.scope():
        distiller = Distiller(student, teacher, temperature=config.temperature, alpha=config.alpha)
        steps = epochs * int(np.ceil(len(x) / config.batch_size))
        schedule = keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05)
        distiller.compile(optimizer=keras.optimizers.Adam(schedule), metrics=["accuracy"])
    distiller.fit(_dataset(x, y, config.batch_size, seed=config.seed), epochs=epochs, callbacks=list(callbacks),
                  verbose=config.verbose and 2)
    return distiller.student


@contextlib.contextmanager
def _stage(label: str, out: Path, write: bool):
    """Name the stage in any tfedge error raised inside it, and say what was kept."""
    try:
        yield
    except TfedgeError as exc:
        kept = f"; the outputs of the completed stages are kept in {out}" if write else ""
        raise type(exc)(f"stage '{label}' failed: {exc}{kept}") from exc


def copy_with_softmax_layer(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (same weights) whose softmax, if fused into the last Dense, is a separate layer.

    Pruning and QAT wrap the last Dense; with its softmax fused inside, a Distiller cannot reach the
    logits. The copy computes the same function with ``Dense(activation=None)`` then ``Softmax()``.

    >>> from tfedge import keras
    >>> m = keras.Sequential([keras.layers.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    >>> [type(l).__name__ for l in copy_with_softmax_layer(m).layers]
    ['InputLayer', 'Dense', 'Softmax']
    """
    last = model.layers[-1]
    fused = isinstance(last, keras.layers.Dense) and keras.activations.serialize(last.activation) == "softmax"

    def clone(layer):
        config = layer.get_config()
        if fused and layer is last:
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    if not fused:
        return copy
    outputs = keras.layers.Softmax(name=f"{last.name}_softmax")(copy.outputs[0])
    return keras.Model(copy.inputs, outputs, name=model.name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------
# the pipeline


def run_pipeline(
    config: PipelineConfig,
    data: Any,
    *,
    teacher: keras.Model | None = None,
    student: keras.Model | Callable[[], keras.Model] | None = None,
    strategy: tf.distribute.Strategy | None = None,
    write: bool = True,
) -> dict:
    """Run every stage and return the report dict; outputs go to ``config.out_dir`` when ``write``.

    ``data`` has ``x_train, y_train, x_test, y_test`` (e.g. ``tfedge.datasets.digits()``).
    ``teacher``: a trained Keras model, or None to train :func:`digits_teacher`. ``student``: a model
    or a function building one (None: :func:`digits_student`). ``strategy``: a ``tf.distribute``
    strategy for every training stage (default: the current one). With ``write=False`` (non-chief
    workers of a multi-worker run) nothing is written.
    """
    import tfedge

    strategy = strategy or tf.distribute.get_strategy()
    arrays = {k: getattr(data, k) for k in ("x_train", "y_train", "x_test", "y_test")}
    out = Path(config.out_dir)
    if write:
        out.mkdir(parents=True, exist_ok=True)
    name = config.name
    keras.utils.set_random_seed(config.seed)
    num_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    input_shape = arrays["x_train"].shape[1:]
    stages: list[dict] = []
    files: dict[str, dict] = {}
    t_start = time.perf_counter()

    def record(stage: str, model: keras.Model, started: float, **extra: Any) -> dict:
        entry = {"stage": stage, "params": int(model.count_params()), **extra, "seconds": round(time.perf_counter() - started, 1)}
        stages.append(entry)
        acc = ", ".join(f"{k} {100 * v:.1f} %" for k, v in entry.get("accuracy", {}).items())
        _log(config, f"[{len(stages)}/5] {stage}: {acc}; {entry.get('bytes') or 0:,} bytes; "
                     f"sparsity {100 * (entry.get('sparsity') or 0):.0f} % ({entry['seconds']} s)")
        return entry

    def save(filename: str, tfl) -> None:
        if write:
            path = out / filename
            tfl.save(path)
            files[filename] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}

    # 1. teacher (trained on the shifted copies too when augment)
    started = time.perf_counter()
    train = shifted(arrays["x_train"], arrays["y_train"]) if config.augment else (arrays["x_train"], arrays["y_train"])
    if teacher is None:
        _log(config, f"training the teacher ({config.teacher_epochs} epochs on {len(train[0]):,} samples)")
        with strategy.scope():
            teacher = digits_teacher(input_shape, num_classes)
            teacher.compile(optimizer=keras.optimizers.Adam(config.teacher_learning_rate),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        teacher.fit(_dataset(*train, config.teacher_batch_size, seed=config.seed), epochs=config.teacher_epochs,
                    verbose=config.verbose and 2)
    teacher_tfl = tfedge.convert(teacher, quantization="float32")
    save(f"{name}_teacher_float32.tflite", teacher_tfl)
    teacher_bytes = teacher_tfl.size
    record("teacher float32", teacher, started, sparsity=0.0, bytes=teacher_tfl.size,
           gzip_bytes=teacher_tfl.gzip_size, accuracy={"keras": _accuracy(teacher, arrays["x_test"], arrays["y_test"])},
           compression=1.0)

    # 2. the student, distilled from the teacher
    started = time.perf_counter()
    with strategy.scope():
        if student is None:
            student_model = digits_student(input_shape, num_classes)
        elif callable(student) and not isinstance(student, keras.Model):
            student_model = student()
        else:
            student_model = student
    if config.distill_epochs:
        _log(config, f"distilling the student ({config.distill_epochs} epochs, T={config.temperature}, "
                     f"alpha={config.alpha})")
        student_model = _distill(student_model, teacher, train, config, config.distill_epochs, strategy,
                                 config.learning_rate)
    size, gz = _float_bytes(student_model)
    record("student float32" + (" (distilled)" if config.distill_epochs else ""), student_model, started,
           sparsity=0.0, bytes=size, gzip_bytes=gz,
           accuracy={"keras": _accuracy(student_model, arrays["x_test"], arrays["y_test"])},
           compression=teacher_bytes / size)

    # 3. pruned inside the distillation run
    started = time.perf_counter()
    if config.sparsity > 0:
        _log(config, f"pruning to {config.sparsity:.0%} while distilling ({config.prune_epochs} epochs)")
        with strategy.scope(), _stage("pruning", out, write):
            pruned = tfedge.prune(student_model, config.sparsity, epochs=config.prune_epochs, end=0.7)
        with _stage("pruning", out, write):
            pruned = _distill(pruned, teacher, train, config, config.prune_epochs, strategy,
                              config.learning_rate / 2, callbacks=[tfedge.PruningCallback(strict=True)])
        with strategy.scope():
            student_model = tfedge.strip(pruned)
        size, gz = _float_bytes(student_model)
        record("pruned float32", student_model, started, sparsity=tfedge.sparsity_report(student_model)["overall"],
               bytes=size, gzip_bytes=gz, accuracy={"keras": _accuracy(student_model, arrays["x_test"], arrays["y_test"])},
               compression=teacher_bytes / size)

    # 4. sparsity-preserving QAT, still distilled
    started = time.perf_counter()
    _log(config, f"quantization-aware training ({config.qat_epochs} epochs, zeros kept)")
    with strategy.scope(), _stage("quantization-aware training", out, write):
        qat = tfedge.quantize_aware(student_model, preserve_sparsity=config.sparsity > 0, strict=True)
    qat = _distill(qat, teacher, train, config, config.qat_epochs, strategy, config.qat_learning_rate)
    record("QAT (fake-quant Keras)", student_model, started, sparsity=tfedge.sparsity_report(qat)["overall"],
           accuracy={"keras": _accuracy(qat, arrays["x_test"], arrays["y_test"])})

    # 5. deployed full int8, validated on the runtimes, exported as a C array
    started = time.perf_counter()
    with _stage("int8 conversion", out, write):
        tfl = tfedge.convert(qat, representative_data=arrays["x_train"], quantization="int8",
                             calibration_samples=config.calibration_samples)
    tflite_name = f"{name}_student_int8.tflite"
    save(tflite_name, tfl)
    info = tfedge.inspect(tfl)
    result = tfedge.validate(tfl, arrays["x_test"], arrays["y_test"], reference=qat, runtimes=config.runtimes,
                             verbose=config.verbose)
    deployed = result.to_dict()
    record("deployed int8", student_model, started, sparsity=info.sparsity, bytes=tfl.size, gzip_bytes=tfl.gzip_size,
           accuracy=dict(result.accuracy), agreement=deployed.get("agreement"),
           arena_bytes=result.arena_bytes, latency_us=deployed.get("latency_us"),
           compression=teacher_bytes / tfl.size)
    if write:
        header, source = tfedge.export_c_array(tfl, out / f"{name}_student_int8", name=f"{name}_student_int8",
                                               arena_bytes=result.arena_bytes)
        for path in (Path(header), Path(source)):
            files[path.name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}

    final = stages[-1]
    report = {
        "title": f"tfedge: {name}",
        "summary": (
            f"Deployed fully-int8 student: {final['bytes']:,} bytes ({final['compression']:.1f}x smaller than the "
            f"float32 teacher), accuracy "
            + ", ".join(f"{k} {100 * v:.1f} %" for k, v in final["accuracy"].items())
            + (f", TFLite Micro arena {final['arena_bytes']:,} bytes" if final.get("arena_bytes") else "")
            + f"; {len(arrays['x_test'])} test samples, total {time.perf_counter() - t_start:.0f} s."
        ),
        "tfedge_version": tfedge.__version__,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        "data": {"train": int(len(arrays["x_train"])), "test": int(len(arrays["x_test"]))},
        "stages": stages,
        "deployed": deployed,
        "fully_int8": bool(info.fully_int8),
        "studentweights_sha256": weights_sha256(qat),
        "files": files,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if write:
        from tfedge.report import write_report

        write_report(report, out)
        _write_manifest(out, name, files, final)
    _log(config, report["summary"])
    return report


def _write_manifest(out: Path, name: str, files: dict, final: dict) -> None:
    from tfedge.files import atomic_write_text

    manifest = {
        "dataset": "digits (sklearn load_digits / 16, test_size=0.25, random_state=0, stratified)",
        "files": [
            {
                "file": filename,
                "sha256": meta["sha256"],
                "bytes": meta["bytes"],
                **({"accuracy": final["accuracy"]} if filename == f"{name}_student_int8.tflite" else {}),
            }
            for filename, meta in files.items()
        ],
    }
    atomic_write_text(out / "MANIFEST.json", json.dumps(manifest, indent=2) + "\n")


def demo(out_dir: str = "tflite_models", quick: bool = False, verbose: int = 1) -> dict:
    """``tfedge demo``: the whole pipeline on the bundled digits."""
    from tfedge.datasets import digits

    config = PipelineConfig.quick(out_dir=out_dir, verbose=verbose) if quick else PipelineConfig(
        out_dir=out_dir, verbose=verbose)
    return run_pipeline(config, digits())


def compress(
    model: str,
    *,
    train: str,
    out_dir: str,
    val: str | None = None,
    student: str | None = None,
    sparsity: float = 0.8,
    epochs: int | None = None,
    trust_model: bool = False,
    distribute: str = "none",
    verbose: int = 1,
) -> dict:
    """``tfedge compress``: the pipeline on a user's trained model (the teacher) and ``.npz`` data.

    The student is ``student`` (a ``.keras`` file) or, by default, a copy of the teacher that is
    then pruned and quantization-aware trained, distilled from the teacher throughout.
    ``distribute``: ``"none"``, ``"mirrored"`` (every local GPU) or ``"multiworker"`` (the cluster in
    ``TF_CONFIG``; run the same command on every worker). In a multi-worker run every worker trains
    and evaluates the same steps in lockstep and only the chief writes ``out_dir``; every worker
    logs the SHA-256 of its final student weights, which is the same on all of them.
    """
    from sklearn.model_selection import train_test_split

    from tfedge.datasets import Split, check_inputs_match, check_labels_fit, load_npz
    from tfedge.models import load_model

    out = Path(out_dir)
    task = cluster_task(os.environ.get("TF_CONFIG")) if distribute == "multiworker" else None
    if task is None or task.chief:  # only the chief writes: the other workers never touch the output folder
        if out.exists() and not out.is_dir():
            raise InputError(f"output folder '{out}' is a file: give a folder")
        if not out.exists() and not (out.parent if str(out.parent) else Path(".")).is_dir():
            raise InputError(f"the parent of output folder '{out}' does not exist: create it first (mkdir -p {out})")
    # read the data before joining a cluster, so that a bad file stops this worker at once
    x, y = load_npz(train, labels=True)
    x_val = y_val = None
    if val:
        x_val, y_val = load_npz(val, labels=True)
    elif len(x) < 10:
        raise InputError(f"data file '{train}' has {len(x)} samples; give at least 10, or a separate --val file")
    strategy, chief = strategy_for(distribute)
    with strategy.scope():  # the Distiller needs teacher and student built under the same strategy
        teacher = load_model(model, trust=trust_model)
    check_inputs_match(x, teacher.input_shape, f"data file '{train}'")
    check_labels_fit(y, int(teacher.output_shape[-1]), f"data file '{train}'")
    if val:
        check_inputs_match(x_val, teacher.input_shape, f"data file '{val}'")
        check_labels_fit(y_val, int(teacher.output_shape[-1]), f"data file '{val}'")
        x_train, y_train = x, y
    else:
        x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=0)
    if student:
        with strategy.scope():
            student_model = load_model(student, trust=trust_model)
        distill_epochs = epochs or 10
    else:
        with strategy.scope():
            student_model = copy_with_softmax_layer(teacher)
        distill_epochs = 0
    e = epochs or 5
    config = PipelineConfig(out_dir=str(out), name=Path(model).stem, sparsity=sparsity, teacher_epochs=0,
                            distill_epochs=distill_epochs, prune_epochs=e, qat_epochs=max(1, e // 2 + 1),
                            learning_rate=1e-3, qat_learning_rate=2e-4, augment=False, verbose=verbose)
    data = Split(x_train, y_train, x_val, y_val)
    if task is not None:
        _log(config, f"multi-worker run: {task.type} {task.index} of {task.workers} tasks, "
                     f"{strategy.num_replicas_in_sync} replicas in sync; "
                     + (f"this chief writes {out}" if chief else "the chief writes the outputs, this task writes none"))
    if chief:
        out.mkdir(exist_ok=True)
    try:
        report = run_pipeline(config, data, teacher=teacher, student=student_model, strategy=strategy, write=chief)
    except tf.errors.UnavailableError as exc:
        if task is None:
            raise
        raise lost_worker(task, exc) from None
    if task is not None:
        _log(config, f"{task.type} {task.index} done; final student weights sha256 {report['studentweights_sha256']}")
    return report


__all__ = ["PipelineConfig", "run_pipeline", "demo", "compress", "copy_with_softmax_layer", "digits_teacher", "digits_student"]
