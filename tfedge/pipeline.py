"""The end-to-end pipeline: teacher -> distilled student -> pruned (still distilled) -> sparsity-preserving
QAT (still distilled) -> full-int8 TFLite -> validated on LiteRT and TFLite Micro -> C array -> report.

Each stage is a function that returns a :class:`StageRecord` (the figures of the report, plus the model
it produced), and each runs under its own name, so an error says which stage failed. The stages are
compositions of the public functions a user calls by hand (``tfedge.Distiller``, ``tfedge.prune``,
``tfedge.PruningCallback``, ``tfedge.strip``, ``tfedge.quantize_aware``, ``tfedge.convert``,
``tfedge.validate``, ``tfedge.export_c_array``), and :func:`run_pipeline` is a short composition of the
stages. Outputs are written as soon as the stage that makes them is done, atomically, so a failed stage
leaves the earlier stages' files in place. The models and settings of a task come from a
:class:`tfedge.recipes.Recipe` (``tfedge demo``: :data:`tfedge.recipes.DIGITS`).

>>> from tfedge.pipeline import PipelineConfig
>>> PipelineConfig(sparsity=0.5).sparsity
0.5
>>> from tfedge.recipes import DIGITS
>>> PipelineConfig.for_recipe(DIGITS, quick=True).distill_epochs
5
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tfedge._keras import keras, tf

import numpy as np

import tfedge
from tfedge.checks import check_bool, check_fraction, check_int, check_range
from tfedge.datasets import Split, check_inputs_match, check_labels_fit, digits
from tfedge.distillation import Distiller
from tfedge.distribute import weights_sha256
from tfedge.errors import InputError, TfedgeError
from tfedge.recipes import DIGITS, Recipe, copy_with_softmax_layer
from tfedge.report import build_report, write_manifest, write_report


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs besides data and models. Epoch counts are per stage.

    The defaults suit a user's own trained teacher (they are what ``tfedge compress`` runs);
    a recipe's measured settings come from :meth:`for_recipe` (``tfedge demo``: the digits recipe).
    ``teacher_*`` apply only when the pipeline trains the teacher; ``augment`` adds the recipe's
    augmented copies to the training data of every stage.
    """

    out_dir: str = "tflite_models"
    name: str = "model"
    sparsity: float = 0.8
    temperature: float = 4.0
    alpha: float = 0.1
    teacher_epochs: int = 10
    teacher_learning_rate: float = 1e-3
    teacher_batch_size: int = 128
    distill_epochs: int = 10
    prune_epochs: int = 5
    qat_epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    qat_learning_rate: float = 2e-4
    augment: bool = False
    seed: int = 0
    calibration_samples: int = 500
    runtimes: tuple[str, ...] = ("litert", "tflm")
    verbose: int = 1

    def __post_init__(self) -> None:
        check_fraction(self.sparsity, "sparsity", high_open=True, hint="e.g. 0.5")
        check_range(self.temperature, "temperature", 0.0, low_open=True, hint="e.g. 4.0")
        check_fraction(self.alpha, "alpha", hint="e.g. 0.1")
        for name in ("teacher_epochs", "distill_epochs"):
            check_int(getattr(self, name), name, minimum=0)
        for name in ("prune_epochs", "qat_epochs", "batch_size", "teacher_batch_size", "calibration_samples"):
            check_int(getattr(self, name), name, minimum=1)
        for name in ("teacher_learning_rate", "learning_rate", "qat_learning_rate"):
            check_range(getattr(self, name), name, 0.0, low_open=True, hint="e.g. 1e-3")
        check_bool(self.augment, "augment")
        check_int(self.seed, "seed")
        object.__setattr__(self, "runtimes", tuple(self.runtimes))

    @classmethod
    def quick(cls, **overrides: Any) -> PipelineConfig:
        """A short run (under a minute on 2 cores) for tests and notebooks; lower accuracy."""
        return cls(**{**dict(teacher_epochs=4, distill_epochs=5, prune_epochs=3, qat_epochs=2,
                             calibration_samples=200), **overrides})

    @classmethod
    def for_recipe(cls, recipe: Recipe, *, quick: bool = False, **overrides: Any) -> PipelineConfig:
        """The recipe's measured settings (its short-run settings on top when ``quick``), then ``overrides``.

        >>> from tfedge.recipes import DIGITS
        >>> config = PipelineConfig.for_recipe(DIGITS, out_dir="build")
        >>> config.name, config.sparsity, config.out_dir
        ('digits', 0.3, 'build')
        """
        return cls(**{**recipe.settings, **(recipe.quick_settings if quick else {}), **overrides})


@dataclasses.dataclass(frozen=True)
class StageRecord:
    """What one stage measured (``to_dict()``: a row of the report) and what it produced (``model``, ``tflite``).

    ``accuracy`` maps a runtime (``keras``, ``litert``, ``tflm``) to top-1 accuracy on the test data;
    ``compression`` is the teacher's float32 bytes over this stage's bytes. Figures a stage does not
    measure are None and left out of ``to_dict()``.

    >>> StageRecord("QAT", params=10, sparsity=0.5, accuracy={"keras": 0.9}, seconds=1.0).to_dict()
    {'stage': 'QAT', 'params': 10, 'sparsity': 0.5, 'accuracy': {'keras': 0.9}, 'seconds': 1.0}
    """

    stage: str
    params: int
    sparsity: float | None = None
    bytes: int | None = None
    gzip_bytes: int | None = None
    accuracy: Mapping[str, float] = dataclasses.field(default_factory=dict)
    agreement: float | None = None
    arena_bytes: int | None = None
    latency_us: Mapping[str, float] | None = None
    compression: float | None = None
    seconds: float = 0.0
    model: Any = dataclasses.field(default=None, repr=False, compare=False)  # the Keras model of this stage
    tflite: Any = dataclasses.field(default=None, repr=False, compare=False)  # its TFLiteModel, when converted
    validation: Any = dataclasses.field(default=None, repr=False, compare=False)  # ValidationResult (deployed)
    inspection: Any = dataclasses.field(default=None, repr=False, compare=False)  # ModelInfo (deployed)

    _ARTIFACTS = ("model", "tflite", "validation", "inspection")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in self._ARTIFACTS and value is not None:
                out[field.name] = dict(value) if isinstance(value, Mapping) else value
        return out

    def relative_to(self, teacher_bytes: int | None) -> StageRecord:
        """This record with ``compression`` set to ``teacher_bytes / bytes`` (unchanged if either is unknown)."""
        if not (self.bytes and teacher_bytes):
            return self
        return dataclasses.replace(self, compression=teacher_bytes / self.bytes)

    def summary(self) -> str:
        """One progress line: accuracy per runtime, bytes, sparsity, seconds."""
        acc = ", ".join(f"{k} {100 * v:.1f} %" for k, v in self.accuracy.items())
        return (f"{self.stage}: {acc}; {self.bytes or 0:,} bytes; sparsity {100 * (self.sparsity or 0):.0f} % "
                f"({self.seconds} s)")


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every stage of one run shares: the settings, the data, the strategy and where outputs go.

    ``x_fit, y_fit`` is the training data of every stage (``x_train`` plus the recipe's augmented
    copies when ``config.augment``); ``x_train`` alone calibrates the int8 conversion.
    """

    config: PipelineConfig
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_fit: np.ndarray
    y_fit: np.ndarray
    strategy: Any
    recipe: Recipe = DIGITS
    write: bool = True

    @classmethod
    def prepare(cls, config: PipelineConfig, data: Any, *, strategy: Any = None, recipe: Recipe = DIGITS,
                write: bool = True) -> RunContext:
        """Read ``data`` (``x_train, y_train, x_test, y_test``), augment it, create ``config.out_dir``, seed."""
        x_train, y_train, x_test, y_test = (getattr(data, k) for k in ("x_train", "y_train", "x_test", "y_test"))
        x_fit, y_fit = x_train, y_train
        if config.augment:
            if recipe.augment is None:
                raise InputError(f"augment is True but recipe '{recipe.name}' has no augmentation: pass augment=False")
            x_fit, y_fit = recipe.augment(x_train, y_train)
        if write:
            Path(config.out_dir).mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(config.seed)
        return cls(config=config, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, x_fit=x_fit,
                   y_fit=y_fit, strategy=strategy or tf.distribute.get_strategy(), recipe=recipe, write=write)

    @property
    def out(self) -> Path:
        return Path(self.config.out_dir)

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @contextlib.contextmanager
    def stage(self, label: str) -> Iterator[None]:
        """Name the stage in any tfedge error raised inside it, and say what was kept."""
        try:
            yield
        except TfedgeError as exc:
            kept = f"; the outputs of the completed stages are kept in {self.out}" if self.write else ""
            raise type(exc)(f"stage '{label}' failed: {exc}{kept}") from exc

    def log(self, message: str) -> None:
        if self.config.verbose:
            print(f"tfedge: {message}", flush=True)

    def dataset(self, batch_size: int) -> tf.data.Dataset:
        """The training data, shuffled, sharded by data (each worker sees a different part of every batch)."""
        ds = tf.data.Dataset.from_tensor_slices((self.x_fit, self.y_fit))
        ds = ds.shuffle(len(self.x_fit), seed=self.config.seed, reshuffle_each_iteration=True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return ds.batch(batch_size).with_options(options).prefetch(tf.data.AUTOTUNE)

    def accuracy(self, model: keras.Model) -> float:
        return float(np.mean(np.argmax(model.predict(self.x_test, batch_size=256, verbose=0), axis=-1) == self.y_test))

    def distill(self, student: keras.Model, teacher: keras.Model, epochs: int, learning_rate: float,
                callbacks: tuple = ()) -> keras.Model:
        """Train ``student`` with a :class:`tfedge.Distiller` (cosine-decayed Adam) for ``epochs``; return it."""
        config = self.config
        with self.strategy.scope():
            distiller = Distiller(student, teacher, temperature=config.temperature, alpha=config.alpha)
            steps = epochs * int(np.ceil(len(self.x_fit) / config.batch_size))
            schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
            distiller.compile(optimizer=keras.optimizers.Adam(schedule), metrics=["accuracy"])
        distiller.fit(self.dataset(config.batch_size), epochs=epochs, callbacks=list(callbacks),
                      verbose=config.verbose and 2)
        return distiller.student

    def float_record(self, stage: str, model: keras.Model, started: float, **figures: Any) -> StageRecord:
        """The record of a float Keras model: its float32 .tflite bytes and its accuracy."""
        tfl = tfedge.convert(model, quantization="float32")
        return StageRecord(stage, int(model.count_params()), bytes=tfl.size, gzip_bytes=tfl.gzip_size,
                           accuracy={"keras": self.accuracy(model)}, seconds=_since(started), model=model,
                           tflite=tfl, **figures)


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 1)


# --------------------------------------------------------------------------------------------
# the stages


def train_teacher(run: RunContext, teacher: keras.Model | None = None) -> StageRecord:
    """Stage 'teacher': train the recipe's teacher (unless ``teacher`` is given), measure it as float32."""
    config, started = run.config, time.perf_counter()
    with run.stage("teacher"):
        if teacher is None:
            run.log(f"training the teacher ({config.teacher_epochs} epochs on {len(run.x_fit):,} samples)")
            with run.strategy.scope():
                teacher = run.recipe.teacher(run.input_shape, run.num_classes)
                teacher.compile(optimizer=keras.optimizers.Adam(config.teacher_learning_rate),
                                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                metrics=["accuracy"])
            teacher.fit(run.dataset(config.teacher_batch_size), epochs=config.teacher_epochs,
                        verbose=config.verbose and 2)
        tfl = tfedge.convert(teacher, quantization="float32")
        return StageRecord("teacher float32", int(teacher.count_params()), sparsity=0.0, bytes=tfl.size,
                           gzip_bytes=tfl.gzip_size, accuracy={"keras": run.accuracy(teacher)}, compression=1.0,
                           seconds=_since(started), model=teacher, tflite=tfl)


def distill_student(run: RunContext, student: Any, teacher: keras.Model) -> StageRecord:
    """Stage 'distillation': build the student if needed and distill it from ``teacher`` (``distill_epochs``).

    ``student``: a Keras model, a function of no arguments that builds one, or None for the recipe's
    student. With ``distill_epochs=0`` the student is measured as it is.
    """
    config, started = run.config, time.perf_counter()
    with run.stage("distillation"):
        with run.strategy.scope():
            if student is None:
                student = run.recipe.student(run.input_shape, run.num_classes)
            elif callable(student) and not isinstance(student, keras.Model):
                student = student()
        if config.distill_epochs:
            run.log(f"distilling the student ({config.distill_epochs} epochs, T={config.temperature}, "
                    f"alpha={config.alpha})")
            student = run.distill(student, teacher, config.distill_epochs, config.learning_rate)
        label = "student float32" + (" (distilled)" if config.distill_epochs else "")
        return run.float_record(label, student, started, sparsity=0.0)


def prune_student(run: RunContext, student: keras.Model, teacher: keras.Model) -> StageRecord:
    """Stage 'pruning': prune ``student`` to ``config.sparsity`` while distilling it (``prune_epochs``), strip it."""
    config, started = run.config, time.perf_counter()
    with run.stage("pruning"):
        run.log(f"pruning to {config.sparsity:.0%} while distilling ({config.prune_epochs} epochs)")
        with run.strategy.scope():
            pruned = tfedge.prune(student, config.sparsity, epochs=config.prune_epochs, end=0.7)
        pruned = run.distill(pruned, teacher, config.prune_epochs, config.learning_rate / 2,
                             callbacks=(tfedge.PruningCallback(strict=True),))
        with run.strategy.scope():
            stripped = tfedge.strip(pruned)
        tfl = tfedge.convert(stripped, quantization="float32")
        return StageRecord("pruned float32", int(stripped.count_params()),
                           sparsity=tfedge.sparsity_report(stripped)["overall"], bytes=tfl.size,
                           gzip_bytes=tfl.gzip_size, accuracy={"keras": run.accuracy(stripped)},
                           seconds=_since(started), model=stripped, tflite=tfl)


def quantize_student(run: RunContext, student: keras.Model, teacher: keras.Model) -> StageRecord:
    """Stage 'quantization-aware training': QAT (zeros kept when pruned) while distilling (``qat_epochs``).

    The record's ``params`` are the float student's; its ``model`` is the QAT model.
    """
    config, started = run.config, time.perf_counter()
    with run.stage("quantization-aware training"):
        run.log(f"quantization-aware training ({config.qat_epochs} epochs, zeros kept)")
        with run.strategy.scope():
            qat = tfedge.quantize_aware(student, preserve_sparsity=config.sparsity > 0, strict=True)
        qat = run.distill(qat, teacher, config.qat_epochs, config.qat_learning_rate)
        return StageRecord("QAT (fake-quant Keras)", int(student.count_params()),
                           sparsity=tfedge.sparsity_report(qat)["overall"], accuracy={"keras": run.accuracy(qat)},
                           seconds=_since(started), model=qat)


def convert_student(run: RunContext, qat: keras.Model) -> Any:
    """Stage 'int8 conversion': the fully-int8 :class:`tfedge.TFLiteModel`, calibrated on ``x_train``."""
    with run.stage("int8 conversion"):
        return tfedge.convert(qat, representative_data=run.x_train, quantization="int8",
                              calibration_samples=run.config.calibration_samples)


def validate_student(run: RunContext, tfl: Any, qat: StageRecord, *, started: float | None = None) -> StageRecord:
    """Stage 'validation': inspect the int8 model and run it on ``config.runtimes`` against the QAT model.

    ``seconds`` count from ``started`` (default: now), e.g. from before the conversion.
    """
    started = time.perf_counter() if started is None else started
    with run.stage("validation"):
        info = tfedge.inspect(tfl)
        result = tfedge.validate(tfl, run.x_test, run.y_test, reference=qat.model, runtimes=run.config.runtimes,
                                 verbose=run.config.verbose)
        figures = result.to_dict()
        return StageRecord("deployed int8", qat.params, sparsity=info.sparsity, bytes=tfl.size,
                           gzip_bytes=tfl.gzip_size, accuracy=dict(result.accuracy),
                           agreement=figures.get("agreement"), arena_bytes=result.arena_bytes,
                           latency_us=figures.get("latency_us"), seconds=_since(started), model=qat.model,
                           tflite=tfl, validation=result, inspection=info)


class Outputs:
    """The files a run writes into its folder (each atomically), with their bytes and SHA-256; none when not writing."""

    def __init__(self, run: RunContext) -> None:
        self.out, self.write = run.out, run.write
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, path: Path) -> None:
        self.files[path.name] = {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

    def save(self, filename: str, tfl: Any) -> None:
        if self.write:
            tfl.save(self.out / filename)
            self.add(self.out / filename)


def write_outputs(run: RunContext, outputs: Outputs, stages: list[StageRecord], *, seconds: float) -> dict:
    """Stage 'writing outputs': the C array of the deployed model, the report and the manifest; returns the report."""
    config, deployed = run.config, stages[-1]
    with run.stage("writing outputs"):
        stem = f"{config.name}_student_int8"
        if run.write:
            paths = tfedge.export_c_array(deployed.tflite, run.out / stem, name=stem, arena_bytes=deployed.arena_bytes)
            for path in paths:
                outputs.add(Path(path))
        report = build_report(
            title=f"tfedge: {config.name}", config=dataclasses.asdict(config), stages=[s.to_dict() for s in stages],
            deployed=deployed.validation.to_dict(), fully_int8=bool(deployed.inspection.fully_int8),
            student_weights_sha256=weights_sha256(deployed.model), files=outputs.files,
            data={"train": int(len(run.x_train)), "test": int(len(run.x_test))}, seconds=seconds)
        if run.write:
            write_report(report, run.out)
            write_manifest(run.out, outputs.files, dataset=run.recipe.dataset, scored=f"{stem}.tflite",
                           accuracy=deployed.accuracy)
        return report


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
    recipe: Recipe = DIGITS,
) -> dict:
    """Run every stage and return the report dict; outputs go to ``config.out_dir`` when ``write``.

    ``data`` has ``x_train, y_train, x_test, y_test`` (e.g. ``tfedge.datasets.digits()``).
    ``teacher``: a trained Keras model, or None to train ``recipe.teacher``. ``student``: a model or a
    function building one (None: ``recipe.student``). ``recipe`` also gives the augmentation that
    ``config.augment`` turns on. ``strategy``: a ``tf.distribute`` strategy for every training stage
    (default: the current one). With ``write=False`` (non-chief workers of a multi-worker run) nothing
    is written.
    """
    t_start = time.perf_counter()
    run = RunContext.prepare(config, data, strategy=strategy, recipe=recipe, write=write)
    outputs, stages = Outputs(run), []
    total = 5 if config.sparsity > 0 else 4

    def done(record: StageRecord) -> StageRecord:
        stages.append(record)
        run.log(f"[{len(stages)}/{total}] {record.summary()}")
        return record

    trained = done(train_teacher(run, teacher))
    outputs.save(f"{config.name}_teacher_float32.tflite", trained.tflite)
    teacher, teacher_bytes = trained.model, trained.bytes
    current = done(distill_student(run, student, teacher).relative_to(teacher_bytes))
    if config.sparsity > 0:
        current = done(prune_student(run, current.model, teacher).relative_to(teacher_bytes))
    qat = done(quantize_student(run, current.model, teacher))
    started = time.perf_counter()
    tfl = convert_student(run, qat.model)
    outputs.save(f"{config.name}_student_int8.tflite", tfl)
    done(validate_student(run, tfl, qat, started=started).relative_to(teacher_bytes))
    report = write_outputs(run, outputs, stages, seconds=time.perf_counter() - t_start)
    run.log(report["summary"])
    return report


def demo(out_dir: str = "tflite_models", quick: bool = False, verbose: int = 1) -> dict:
    """``tfedge demo``: the whole pipeline on the bundled digits, with the digits recipe."""
    config = PipelineConfig.for_recipe(DIGITS, quick=quick, out_dir=out_dir, verbose=verbose)
    return run_pipeline(config, digits(), recipe=DIGITS)


def _pair(value: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise InputError(f"{name} must be a pair (x, y) of arrays, got {type(value).__name__}: e.g. (x_val, y_val)")
    x, y = (np.asarray(a) for a in value)
    if len(x) != len(y):
        raise InputError(f"{name}: x has {len(x)} samples but y has {len(y)}; they must match")
    return x, y


def compress(
    teacher: keras.Model,
    data: Any,
    *,
    out_dir: str,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    student: keras.Model | None = None,
    sparsity: float = 0.8,
    epochs: int | None = None,
    name: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    write: bool = True,
    verbose: int = 1,
) -> dict:
    """The pipeline on a user's trained model (the teacher) and data (``tfedge compress``); returns the report.

    ``data``: ``(x, y)`` training arrays, or a split with ``x_train, y_train, x_test, y_test`` (such as
    ``tfedge.datasets.digits()``). ``val``: ``(x, y)`` to measure every stage on; by default 20 % of
    ``(x, y)`` is held out. The student is ``student`` or, by default, a copy of the teacher, then
    pruned to ``sparsity`` and quantization-aware trained, distilled from the teacher throughout;
    ``epochs`` per stage (default 10 to distill a given student, 5 to prune, 3 for QAT). Build the
    models in ``strategy.scope()`` when a ``strategy`` is given; with ``write=False`` (the non-chief
    workers of a multi-worker run) nothing is written. Outputs are named after ``name`` (default: the
    teacher's name).
    """
    if epochs is not None:
        epochs = check_int(epochs, "epochs", minimum=1, hint="e.g. 5")
    if isinstance(data, (tuple, list)):
        x, y = _pair(data, "data")
        if val is None and len(x) < 10:
            raise InputError(f"data has {len(x)} samples; give at least 10, or separate validation data")
    else:
        if val is not None:
            raise InputError("val must be None when data is a split with x_test / y_test: pass data=(x, y)")
        x, y, x_test, y_test = (np.asarray(getattr(data, k)) for k in ("x_train", "y_train", "x_test", "y_test"))
        val = (x_test, y_test)
    num_classes = int(teacher.output_shape[-1])
    check_inputs_match(x, teacher.input_shape, "data")
    check_labels_fit(y, num_classes, "data")
    if val is not None:
        x_val, y_val = _pair(val, "val")
        check_inputs_match(x_val, teacher.input_shape, "val")
        check_labels_fit(y_val, num_classes, "val")
        x_train, y_train = x, y
    else:
        from sklearn.model_selection import train_test_split  # scikit-learn is slow to import: only when needed

        x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=0)
    strategy = strategy or tf.distribute.get_strategy()
    distill_epochs = 0 if student is None else epochs or 10  # a copy of the teacher needs no distillation first
    if student is None:
        with strategy.scope():  # the Distiller needs teacher and student built under the same strategy
            student = copy_with_softmax_layer(teacher)
    prune_epochs = epochs or 5
    config = PipelineConfig(out_dir=str(out_dir), name=name or teacher.name, sparsity=sparsity, teacher_epochs=0,
                            distill_epochs=distill_epochs, prune_epochs=prune_epochs,
                            qat_epochs=max(1, prune_epochs // 2 + 1), augment=False, verbose=verbose)
    return run_pipeline(config, Split(x_train, y_train, x_val, y_val), teacher=teacher, student=student,
                        strategy=strategy, write=write)


__all__ = ["PipelineConfig", "StageRecord", "RunContext", "Outputs", "run_pipeline", "demo", "compress",
           "train_teacher", "distill_student", "prune_student", "quantize_student", "convert_student",
           "validate_student", "write_outputs"]
