"""The end-to-end pipeline: teacher -> candidates measured against the budget -> the ones that fit trained
(distilled -> [pruned] -> quantization-aware, still distilled) -> full-int8 TFLite -> validated on LiteRT and
TFLite Micro -> the one to ship chosen against the teacher's plain int8 baseline -> C array -> report.

Each stage is a function that returns a :class:`StageRecord` (the figures of the report, plus the model
it produced), and each runs under its own name, so an error says which stage failed; every training
stage's accuracy is checked, and a stage that collapses it to chance stops with the likely causes. The
stages are compositions of the public functions a user calls by hand (``tfedge.Distiller``,
``tfedge.prune``, ``tfedge.quantize_aware``, ``tfedge.convert``, ``tfedge.validate``,
``tfedge.prune_channels``, ``tfedge.export_c_array``), and :func:`run_pipeline` is a short composition
of the stages and the budget search of :mod:`tfedge.budget`. Outputs are written atomically; a model
below the accuracy floor is never written as the deployed model. The models and settings of a task
come from a :class:`tfedge.recipes.Recipe` (``tfedge demo``: :data:`tfedge.recipes.DIGITS`).

>>> from tfedge.pipeline import PipelineConfig
>>> PipelineConfig(flash="8KB").flash, PipelineConfig().sparsity
(8000, 0.0)
>>> from tfedge.recipes import DIGITS
>>> PipelineConfig.for_recipe(DIGITS, quick=True).distill_epochs
5
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tfedge._keras import keras, tf

import numpy as np

import tfedge
from tfedge.budget import (
    CONFIDENCE,
    Candidate,
    budget_text,
    candidate_table,
    drop_bound,
    format_size,
    measure,
    nothing_fits_message,
    pareto,
    parse_size,
    qualifies,
    select,
)
from tfedge.checks import check_bool, check_fraction, check_int, check_range
from tfedge.datasets import Split, check_inputs_match, check_labels_fit, digits
from tfedge.distillation import Distiller
from tfedge.distribute import weights_sha256
from tfedge.errors import CheckFailed, InputError, TfedgeError, first_line
from tfedge.graph import classes_of
from tfedge.recipes import DIGITS, Recipe, copy_with_softmax_layer, small_student
from tfedge.report import build_report, write_manifest, write_report

#: compress without --epochs: every distillation runs at least this many optimizer steps (QAT a fifth of them).
MIN_DISTILL_STEPS = 1500


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs besides data and models. Epoch counts are per stage.

    The defaults suit a user's own trained teacher (they are what ``tfedge compress`` runs);
    a recipe's measured settings come from :meth:`for_recipe` (``tfedge demo``: the digits recipe).
    ``teacher_*`` apply only when the pipeline trains the teacher; ``augment`` adds the recipe's
    augmented copies to the training data of every stage.

    Budget search: ``flash`` (deployed file bytes) and ``ram`` (TFLite Micro arena bytes) take sizes such
    as ``8000``, ``"8KB"``, ``"8KiB"``; ``max_accuracy_drop`` (points) below the teacher's plain int8
    accuracy sets the floor, and ``confidence`` how sure the choice must be that a smaller candidate is within
    that drop on new data (:func:`tfedge.budget.drop_bound`; 0.5: the point estimate); ``channel_ratios``
    are the fractions of the teacher's channels removed for its narrower candidates; ``student_widths``
    the widths of the built-in small students (:func:`tfedge.recipes.small_student`); ``min_steps``: each
    distillation runs at least this many optimizer steps (QAT a fifth of them), more epochs on small data
    sets; ``max_trained`` caps how many candidates are trained (None: every one that fits).
    ``sparsity`` > 0 adds magnitude pruning, which buys gzip bytes only (a plain int8 ``.tflite``
    stores zeros densely) and is searched downwards when it costs the floor. ``target`` (optional:
    ``bytes``, ``accuracy``, ``arena_bytes``) is a goal the report measures the shipped model against.
    """

    out_dir: str = "tflite_models"
    name: str = "model"
    sparsity: float = 0.0
    flash: int | str | None = None
    ram: int | str | None = None
    max_accuracy_drop: float = 1.0
    confidence: float = CONFIDENCE
    channel_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    student_widths: tuple[int, ...] = (4, 8, 16)
    min_steps: int = 0
    max_trained: int | None = None
    target: Mapping[str, Any] | None = None
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
    runtimes: tuple[str, ...] = ("litert", "litert-ref", "tflm")  # every kernel set: the report compares them
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
        for name in ("flash", "ram"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, parse_size(getattr(self, name), name))
        check_range(self.max_accuracy_drop, "max_accuracy_drop", 0.0, 100.0, hint="points of accuracy, e.g. 1.0")
        check_range(self.confidence, "confidence", 0.5, 1.0, high_open=True, hint="e.g. 0.8")
        ratios = tuple(
            check_fraction(r, "channel_ratios", high_open=True, hint="e.g. (0.25, 0.5)") for r in self.channel_ratios
        )
        object.__setattr__(self, "channel_ratios", ratios)
        widths = tuple(check_int(w, "student_widths", minimum=1, hint="e.g. (4, 8)") for w in self.student_widths)
        object.__setattr__(self, "student_widths", widths)
        check_int(self.min_steps, "min_steps", minimum=0)
        if self.max_trained is not None:
            check_int(self.max_trained, "max_trained", minimum=1)
        if self.target is not None:
            object.__setattr__(self, "target", dict(self.target))

    @property
    def flash_bytes(self) -> int | None:
        """The flash budget in bytes (``flash`` after parsing), or None."""
        return None if self.flash is None else int(self.flash)

    @property
    def ram_bytes(self) -> int | None:
        """The RAM (arena) budget in bytes (``ram`` after parsing), or None."""
        return None if self.ram is None else int(self.ram)

    @classmethod
    def quick(cls, **overrides: Any) -> PipelineConfig:
        """A short run (under a minute on 2 cores) for tests and notebooks; lower accuracy."""
        return cls(
            **{
                **dict(teacher_epochs=4, distill_epochs=5, prune_epochs=3, qat_epochs=2, calibration_samples=200),
                **overrides,
            }
        )

    @classmethod
    def for_recipe(cls, recipe: Recipe, *, quick: bool = False, **overrides: Any) -> PipelineConfig:
        """The recipe's measured settings (its short-run settings on top when ``quick``), then ``overrides``.

        >>> from tfedge.recipes import DIGITS
        >>> config = PipelineConfig.for_recipe(DIGITS, out_dir="build")
        >>> config.name, config.flash_bytes, config.out_dir
        ('digits', 3500, 'build')
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
        return (
            f"{self.stage}: {acc}; {self.bytes or 0:,} bytes; sparsity {100 * (self.sparsity or 0):.0f} % "
            f"({self.seconds} s)"
        )


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every stage of one run shares: the settings, the data, the strategy and where outputs go.

    ``x_fit, y_fit`` is the training data of every stage (``x_train`` plus the recipe's augmented
    copies when ``config.augment``); ``x_train`` alone calibrates the int8 conversion. ``split`` names
    what ``x_test, y_test`` are (``"test"``, or ``"validation"`` in compress) and ``data_name`` the data,
    for the report and the manifest (default: the recipe's dataset).
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
    split: str = "test"
    data_name: str = ""

    @classmethod
    def prepare(
        cls,
        config: PipelineConfig,
        data: Any,
        *,
        strategy: Any = None,
        recipe: Recipe = DIGITS,
        write: bool = True,
        split: str = "test",
        dataset: str | None = None,
    ) -> RunContext:
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
        return cls(
            config=config,
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            y_test=y_test,
            x_fit=x_fit,
            y_fit=y_fit,
            strategy=strategy or tf.distribute.get_strategy(),
            recipe=recipe,
            write=write,
            split=split,
            data_name=recipe.dataset if dataset is None else dataset,
        )

    @property
    def data_sizes(self) -> dict[str, Any]:
        """The report's ``data``: sample counts, what the held-out samples are, and the dataset."""
        return {"train": len(self.x_train), "test": len(self.x_test), "split": self.split, "dataset": self.data_name}

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

    def epochs_for(self, epochs: int, min_steps: int) -> int:
        """``epochs``, or more when that many epochs of the training data make fewer than ``min_steps`` steps."""
        per_epoch = int(np.ceil(len(self.x_fit) / self.config.batch_size))
        return max(epochs, int(np.ceil(min_steps / per_epoch)))

    def distill(
        self, student: keras.Model, teacher: keras.Model, epochs: int, learning_rate: float, callbacks: tuple = ()
    ) -> keras.Model:
        """Train ``student`` with a :class:`tfedge.Distiller` (cosine-decayed Adam) for ``epochs``; return it."""
        config = self.config
        per_epoch = int(np.ceil(len(self.x_fit) / config.batch_size))
        with self.strategy.scope():
            distiller = Distiller(student, teacher, temperature=config.temperature, alpha=config.alpha)
            steps = epochs * per_epoch
            schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
            distiller.compile(optimizer=keras.optimizers.Adam(schedule), metrics=["accuracy"])
        if config.verbose and epochs > 30:  # tiny epochs of a small data set: a progress bar over them, not a line each
            callbacks = (*callbacks, _EpochBar(epochs))
        distiller.fit(
            self.dataset(config.batch_size),
            epochs=epochs,
            callbacks=list(callbacks),
            verbose=(config.verbose and 2) if epochs <= 30 else 0,
        )
        return distiller.student

    @property
    def chance(self) -> float:
        """The accuracy of always answering the most frequent class of the test (validation) data."""
        return float(np.bincount(self.y_test.astype(np.int64)).max() / len(self.y_test))

    def check_collapse(self, stage: str, accuracy: float, model: keras.Model, reference: float) -> None:
        """Stop (``CheckFailed``; the stage's context names ``stage``) when ``accuracy`` fell to chance while
        ``reference`` (what
        the teacher scores) is well above it: the model learnt nothing, and shipping it would be silent."""
        chance = self.chance
        if accuracy > chance + max(0.02, 0.15 * (reference - chance)):
            return
        config = self.config
        raise CheckFailed(
            f"the accuracy of '{model.name}' collapsed to {100 * accuracy:.1f} % on the validation "
            f"data (chance {100 * chance:.1f} %, the teacher {100 * reference:.1f} %). Likely causes: the learning "
            f"rate ({config.learning_rate:g}; try {config.learning_rate / 3:.0e} or {config.learning_rate * 3:.0e}), a "
            f"softmax head on the student (end it with Dense(num_classes) and no activation: logits), or a student "
            f"too small for the task ({count_params(model):,} parameters: try a wider one, or leave --student out to "
            f"search the built-in candidates)"
        )

    def float_record(self, stage: str, model: keras.Model, started: float, **figures: Any) -> StageRecord:
        """The record of a float Keras model: its float32 .tflite bytes and its accuracy."""
        tfl = tfedge.convert(model, quantization="float32")
        return StageRecord(
            stage,
            count_params(model),
            bytes=tfl.size,
            gzip_bytes=tfl.gzip_size,
            accuracy={"keras": self.accuracy(model)},
            seconds=_since(started),
            model=model,
            tflite=tfl,
            **figures,
        )


class _EpochBar(keras.callbacks.Callback):
    """One Keras progress bar over the epochs of a long run of short epochs, with the last epoch's metrics."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.bar = keras.utils.Progbar(epochs, unit_name="epoch")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.bar.update(epoch + 1, values=[(k, v) for k, v in (logs or {}).items() if k in ("loss", "accuracy")])


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 1)


# --------------------------------------------------------------------------------------------
# the stages


def count_params(model: keras.Model) -> int:
    return int(model.count_params())


def train_teacher(run: RunContext, teacher: keras.Model | None = None) -> StageRecord:
    """Stage 'teacher': train the recipe's teacher (unless ``teacher`` is given), measure it as float32."""
    config, started = run.config, time.perf_counter()
    with run.stage("teacher"):
        if teacher is None:
            run.log(f"training the teacher ({config.teacher_epochs} epochs on {len(run.x_fit):,} samples)")
            with run.strategy.scope():
                teacher = run.recipe.teacher(run.input_shape, run.num_classes)
                teacher.compile(
                    optimizer=keras.optimizers.Adam(config.teacher_learning_rate),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"],
                )
            teacher.fit(
                run.dataset(config.teacher_batch_size), epochs=config.teacher_epochs, verbose=config.verbose and 2
            )
        tfl = tfedge.convert(teacher, quantization="float32")
        return StageRecord(
            "teacher float32",
            count_params(teacher),
            sparsity=0.0,
            bytes=tfl.size,
            gzip_bytes=tfl.gzip_size,
            accuracy={"keras": run.accuracy(teacher)},
            compression=1.0,
            seconds=_since(started),
            model=teacher,
            tflite=tfl,
        )


def ptq_baseline(run: RunContext, teacher: keras.Model) -> StageRecord:
    """Stage 'baseline': the teacher's own plain post-training int8 model, validated like the candidates.

    Its accuracy on the validation data, less ``max_accuracy_drop``, is the floor no shipped model goes below.
    """
    started = time.perf_counter()
    with run.stage("baseline (teacher, post-training int8)"):
        tfl = tfedge.convert(
            teacher,
            representative_data=run.x_train,
            quantization="int8",
            calibration_samples=run.config.calibration_samples,
        )
        result = tfedge.validate(tfl, run.x_test, run.y_test, runtimes=run.config.runtimes, verbose=0)
        accuracy = min(result.accuracy.values())
        chance = run.chance
        if accuracy <= chance + 0.02:
            raise CheckFailed(
                f"the teacher's plain int8 model scores {100 * accuracy:.1f} % on the validation data, no better than "
                f"chance ({100 * chance:.1f} %): check that the teacher is trained and that the labels of the data "
                f"match its outputs"
            )
        return StageRecord(
            "teacher int8 (PTQ baseline)",
            count_params(teacher),
            bytes=tfl.size,
            gzip_bytes=tfl.gzip_size,
            accuracy=dict(result.accuracy),
            arena_bytes=result.arena_bytes,
            seconds=_since(started),
            model=teacher,
            tflite=tfl,
            validation=result,
            inspection=tfedge.inspect(tfl),
        )


def distill_student(
    run: RunContext, student: Any, teacher: keras.Model, *, reference: float | None = None
) -> StageRecord:
    """Stage 'distillation': build the student if needed and distill it from ``teacher`` (``distill_epochs``).

    ``student``: a Keras model, a function of no arguments that builds one, or None for the recipe's
    student. With ``distill_epochs=0`` the student is measured as it is. With ``reference`` (the
    teacher's accuracy) a student that ends at chance stops the run (``CheckFailed``).
    """
    config, started = run.config, time.perf_counter()
    with run.stage("distillation"):
        with run.strategy.scope():
            if student is None:
                student = run.recipe.student(run.input_shape, run.num_classes)
            elif callable(student) and not isinstance(student, keras.Model):
                student = student()
        if config.distill_epochs:
            epochs = run.epochs_for(config.distill_epochs, config.min_steps)
            run.log(
                f"distilling '{student.name}' ({count_params(student):,} parameters; {epochs} "
                f"epochs, T={config.temperature}, alpha={config.alpha})"
            )
            student = run.distill(student, teacher, epochs, config.learning_rate)
        label = "student float32" + (" (distilled)" if config.distill_epochs else "")
        record = run.float_record(label, student, started, sparsity=0.0)
        if reference is not None and config.distill_epochs:
            run.check_collapse("distillation", record.accuracy["keras"], student, reference)
        return record


def prune_student(
    run: RunContext, student: keras.Model, teacher: keras.Model, *, sparsity: float | None = None
) -> StageRecord:
    """Stage 'pruning': prune ``student`` to ``sparsity`` (default ``config.sparsity``) while distilling it
    (``prune_epochs``), strip it."""
    config, started = run.config, time.perf_counter()
    sparsity = config.sparsity if sparsity is None else sparsity
    with run.stage("pruning"):
        run.log(f"pruning to {sparsity:.0%} while distilling ({config.prune_epochs} epochs)")
        with run.strategy.scope():
            pruned = tfedge.prune(student, sparsity, epochs=config.prune_epochs, end=0.7)
        pruned = run.distill(
            pruned,
            teacher,
            config.prune_epochs,
            config.learning_rate / 2,
            callbacks=(tfedge.PruningCallback(strict=True),),
        )
        with run.strategy.scope():
            stripped = tfedge.strip(pruned)
        tfl = tfedge.convert(stripped, quantization="float32")
        return StageRecord(
            "pruned float32",
            count_params(stripped),
            sparsity=tfedge.sparsity_report(stripped)["overall"],
            bytes=tfl.size,
            gzip_bytes=tfl.gzip_size,
            accuracy={"keras": run.accuracy(stripped)},
            seconds=_since(started),
            model=stripped,
            tflite=tfl,
        )


def prune_within_floor(
    run: RunContext, student: keras.Model, teacher: keras.Model, floor: float, *, reference: float | None = None
) -> StageRecord:
    """Stage 'pruning' with the sparsity searched downwards: ``config.sparsity``, then lower levels, until the
    pruned student stays at or above ``floor``. Magnitude sparsity never shrinks a plain int8 file, so a
    level that costs the floor is not worth imposing. The last level tried is returned if none holds."""
    level, record = run.config.sparsity, None
    while level >= 0.1:
        record = prune_student(run, student, teacher, sparsity=level)
        if record.accuracy["keras"] >= floor:
            return record
        run.log(
            f"sparsity {level:.0%} costs too much ({100 * record.accuracy['keras']:.1f} % < floor "
            f"{100 * floor:.1f} %): trying a lower sparsity"
        )
        level = round(level - 0.2, 2)
    assert record is not None
    if reference is not None:
        with run.stage("pruning"):
            run.check_collapse("pruning", record.accuracy["keras"], record.model, reference)
    return record


def quantize_student(
    run: RunContext, student: keras.Model, teacher: keras.Model, *, qat: bool = True, reference: float | None = None
) -> StageRecord:
    """Stage 'quantization-aware training': QAT (zeros kept when pruned) while distilling (``qat_epochs``).

    The record's ``params`` are the float student's; its ``model`` is the QAT model. With ``qat=False`` (a
    model TF-MOT cannot wrap) the float model passes through, to be post-training quantized.
    """
    config, started = run.config, time.perf_counter()
    if not qat:
        return StageRecord("float (post-training int8 follows)", count_params(student), model=student)
    with run.stage("quantization-aware training"):
        epochs = run.epochs_for(config.qat_epochs, config.min_steps // 5)
        run.log(f"quantization-aware training ({epochs} epochs, distilled)")
        sparse = tfedge.sparsity_report(student)["overall"] > 0.05
        with run.strategy.scope():
            wrapped = tfedge.quantize_aware(student, preserve_sparsity=sparse, strict=True)
        wrapped = run.distill(wrapped, teacher, epochs, config.qat_learning_rate)
        record = StageRecord(
            "QAT (fake-quant Keras)",
            count_params(student),
            sparsity=tfedge.sparsity_report(wrapped)["overall"],
            accuracy={"keras": run.accuracy(wrapped)},
            seconds=_since(started),
            model=wrapped,
        )
        if reference is not None:
            run.check_collapse("quantization-aware training", record.accuracy["keras"], student, reference)
        return record


def convert_student(run: RunContext, qat: keras.Model) -> Any:
    """Stage 'int8 conversion': the fully-int8 :class:`tfedge.TFLiteModel`, calibrated on ``x_train``."""
    with run.stage("int8 conversion"):
        return tfedge.convert(
            qat,
            representative_data=run.x_train,
            quantization="int8",
            calibration_samples=run.config.calibration_samples,
        )


def validate_student(run: RunContext, tfl: Any, qat: StageRecord, *, started: float | None = None) -> StageRecord:
    """Stage 'validation': inspect the int8 model and run it on ``config.runtimes`` against the QAT model.

    ``seconds`` count from ``started`` (default: now), e.g. from before the conversion.
    """
    started = time.perf_counter() if started is None else started
    with run.stage("validation"):
        info = tfedge.inspect(tfl)
        result = tfedge.validate(
            tfl, run.x_test, run.y_test, reference=qat.model, runtimes=run.config.runtimes, verbose=0
        )
        figures = result.to_dict()
        return StageRecord(
            "deployed int8",
            qat.params,
            sparsity=info.sparsity,
            bytes=tfl.size,
            gzip_bytes=tfl.gzip_size,
            accuracy=dict(result.accuracy),
            agreement=figures.get("agreement"),
            arena_bytes=result.arena_bytes,
            latency_us=figures.get("latency_us"),
            seconds=_since(started),
            model=qat.model,
            tflite=tfl,
            validation=result,
            inspection=info,
        )


# --------------------------------------------------------------------------------------------
# the budget search


def _builder(model: keras.Model) -> Callable[[], keras.Model]:
    """Build a fresh copy of ``model`` with its weights (a candidate is trained on a copy, never the original)."""

    def build() -> keras.Model:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        return copy

    return build


def default_candidates(run: RunContext, teacher: keras.Model, student: Any = None) -> list[Candidate]:
    """The search's candidates: the teacher's own architecture (a copy, quantization-aware trained), narrower
    copies of it (``tfedge.prune_channels`` at ``config.channel_ratios``, recovered by distillation), the
    user's ``student`` and the built-in small students (:func:`tfedge.recipes.small_student`)."""
    found: list[Candidate] = []
    with run.strategy.scope():
        head = copy_with_softmax_layer(teacher)
    found.append(Candidate(f"{teacher.name} (QAT)", "teacher", _builder(head), count_params(head), distill=False))
    for ratio in run.config.channel_ratios:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                narrow = tfedge.prune_channels(head, ratio)
        except Exception as exc:  # a graph prune_channels cannot rebuild: the search goes on without it
            run.log(f"no channel-pruned candidate at {ratio:.0%}: {exc}")
            continue
        if count_params(narrow) < count_params(head):
            found.append(
                Candidate(f"{teacher.name} -{ratio:.0%} channels", "channels", _builder(narrow), count_params(narrow))
            )
    if student is not None:
        with run.strategy.scope():
            built = student() if callable(student) and not isinstance(student, keras.Model) else student
        found.append(Candidate(f"student '{built.name}'", "student", _builder(built), count_params(built)))
    for width in run.config.student_widths:
        try:
            model = small_student(run.input_shape, run.num_classes, width=width)
        except InputError:
            break
        found.append(
            Candidate(
                f"built-in {model.name}",
                "built-in",
                functools.partial(small_student, run.input_shape, run.num_classes, width=width),
                count_params(model),
            )
        )
    return found


def recipe_candidates(run: RunContext) -> list[Candidate]:
    """The recipe's own candidates (``Recipe.candidates``), or its student when it lists none."""
    builders = dict(run.recipe.candidates) or {run.recipe.name + " student": run.recipe.student}
    out = []
    for name, build in builders.items():
        model = build(run.input_shape, run.num_classes)
        out.append(
            Candidate(name, "built-in", functools.partial(build, run.input_shape, run.num_classes), count_params(model))
        )
    return out


def measure_candidates(run: RunContext, candidates: list[Candidate]) -> list[Candidate]:
    """Stage 'measuring candidates': every candidate's int8 bytes and TFLite Micro arena, before any training."""
    started = time.perf_counter()
    with run.stage("measuring candidates"):
        calibration = run.x_train[:32]
        for c in candidates:
            t0 = time.perf_counter()
            if c.bytes is None:
                assert c.build is not None
                try:
                    with run.strategy.scope():
                        model = c.build()
                    c.bytes, c.arena_bytes, c.qat = measure(model, calibration)
                except TfedgeError as exc:  # e.g. an op TFLite Micro lacks: this candidate cannot be deployed
                    c.status = f"cannot be deployed: {first_line(exc, 120)}"
                    run.log(f"{c.name}: {c.status}")
                    continue
                if not c.qat:
                    c.status = "measured (TF-MOT cannot wrap it: post-training int8)"
            c.seconds = round(time.perf_counter() - t0, 1)
        run.log(
            f"measured {len(candidates)} candidates before training ({_since(started)} s); budget: "
            f"{budget_text(run.config.flash_bytes, run.config.ram_bytes)}\n"
            + candidate_table(candidates, flash=run.config.flash_bytes, ram=run.config.ram_bytes)
        )
    return candidates


def train_candidate(
    run: RunContext,
    c: Candidate,
    teacher: keras.Model,
    *,
    reference: float,
    floor: float,
) -> list[StageRecord]:
    """Train one candidate: distill -> [prune] -> QAT (or post-training int8) -> int8 -> validate. Its stages.

    Every candidate starts from ``config.seed``: what it scores does not depend on which others were trained
    before it (a budget changes that order)."""
    config = run.config
    assert c.build is not None
    keras.utils.set_random_seed(config.seed)
    with run.strategy.scope():
        model = c.build()
    distilled = (
        distill_student(run, model, teacher, reference=reference)
        if c.distill
        else run.float_record("student float32", model, time.perf_counter(), sparsity=0.0)
    )
    stages = [distilled]
    current = distilled
    if config.sparsity > 0:
        current = prune_within_floor(run, current.model, teacher, floor, reference=reference)
        stages.append(current)
    qat = quantize_student(run, current.model, teacher, qat=c.qat, reference=reference)
    if c.qat:
        stages.append(qat)
    started = time.perf_counter()
    tfl = convert_student(run, qat.model)
    deployed = validate_student(run, tfl, qat, started=started)
    stages.append(deployed)
    with run.stage("int8 conversion"):
        run.check_collapse("int8 conversion", min(deployed.accuracy.values()), current.model, reference)
    if c.bytes is not None and tfl.size != c.bytes:  # the budget is checked on what is shipped, not on the forecast
        run.log(f"'{c.name}': measured {format_size(c.bytes)} before training, {format_size(tfl.size)} after")
        c.bytes = tfl.size
    c.arena_bytes = deployed.arena_bytes
    c.accuracies = dict(deployed.accuracy)
    c.accuracy = min(deployed.accuracy.values())
    c.sparsity = deployed.sparsity
    return stages


def worst_correct(record: StageRecord, labels: np.ndarray) -> np.ndarray | None:
    """Which validation samples the deployed model gets right on its least accurate runtime (None when the
    validation kept no predictions)."""
    predictions = record.validation.predictions if record.validation is not None else {}
    if not predictions:
        return None
    worst = min(predictions, key=lambda runtime: record.accuracy.get(runtime, 0.0))
    return np.asarray(predictions[worst]) == np.asarray(labels)


def baseline_candidate(baseline: StageRecord) -> Candidate:
    """The teacher's plain int8 model as a candidate: measured, validated, needs no training."""
    return Candidate(
        "teacher int8 (PTQ)",
        "teacher",
        None,
        baseline.params,
        distill=False,
        qat=False,
        bytes=baseline.bytes,
        arena_bytes=baseline.arena_bytes,
        accuracy=min(baseline.accuracy.values()),
        accuracies=dict(baseline.accuracy),
        status="baseline (no training)",
        result=[baseline],
    )


def search(
    run: RunContext,
    everything: list[Candidate],
    teacher: keras.Model,
    *,
    floor: float,
    reference: float,
    user_student: bool = False,
) -> Candidate:
    """Train the candidates that fit and choose one (``tfedge.budget.select``); ``everything[0]`` is the baseline.

    The baseline (the teacher's plain int8 model) is a candidate too: it needs no training. Without a
    budget the candidates are trained smallest first and the first that holds the floor is shipped;
    with a budget the ones that fit are trained largest first (at most ``max_trained``) and the most
    accurate is shipped. Holding the floor means reaching it on the validation data and a
    :func:`tfedge.budget.drop_bound` (at ``config.confidence``) within ``max_accuracy_drop``. A collapsed
    stage of the user's own student stops the run (its error names the stage); a built-in candidate that
    collapses is recorded and the search goes on.
    """
    config, base = run.config, everything[0]
    max_drop = config.max_accuracy_drop / 100
    base_correct = worst_correct(base.result[0], run.y_test) if base.result else None
    fitting = [c for c in everything if c.fits(config.flash_bytes, config.ram_bytes)]
    if not fitting:
        raise CheckFailed(nothing_fits_message(everything, flash=config.flash_bytes, ram=config.ram_bytes))
    budget = config.flash_bytes is not None or config.ram_bytes is not None
    order = sorted(
        (c for c in fitting if c is not base), key=lambda c: (c.bytes or 0, c.arena_bytes or 0), reverse=budget
    )
    if config.max_trained is not None:
        order = order[: config.max_trained]
    for c in everything:
        if c is not base and c not in order:
            c.status = "does not fit" if c not in fitting else "not trained"
    for k, c in enumerate(order, 1):
        if not budget and (c.bytes or 0) >= (base.bytes or 0):
            c.status = "not trained (no smaller than the baseline)"
            continue
        run.log(f"[candidate {k}/{len(order)}] {c.name}: {format_size(c.bytes)}, arena {format_size(c.arena_bytes)}")
        started = time.perf_counter()
        try:
            c.result = train_candidate(run, c, teacher, reference=reference, floor=floor)
        except CheckFailed as exc:
            if c.origin == "student" and user_student:
                raise
            found = re.search(r"stage '([^']+)'.*collapsed to ([0-9.]+ %)", str(exc))
            c.status = f"collapsed in {found.group(1)} to {found.group(2)}" if found else f"failed: {first_line(exc)}"
            c.seconds = _since(started)
            run.log(f"{c.name}: {c.status}")
            continue
        c.seconds = _since(started)
        correct = worst_correct(c.result[-1], run.y_test)
        if correct is not None and base_correct is not None:
            c.drop_bound = drop_bound(correct, base_correct, config.confidence)
        over = not c.fits(config.flash_bytes, config.ram_bytes)
        c.status = "trained" + (" (over the budget after training)" if over else "")
        if not qualifies(c, floor=floor):
            verdict = " (below the floor)"
        elif not qualifies(c, floor=floor, max_drop=max_drop):
            verdict = (
                f" (above the floor here, but {len(run.y_test)} validation samples leave room for a drop of "
                f"{100 * (c.drop_bound or 0):.1f} pt on new data, over {config.max_accuracy_drop:g} pt)"
            )
            c.status += ": not surely within the drop"
        else:
            verdict = ""
        run.log(
            f"{c.name}: {format_size(c.bytes)}, arena {format_size(c.arena_bytes)}, accuracy "
            + ", ".join(f"{r} {100 * a:.1f} %" for r, a in c.accuracies.items())
            + verdict
        )
        if not budget and qualifies(c, floor=floor, max_drop=max_drop):
            break  # smallest first: the first that holds the floor is the smallest that does
    for c in order:
        if c.status == "measured" or c.status.startswith("measured ("):
            c.status = "not trained (a smaller one reached the floor)"
    collapsed = [c.name for c in order if c.status.startswith("collapsed")]
    if collapsed:
        steps = run.epochs_for(config.distill_epochs, config.min_steps) * int(
            np.ceil(len(run.x_fit) / config.batch_size)
        )
        run.log(
            f"note: {len(collapsed)} candidate(s) collapsed in training ({', '.join(collapsed)}) after {steps:,} "
            "distillation steps: small students often need more; give more --epochs (or leave it out in tfedge "
            f"compress: at least {MIN_DISTILL_STEPS:,} steps)"
        )
    chosen = select(everything, floor=floor, flash=config.flash_bytes, ram=config.ram_bytes, max_drop=max_drop)
    chosen.status += " -> shipped"
    return chosen


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


def search_summary(
    run: RunContext, candidates: list[Candidate], chosen: Candidate | None, baseline: StageRecord, teacher: StageRecord
) -> dict[str, Any]:
    """The report's ``search``: budget, floor, baseline, every candidate (Pareto front marked), the choice, target."""
    config = run.config
    base_acc = min(baseline.accuracy.values())
    front = {id(c) for c in pareto(candidates)}
    out: dict[str, Any] = {
        "budget": {"flash": config.flash_bytes, "ram": config.ram_bytes},
        "max_accuracy_drop": config.max_accuracy_drop,
        "confidence": config.confidence,
        "baseline": {"bytes": baseline.bytes, "arena_bytes": baseline.arena_bytes, "accuracy": base_acc},
        "floor": base_acc - config.max_accuracy_drop / 100,
        "teacher": {"bytes": teacher.bytes, "accuracy": teacher.accuracy.get("keras")},
        "candidates": [{**c.to_dict(), "pareto": id(c) in front} for c in candidates],
        "chosen": chosen.name if chosen is not None else None,
    }
    if config.target and chosen is not None:
        target = dict(config.target)
        gaps = {}
        if "bytes" in target:
            gaps["bytes_over"] = max(0, (chosen.bytes or 0) - target["bytes"])
        if "accuracy" in target:
            gaps["accuracy_short"] = max(0.0, round(target["accuracy"] - (chosen.accuracy or 0), 6))
        if "arena_bytes" in target:
            gaps["arena_over"] = max(0, (chosen.arena_bytes or 0) - target["arena_bytes"])
        out["target"] = {**target, "met": not any(gaps.values()), **gaps}
    return out


def write_outputs(
    run: RunContext,
    outputs: Outputs,
    stages: list[StageRecord],
    *,
    seconds: float,
    search: Mapping[str, Any] | None = None,
) -> dict:
    """Stage 'writing outputs': the C array of the deployed model, the report and the manifest; returns the report."""
    config, deployed = run.config, stages[-1]
    with run.stage("writing outputs"):
        stem = f"{config.name}_student_int8"
        if run.write:
            paths = tfedge.export_c_array(deployed.tflite, run.out / stem, name=stem, arena_bytes=deployed.arena_bytes)
            for path in paths:
                outputs.add(Path(path))
        report = build_report(
            title=f"tfedge: {config.name}",
            config=dataclasses.asdict(config),
            stages=[s.to_dict() for s in stages],
            deployed={**deployed.validation.to_dict(), "claim": deployed.validation.claim()},
            fully_int8=bool(deployed.inspection.fully_int8),
            student_weights_sha256=weights_sha256(deployed.model),
            files=outputs.files,
            data=run.data_sizes,
            seconds=seconds,
            search=search,
        )
        if run.write:
            write_report(report, run.out)
            write_manifest(
                run.out, outputs.files, dataset=run.data_name, scored=f"{stem}.tflite", accuracy=deployed.accuracy
            )
        return report


# --------------------------------------------------------------------------------------------
# the pipeline


def run_pipeline(
    config: PipelineConfig,
    data: Any,
    *,
    teacher: keras.Model | None = None,
    student: keras.Model | Callable[[], keras.Model] | None = None,
    candidates: list[Candidate] | None = None,
    search_candidates: bool = False,
    strategy: tf.distribute.Strategy | None = None,
    write: bool = True,
    recipe: Recipe = DIGITS,
    split: str = "test",
    dataset: str | None = None,
) -> dict:
    """Run every stage and return the report dict; outputs go to ``config.out_dir`` when ``write``.

    ``data`` has ``x_train, y_train, x_test, y_test`` (e.g. ``tfedge.datasets.digits()``); every accuracy
    (stage checks, floor, choice) is measured on ``x_test, y_test``. ``teacher``: a trained Keras model, or
    None to train ``recipe.teacher``. The candidates: ``candidates`` if given; with ``search_candidates``
    the full search of :func:`compress` (:func:`default_candidates`); else ``student`` (a model or a function
    building one) alone; else the recipe's candidates. The teacher's plain int8 model is always the
    baseline and a candidate. ``strategy``: a ``tf.distribute`` strategy for every training stage. With
    ``write=False`` (non-chief workers of a multi-worker run) nothing is written. Raises
    :class:`tfedge.CheckFailed` (exit 1) when no candidate fits the budget or reaches the accuracy floor;
    the report of what was tried is then written, the deployed model is not.
    """
    t_start = time.perf_counter()
    run = RunContext.prepare(config, data, strategy=strategy, recipe=recipe, write=write, split=split, dataset=dataset)
    outputs = Outputs(run)
    trained = train_teacher(run, teacher)
    run.log(f"[1/4] {trained.summary()}")
    outputs.save(f"{config.name}_teacher_float32.tflite", trained.tflite)
    teacher, teacher_bytes = trained.model, trained.bytes
    baseline = ptq_baseline(run, teacher).relative_to(teacher_bytes)
    floor = min(baseline.accuracy.values()) - config.max_accuracy_drop / 100
    run.log(
        f"[2/4] {baseline.summary()}; arena {format_size(baseline.arena_bytes)}; accuracy floor "
        f"{100 * floor:.1f} % (baseline - {config.max_accuracy_drop:g} pt)"
    )
    if 100 / len(run.y_test) > config.max_accuracy_drop / 2:
        run.log(
            f"note: {len(run.y_test)} validation samples: one sample is {100 / len(run.y_test):.1f} pt, so a "
            f"smaller model must about match the baseline on them to be shipped as within "
            f"{config.max_accuracy_drop:g} pt on new data ({100 * config.confidence:.0f} % confidence); more "
            f"validation data lets a smaller one through"
        )
    if candidates is None:
        if search_candidates:
            candidates = default_candidates(run, teacher, student)
        elif student is not None:
            with run.strategy.scope():
                built = student() if callable(student) and not isinstance(student, keras.Model) else student
            candidates = [Candidate(f"student '{built.name}'", "student", lambda: built, count_params(built))]
        else:
            candidates = recipe_candidates(run)
    everything = [baseline_candidate(baseline), *candidates]
    measure_candidates(run, candidates)
    run.log(f"[3/4] training the candidates that fit ({budget_text(config.flash_bytes, config.ram_bytes)})")
    try:
        chosen = search(
            run, everything, teacher, floor=floor, reference=trained.accuracy["keras"], user_student=student is not None
        )
    except CheckFailed as exc:
        if write:  # what was tried, for the person who reads the error; no deployed model
            report = build_report(
                title=f"tfedge: {config.name} (nothing shipped)",
                config=dataclasses.asdict(config),
                stages=[trained.to_dict(), baseline.to_dict()],
                deployed={},
                fully_int8=False,
                student_weights_sha256="",
                files=outputs.files,
                seconds=time.perf_counter() - t_start,
                data=run.data_sizes,
                search=search_summary(run, everything, None, baseline, trained),
                summary=first_line(exc),
            )
            write_report(report, run.out)
        raise
    stages = [trained, baseline] + [s.relative_to(teacher_bytes) for s in chosen.result if s is not baseline]
    run.log(
        f"[4/4] chosen: {chosen.name}\n"
        + candidate_table(everything, flash=config.flash_bytes, ram=config.ram_bytes, chosen=chosen)
    )
    outputs.save(f"{config.name}_student_int8.tflite", stages[-1].tflite)
    report = write_outputs(
        run,
        outputs,
        stages,
        seconds=time.perf_counter() - t_start,
        search=search_summary(run, everything, chosen, baseline, trained),
    )
    run.log(report["summary"])
    run.log(f"kernel sets: {report['deployed']['claim']}")
    return report


def demo(out_dir: str = "tflite_models", quick: bool = False, verbose: int = 1) -> dict:
    """``tfedge demo``: the whole pipeline on the bundled digits, with the digits recipe and its flash budget."""
    config = PipelineConfig.for_recipe(DIGITS, quick=quick, out_dir=out_dir, verbose=verbose)
    return run_pipeline(config, digits(), recipe=DIGITS)


def _pair(value: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise InputError(f"{name} must be a pair (x, y) of arrays, got {type(value).__name__}: e.g. (x_val, y_val)")
    x, y = (np.asarray(a) for a in value)
    if len(x) != len(y):
        raise InputError(f"{name}: x has {len(x)} samples but y has {len(y)}; they must match")
    return x, y


def split_validation(
    x: np.ndarray, y: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_val, y_val``: ``fraction`` held out, stratified by label (when every class has two
    samples or more), with a fixed seed.

    >>> x, y = np.arange(20.0)[:, None], np.array([0] * 10 + [1] * 10)
    >>> [len(a) for a in split_validation(x, y)], np.bincount(split_validation(x, y)[3]).tolist()
    ([16, 16, 4, 4], [2, 2])
    """
    from sklearn.model_selection import (
        train_test_split,  # scikit-learn is slow to import: only when needed
    )

    counts = np.bincount(y.astype(np.int64))
    stratify = y if counts[counts > 0].min() >= 2 else None
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=fraction, random_state=seed, stratify=stratify)
    return x_train, y_train, x_val, y_val


def compress(
    teacher: keras.Model,
    data: Any,
    *,
    out_dir: str,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    student: keras.Model | None = None,
    flash: int | str | None = None,
    ram: int | str | None = None,
    max_accuracy_drop: float = 1.0,
    sparsity: float = 0.0,
    channels: float | tuple[float, ...] | None = None,
    epochs: int | None = None,
    name: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
    write: bool = True,
    verbose: int = 1,
    **settings: Any,
) -> dict:
    """Compress a user's trained model (the teacher) to a device budget (``tfedge compress``); returns the report.

    ``data``: ``(x, y)`` training arrays, or a split with ``x_train, y_train, x_test, y_test`` (such as
    ``tfedge.datasets.digits()``). ``val``: ``(x, y)`` to measure every stage and the choice on; by default
    20 % of ``(x, y)`` is held out (stratified, fixed seed). ``flash`` (deployed bytes) and ``ram`` (TFLite
    Micro arena bytes) take ``8000``, ``"8KB"`` or ``"8KiB"``.

    The baseline is the teacher's plain post-training int8 model on the same validation data; the floor
    is the baseline less ``max_accuracy_drop`` points. Candidates: the teacher's architecture (QAT), narrower
    copies from ``tfedge.prune_channels`` (``channels``: the fractions removed, default 0.25, 0.5, 0.75),
    ``student`` if given, and small built-in students. Each is measured (int8 bytes, arena) before any
    training; only those that fit are trained (distilled, ``sparsity`` > 0 adds magnitude pruning, QAT,
    int8). Without a budget the smallest within the floor is shipped (the baseline itself when nothing
    smaller holds the accuracy); with one the most accurate that fits. Raises :class:`tfedge.CheckFailed`
    when nothing fits or reaches the floor (nothing is shipped), or when a stage of ``student`` collapses
    to chance. ``epochs`` per stage (default 10 to distill, 5 to prune, 3 for QAT; on small data sets more,
    so that distillation runs at least :data:`MIN_DISTILL_STEPS` (1,500) steps and QAT a fifth of them).
    Build the models in ``strategy.scope()`` when a ``strategy`` is given; with ``write=False`` nothing is
    written. Outputs are named after ``name`` (default: the teacher's name); ``settings``: more
    :class:`PipelineConfig` fields.
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
    num_classes = classes_of(teacher, f"teacher '{teacher.name}'")
    check_inputs_match(x, teacher.input_shape, "data")
    check_labels_fit(y, num_classes, "data")
    if val is not None:
        x_val, y_val = _pair(val, "val")
        check_inputs_match(x_val, teacher.input_shape, "val")
        check_labels_fit(y_val, num_classes, "val")
        x_train, y_train = x, y
    else:
        x_train, y_train, x_val, y_val = split_validation(x, y)
        if verbose:
            print(
                f"tfedge: no validation data given: {len(x_val):,} samples (20 %) of the training data are held out "
                "for the checks and the choice. If the teacher was trained on them, its accuracy there (and that of "
                "its narrower copies) is overstated: give validation data it never saw (--val / val=)",
                flush=True,
            )
    ratios = settings.pop("channel_ratios", (0.25, 0.5, 0.75))
    if channels is not None:
        ratios = tuple(channels) if isinstance(channels, (tuple, list)) else (channels,)
    strategy = strategy or tf.distribute.get_strategy()
    distill_epochs = epochs or 10
    prune_epochs = epochs or 5
    config = PipelineConfig(
        **{
            **dict(
                out_dir=str(out_dir),
                name=name or teacher.name,
                sparsity=sparsity,
                teacher_epochs=0,
                distill_epochs=distill_epochs,
                prune_epochs=prune_epochs,
                qat_epochs=max(1, prune_epochs // 2 + 1),
                augment=False,
                verbose=verbose,
                flash=flash,
                ram=ram,
                max_accuracy_drop=max_accuracy_drop,
                channel_ratios=ratios,
                min_steps=0 if epochs else MIN_DISTILL_STEPS,
            ),
            **settings,
        }
    )
    held_out = "given" if val is not None else "20 % of the training data held out, stratified, seed 0"
    return run_pipeline(
        config,
        Split(x_train, y_train, x_val, y_val),
        teacher=teacher,
        student=student,
        strategy=strategy,
        write=write,
        search_candidates=True,
        split="validation",
        dataset=f"the user's data: {len(x_train):,} training and {len(x_val):,} validation samples ({held_out})",
    )


__all__ = [
    "MIN_DISTILL_STEPS",
    "Outputs",
    "PipelineConfig",
    "RunContext",
    "StageRecord",
    "baseline_candidate",
    "compress",
    "convert_student",
    "count_params",
    "default_candidates",
    "demo",
    "distill_student",
    "measure_candidates",
    "prune_student",
    "prune_within_floor",
    "ptq_baseline",
    "quantize_student",
    "recipe_candidates",
    "run_pipeline",
    "search",
    "search_summary",
    "split_validation",
    "train_candidate",
    "train_teacher",
    "validate_student",
    "worst_correct",
    "write_outputs",
]
