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

import dataclasses
import gzip
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfedge._keras import keras, tf
from tfedge.errors import InputError, TfedgeError


@dataclasses.dataclass
class PipelineConfig:
    """Everything the pipeline needs besides data and models. Epoch counts are per stage."""

    out_dir: str = "tflite_models"
    name: str = "digits"
    sparsity: float = 0.5
    temperature: float = 4.0
    alpha: float = 0.1
    teacher_epochs: int = 30
    distill_epochs: int = 30
    prune_epochs: int = 15
    qat_epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 3e-3
    augment: bool = True
    seed: int = 0
    calibration_samples: int = 300
    runtimes: tuple[str, ...] = ("litert", "tflm")
    verbose: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise InputError(f"sparsity must be in [0, 1), got {self.sparsity}: e.g. 0.5")
        for field in ("teacher_epochs", "distill_epochs", "prune_epochs", "qat_epochs", "batch_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < (0 if field in ("teacher_epochs", "distill_epochs") else 1):
                raise InputError(f"{field} must be a positive whole number, got {value!r}")

    @classmethod
    def quick(cls, **overrides: Any) -> "PipelineConfig":
        """A short run (about a minute on 2 cores) for tests and notebooks; lower accuracy."""
        base = dict(teacher_epochs=8, distill_epochs=8, prune_epochs=4, qat_epochs=3, batch_size=64,
                    calibration_samples=200)
        base.update(overrides)
        return cls(**base)


# --------------------------------------------------------------------------------------------
# models for the bundled digits


def digits_teacher(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The teacher trained by ``tfedge demo``: a small float CNN (logits output)."""
    return keras.Sequential(
        [
            keras.layers.Input(input_shape),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_teacher",
    )


def digits_student(input_shape=(8, 8, 1), num_classes: int = 10) -> keras.Model:
    """The deployed student: a few thousand parameters, every layer full-int8 on TFLite Micro."""
    return keras.Sequential(
        [
            keras.layers.Input(input_shape),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="digits_student",
    )


# --------------------------------------------------------------------------------------------
# helpers


def _log(config: PipelineConfig, message: str) -> None:
    if config.verbose:
        print(f"tfedge: {message}", flush=True)


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, augment: bool, seed: int):
    """A tf.data pipeline sharded by data (each worker sees a different part of every batch)."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:
        ds = ds.map(_shift, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _shift(x, y):
    """Random shifts of up to one pixel (zero padded): the digits are not always centred."""
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    shape = tf.shape(x)
    offsets = tf.random.uniform([2], 0, 3, dtype=tf.int32)
    return tf.slice(padded, [0, offsets[0], offsets[1], 0], shape), y


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=-1) == y))


def _float_bytes(model: keras.Model) -> tuple[int, int]:
    from tfedge.conversion import convert

    tfl = convert(model, quantization="float32")
    return tfl.size, tfl.gzip_size


def _params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights if "kernel" in w.name or "bias" in w.name
                   or "depthwise" in w.name or "gamma" in w.name or "beta" in w.name))


def _distill(student, teacher, data, config, epochs, strategy, callbacks=(), lr_scale=1.0):
    from tfedge.distillation import Distiller

    with strategy.scope():
        distiller = Distiller(student, teacher, temperature=config.temperature, alpha=config.alpha)
        steps = int(np.ceil(len(data["x_train"]) / config.batch_size))
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate * lr_scale, epochs * steps)
        distiller.compile(optimizer=keras.optimizers.Adam(schedule), metrics=["accuracy"])
    distiller.fit(
        _dataset(data["x_train"], data["y_train"], config.batch_size, shuffle=True, augment=config.augment,
                 seed=config.seed),
        epochs=epochs,
        callbacks=list(callbacks),
        verbose=config.verbose and 2,
    )
    return distiller.student


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
        entry = {"stage": stage, "params": _params(model), **extra, "seconds": round(time.perf_counter() - started, 1)}
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

    # 1. teacher
    started = time.perf_counter()
    if teacher is None:
        _log(config, f"training the teacher ({config.teacher_epochs} epochs)")
        with strategy.scope():
            teacher = digits_teacher(input_shape, num_classes)
            steps = int(np.ceil(len(arrays["x_train"]) / config.batch_size))
            teacher.compile(
                optimizer=keras.optimizers.Adam(
                    keras.optimizers.schedules.CosineDecay(config.learning_rate, config.teacher_epochs * steps)),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
        teacher.fit(_dataset(arrays["x_train"], arrays["y_train"], config.batch_size, shuffle=True,
                             augment=config.augment, seed=config.seed),
                    epochs=config.teacher_epochs, verbose=config.verbose and 2)
    teacher.trainable = False
    teacher_tfl = tfedge.convert(teacher, quantization="float32")
    save(f"{name}_teacher_float32.tflite", teacher_tfl)
    teacher_bytes = teacher_tfl.size
    record("teacher float32", teacher, started, sparsity=0.0, bytes=teacher_tfl.size,
           gzip_bytes=teacher_tfl.gzip_size, accuracy={"keras": _accuracy(teacher, arrays["x_test"], arrays["y_test"])},
           compression=1.0)

    # 2. distilled float student
    started = time.perf_counter()
    with strategy.scope():
        if student is None:
            student_model = digits_student(input_shape, num_classes)
        elif callable(student) and not isinstance(student, keras.Model):
            student_model = student()
        else:
            student_model = student
    if config.distill_epochs:
        student_model = _distill(student_model, teacher, arrays, config, config.distill_epochs, strategy)
    size, gz = _float_bytes(student_model)
    record("student float32" + (" (distilled)" if config.distill_epochs else ""), student_model, started, sparsity=0.0, bytes=size, gzip_bytes=gz,
           accuracy={"keras": _accuracy(student_model, arrays["x_test"], arrays["y_test"])},
           compression=teacher_bytes / size)

    # 3. pruned, still distilled
    started = time.perf_counter()
    if config.sparsity > 0:
        with strategy.scope():
            pruned = tfedge.prune(student_model, config.sparsity, epochs=config.prune_epochs, end=0.6)
        pruned = _distill(pruned, teacher, arrays, config, config.prune_epochs, strategy,
                          callbacks=[tfedge.PruningCallback(strict=True)], lr_scale=0.5)
        with strategy.scope():
            student_model = tfedge.strip(pruned)
        report = tfedge.sparsity_report(student_model)
        size, gz = _float_bytes(student_model)
        record("pruned float32", student_model, started, sparsity=report["overall"], bytes=size, gzip_bytes=gz,
               accuracy={"keras": _accuracy(student_model, arrays["x_test"], arrays["y_test"])},
               compression=teacher_bytes / size)

    # 4. sparsity-preserving QAT, still distilled
    started = time.perf_counter()
    with strategy.scope():
        qat = tfedge.quantize_aware(student_model, preserve_sparsity=config.sparsity > 0, strict=True)
    qat = _distill(qat, teacher, arrays, config, config.qat_epochs, strategy, lr_scale=0.2)
    record("QAT (fake-quant Keras)", qat, started, sparsity=tfedge.sparsity_report(qat)["overall"],
           accuracy={"keras": _accuracy(qat, arrays["x_test"], arrays["y_test"])})

    # 5. deployed full int8, validated on the runtimes, exported as a C array
    started = time.perf_counter()
    tfl = tfedge.convert(qat, representative_data=arrays["x_train"], quantization="int8",
                         calibration_samples=config.calibration_samples)
    tflite_name = f"{name}_student_int8.tflite"
    save(tflite_name, tfl)
    info = tfedge.inspect(tfl)
    result = tfedge.validate(tfl, arrays["x_test"], arrays["y_test"], reference=qat, runtimes=config.runtimes,
                             verbose=config.verbose)
    deployed = result.to_dict()
    record("deployed int8", qat, started, sparsity=info.sparsity, bytes=tfl.size, gzip_bytes=tfl.gzip_size,
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


def _strategy(distribute: str) -> tuple[tf.distribute.Strategy, bool]:
    """The strategy for ``--distribute`` and whether this process is the chief (the one that writes)."""
    if distribute == "none":
        return tf.distribute.get_strategy(), True
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy(), True
    if distribute == "multiworker":
        raw = __import__("os").environ.get("TF_CONFIG")
        if not raw:
            raise InputError("--distribute multiworker needs TF_CONFIG (cluster and task) in the environment: "
                             "see README 'Scaling out'")
        try:
            tf_config = json.loads(raw)
            task = tf_config["task"]
            cluster = tf_config["cluster"]
        except (ValueError, KeyError, TypeError):
            raise InputError("TF_CONFIG is not valid JSON with 'cluster' and 'task': see README 'Scaling out'") from None
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        chief = task.get("type") == "chief" or ("chief" not in cluster and task.get("type") == "worker"
                                                  and int(task.get("index", 0)) == 0)
        return strategy, chief
    raise InputError(f"distribute must be none, mirrored or multiworker, got {distribute!r}")


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
    """
    from sklearn.model_selection import train_test_split

    from tfedge.datasets import Split, check_inputs_match, check_labels_fit, load_npz
    from tfedge.models import load_model

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder '{out}' is a file: give a folder")
    if not out.exists() and not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"the parent of output folder '{out}' does not exist: create it first (mkdir -p {out})")
    teacher = load_model(model, trust=trust_model)
    x, y = load_npz(train, labels=True)
    check_inputs_match(x, teacher.input_shape, f"data file '{train}'")
    check_labels_fit(y, int(teacher.output_shape[-1]), f"data file '{train}'")
    if val:
        x_val, y_val = load_npz(val, labels=True)
        check_inputs_match(x_val, teacher.input_shape, f"data file '{val}'")
        check_labels_fit(y_val, int(teacher.output_shape[-1]), f"data file '{val}'")
        x_train, y_train = x, y
    else:
        if len(x) < 10:
            raise InputError(f"data file '{train}' has {len(x)} samples; give at least 10, or a separate --val file")
        x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=0)
    strategy, chief = _strategy(distribute)
    if student:
        with strategy.scope():
            student_model = load_model(student, trust=trust_model)
        distill_epochs = epochs or 10
    else:
        with strategy.scope():
            student_model = keras.models.clone_model(teacher)
            student_model.set_weights(teacher.get_weights())
        distill_epochs = 0
    e = epochs or 5
    config = PipelineConfig(out_dir=str(out), name=Path(model).stem, sparsity=sparsity, teacher_epochs=0,
                            distill_epochs=distill_epochs, prune_epochs=e, qat_epochs=max(1, e // 2 + 1),
                            learning_rate=1e-3, augment=False, verbose=verbose)
    data = Split(x_train, y_train, x_val, y_val)
    if chief:
        out.mkdir(exist_ok=True)
    return run_pipeline(config, data, teacher=teacher, student=student_model, strategy=strategy, write=chief)


__all__ = ["PipelineConfig", "run_pipeline", "demo", "compress", "digits_teacher", "digits_student"]
