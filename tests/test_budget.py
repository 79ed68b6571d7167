"""The budget search's pieces (tfedge/budget.py): sizes, measurement before training against real conversions and
real TFLite Micro allocations, and the choice among measured candidates."""

from __future__ import annotations

import re

import numpy as np
import pytest

import tfedge
from tfedge import keras
from tfedge.budget import (
    Candidate,
    candidate_table,
    drop_bound,
    measure,
    nothing_fits_message,
    pareto,
    parse_size,
    select,
)
from tfedge.recipes import small_student


@pytest.mark.parametrize(
    "value, expected",
    [
        (8000, 8000),
        ("8000", 8000),
        ("8KB", 8000),
        ("8kB", 8000),
        ("8k", 8000),
        ("8KiB", 8192),
        ("8 kib", 8192),
        ("3.5KB", 3500),
        ("1MB", 1_000_000),
        ("1MiB", 1_048_576),
        (np.int64(512), 512),
        (4096.0, 4096),
        (" 12 B ", 12),
    ],
)
def test_sizes_parse_to_bytes(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value", ["8 GB", "KB", "-5", "8 kilobytes", "", True, None, 1.5, "0", "1.5B", "0.0001KiB", [8000]]
)
def test_bad_sizes_are_refused_with_the_value_and_an_example(value):
    with pytest.raises(tfedge.InputError, match=r"^--flash must be .*(8KB|8000)"):
        parse_size(value, "--flash")


def _c(name, size, arena, acc=None, **kw):
    return Candidate(name, bytes=size, arena_bytes=arena, accuracy=acc, **kw)


def test_without_a_budget_the_smallest_within_the_floor_is_chosen():
    cands = [
        _c("big", 8000, 3000, 0.95),
        _c("mid", 4000, 2500, 0.94),
        _c("small", 2500, 2000, 0.90),
        _c("untrained", 1000, 500),
    ]
    assert select(cands, floor=0.935).name == "mid"
    assert select(cands, floor=0.89).name == "small"
    assert select(cands, floor=0.945).name == "big"
    tie = [_c("a", 3000, 2000, 0.95), _c("b", 3000, 2000, 0.96)]
    assert select(tie, floor=0.9).name == "b"


def test_with_a_budget_the_most_accurate_that_fits_is_chosen():
    cands = [
        _c("big", 8000, 3000, 0.97),
        _c("mid", 4000, 2500, 0.95),
        _c("small", 2500, 2000, 0.94),
        _c("wide-arena", 3000, 5000, 0.96),
    ]
    assert select(cands, floor=0.9, flash=5000).name == "wide-arena"
    assert select(cands, floor=0.9, flash=5000, ram=4096).name == "mid"
    assert select(cands, floor=0.9, ram=2048).name == "small"
    assert select(cands, floor=0.9, flash=9000).name == "big"


def test_nothing_at_the_floor_fails_with_the_table_of_what_was_tried():
    cands = [
        _c("big", 8000, 3000, 0.80, status="trained"),
        _c("small", 2500, 2000, 0.70, status="trained"),
        _c("over", 9000, 3000, status="does not fit"),
    ]
    with pytest.raises(tfedge.CheckFailed) as info:
        select(cands, floor=0.9, flash=8500)
    message = str(info.value)
    first, table = message.split("\n", 1)
    assert "no model within flash <= 8,500 B reaches the accuracy floor of 90.0 %" in first
    assert "best: 'big' at 80.0 %, 8,000 B" in first and "--max-accuracy-drop" in first
    assert re.search(r"small .* 2,500 B .* 70\.0 % .*trained", table) and "does not fit" in table


def test_drop_bound_is_wide_on_few_samples_and_narrows_with_more():
    """Equal on every sample: on 54 samples that still leaves room for more than a point on new data, on
    5,000 a tenth of one; disagreements against the model widen it, disagreements for it narrow it."""
    rng = np.random.default_rng(0)
    for n in (54, 300, 5000):
        base = rng.random(n) < 0.95
        assert drop_bound(base, base, 0.5) == pytest.approx(0.0)
        assert drop_bound(base, base) > drop_bound(base, base, 0.5)
    few, many = np.ones(54, bool), np.ones(5000, bool)
    assert drop_bound(few, few) > 0.01 > 0.001 > drop_bound(many, many)
    worse, better = many.copy(), many.copy()
    worse[:30] = False
    base = many.copy()
    base[:30] = False
    assert drop_bound(worse, many) > 30 / 5000 > drop_bound(better, base) + 30 / 5000
    bounds = [drop_bound(np.arange(300) >= k, np.ones(300, bool)) for k in range(6)]
    assert bounds == sorted(bounds) and len(set(bounds)) == 6
    with pytest.raises(tfedge.InputError, match="same samples"):
        drop_bound(np.ones(3, bool), np.ones(4, bool))


def test_a_candidate_not_surely_within_the_drop_is_not_shipped():
    """Above the floor on the validation data, but its drop bound exceeds the allowed drop: without a budget the
    next smallest that holds ships (the baseline, exempt, at the end); with a budget nothing does, and the message
    says why and what to change."""
    base = _c("baseline", 9000, 3000, 0.95)
    unsure = _c("unsure", 3000, 2000, 0.95, drop_bound=0.018, status="trained")
    sure = _c("sure", 5000, 2500, 0.945, drop_bound=0.007, status="trained")
    assert select([base, unsure, sure], floor=0.94).name == "unsure"  # the point estimate alone
    assert select([base, unsure, sure], floor=0.94, max_drop=0.01).name == "sure"
    assert select([base, unsure], floor=0.94, max_drop=0.01).name == "baseline"
    with pytest.raises(tfedge.CheckFailed) as info:
        select([base, unsure], floor=0.94, max_drop=0.01, flash=4000)
    first = str(info.value).splitlines()[0]
    assert "'unsure' reaches it on the validation data, but on new data it may be up to 1.8 points below" in first
    assert "validation) data" in first
    assert "1.8 pt" in candidate_table([base, unsure])


def test_nothing_fits_says_by_how_much_the_smallest_misses():
    cands = [_c("a", 5000, 3000), _c("b", 4200, 3500)]
    flash = nothing_fits_message(cands, flash=4000, ram=None)
    assert "the smallest file is 4,200 B ('b'), over the flash budget of 4,000 B by 200 B" in flash
    ram = nothing_fits_message(cands, flash=None, ram=2048)
    assert "the smallest arena is 3,000 B ('a'), over the RAM budget of 2,048 B by 952 B" in ram
    both = nothing_fits_message(cands, flash=4500, ram=3200)
    assert "none fits both" in both


def test_pareto_front_and_table_marks_the_chosen():
    a, b, c, d = _c("a", 1000, 1, 0.90), _c("b", 2000, 1, 0.85), _c("c", 3000, 1, 0.95), _c("d", 3000, 1)
    assert [x.name for x in pareto([c, b, a, d])] == ["a", "c"]
    table = candidate_table([a, b, c, d], chosen=c)
    assert "c *" in table and table.splitlines()[2].startswith("a ")


@pytest.fixture(scope="module")
def calibration(digits):
    return digits.x_train[:32]


def test_measured_bytes_and_arena_are_what_training_then_ships(calibration, digits):
    """Neither the int8 bytes nor the arena depend on the weights: the untrained measurement equals the file that
    a quantization-aware trained copy converts to, and the arena TFLite Micro then allocates."""
    model = small_student((8, 8, 1), 10, width=4)
    flash, arena, qat = measure(model, calibration)
    assert qat
    trained = tfedge.quantize_aware(small_student((8, 8, 1), 10, width=4))
    trained.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trained.fit(digits.x_train, digits.y_train, epochs=1, verbose=0)
    tfl = tfedge.convert(trained, representative_data=digits.x_train, quantization="int8")
    assert tfl.size == flash
    assert tfedge.runtimes.TFLiteMicro(tfl).measure_arena() == arena


def test_measurement_falls_back_to_post_training_int8_when_qat_cannot_wrap(calibration):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = keras.layers.LayerNormalization()(h)  # TF-MOT has no QAT for it
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(h))
    flash, arena, qat = measure(keras.Model(inputs, outputs), calibration)
    assert not qat and flash > 1000 and arena > 0
