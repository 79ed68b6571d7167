"""A pipeline run as JSON, Markdown tables and an accuracy-vs-size plot, and its file manifest.

A report is a plain dict (JSON-able, made by :func:`build_report`). Its ``stages`` list holds one dict
per stage (``tfedge.pipeline.StageRecord.to_dict()``) with the keys ``stage``, ``params``,
``sparsity``, ``bytes``, ``gzip_bytes``, ``accuracy`` (runtime -> fraction), and optionally
``agreement``, ``arena_bytes``, ``latency_us`` (``{"median", "p90"}``), ``compression`` (teacher
bytes / stage bytes) and ``seconds``.

>>> report = {"title": "demo", "stages": [
...     {"stage": "teacher float", "params": 100, "sparsity": 0.0, "bytes": 4000, "gzip_bytes": 3000,
...      "accuracy": {"keras": 0.98}, "compression": 1.0},
...     {"stage": "deployed int8", "params": 50, "sparsity": 0.5, "bytes": 1000, "gzip_bytes": 600,
...      "accuracy": {"litert": 0.97, "tflm": 0.97}, "compression": 4.0}]}
>>> print(render_markdown(report).splitlines()[0])
# demo
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfedge import __version__
from tfedge.files import PathLike, atomic_write_bytes, atomic_write_text


def summary_line(final: Mapping[str, Any], test_samples: int, seconds: float, split: str = "test") -> str:
    """One sentence on the deployed model (the last stage): bytes, compression, accuracy, arena, time.

    >>> line = summary_line({"bytes": 1000, "compression": 4.0, "accuracy": {"litert": 0.97}}, 450, 12.3)
    >>> line.split("; ")[0]
    'Deployed fully-int8 student: 1,000 bytes (4.0x smaller than the float32 teacher), accuracy litert 97.0 %'
    """
    accuracy = ", ".join(f"{k} {100 * v:.1f} %" for k, v in final["accuracy"].items())
    arena = f", TFLite Micro arena {final['arena_bytes']:,} bytes" if final.get("arena_bytes") else ""
    return (
        f"Deployed fully-int8 student: {final['bytes']:,} bytes ({final['compression']:.1f}x smaller than the "
        f"float32 teacher), accuracy {accuracy}{arena}; {test_samples} {split} samples, total {seconds:.0f} s."
    )


def build_report(
    *,
    title: str,
    config: Mapping[str, Any],
    data: Mapping[str, Any],
    stages: list[dict],
    deployed: Mapping[str, Any],
    fully_int8: bool,
    student_weights_sha256: str,
    files: Mapping[str, Mapping[str, Any]],
    seconds: float,
    search: Mapping[str, Any] | None = None,
    summary: str | None = None,
) -> dict:
    """The report dict of a run: its stages (dicts, the last one the deployed model), checks and files.

    ``search``: the budget search (budget, floor, baseline, every candidate, the choice, the target);
    ``summary`` replaces the one-line summary of the deployed model (e.g. why nothing was shipped).
    """
    line = (
        summary if summary is not None else summary_line(stages[-1], data["test"], seconds, data.get("split", "test"))
    )
    if search and search.get("target") and summary is None:
        line += " " + target_line(search["target"])
    return {
        "title": title,
        "summary": line,
        "tfedge_version": __version__,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()},
        "data": dict(data),
        "stages": stages,
        "deployed": dict(deployed),
        "fully_int8": fully_int8,
        "student_weights_sha256": student_weights_sha256,
        "files": dict(files),
        "seconds": round(seconds, 1),
        **({"search": dict(search)} if search else {}),
    }


def target_line(target: Mapping[str, Any]) -> str:
    """The shipped model against a goal: met, or by how much it misses.

    >>> target_line({"bytes": 3500, "accuracy": 0.979, "met": False, "bytes_over": 120, "accuracy_short": 0.0})
    'Target (<= 3,500 B, >= 97.9 %): not met: 120 B over.'
    """
    goal = ", ".join(
        ([f"<= {target['bytes']:,} B"] if "bytes" in target else [])
        + ([f">= {100 * target['accuracy']:.1f} %"] if "accuracy" in target else [])
        + ([f"arena <= {target['arena_bytes']:,} B"] if "arena_bytes" in target else [])
    )
    if target.get("met"):
        return f"Target ({goal}): met."
    gaps = (
        ([f"{target['bytes_over']:,} B over"] if target.get("bytes_over") else [])
        + ([f"{100 * target['accuracy_short']:.1f} pt short"] if target.get("accuracy_short") else [])
        + ([f"arena {target['arena_over']:,} B over"] if target.get("arena_over") else [])
    )
    return f"Target ({goal}): not met: {', '.join(gaps)}."


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _points(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} pt"


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:,}"


def render_markdown(report: dict) -> str:
    """Render a report as Markdown a person reads: one row per stage, then the deployed model's checks."""
    stages = report.get("stages", [])
    runtimes: list[str] = []
    for stage in stages:
        for name in stage.get("accuracy", {}):
            if name not in runtimes:
                runtimes.append(name)
    lines = [f"# {report.get('title', 'tfedge report')}", ""]
    if report.get("summary"):
        lines += [report["summary"], ""]
    header = ["stage", "params", "sparsity", "bytes", "gzip bytes", "x smaller", *[f"acc {r}" for r in runtimes]]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in stages:
        row = [
            s["stage"],
            _num(s.get("params")),
            _pct(s.get("sparsity")),
            _num(s.get("bytes")),
            _num(s.get("gzip_bytes")),
            "–" if s.get("compression") is None else f"{s['compression']:.1f}x",
            *[_pct(s.get("accuracy", {}).get(r)) for r in runtimes],
        ]
        lines.append("| " + " | ".join(row) + " |")
    search = report.get("search")
    if search:
        budget = search.get("budget", {})
        limits = ", ".join(f"{k} <= {v:,} B" for k, v in budget.items() if v is not None) or "none"
        intro = (
            f"Budget: {limits}. Accuracy floor {_pct(search.get('floor'))} (the teacher's plain int8 model "
            f"{_pct(search['baseline'].get('accuracy'))} less {search.get('max_accuracy_drop')} pt). "
            f"Drop bound: how far below the baseline a candidate may be on new data "
            f"({_pct(search.get('confidence'))} confidence, from its agreement with the baseline sample by sample); "
            f"a smaller candidate ships only when it is within {search.get('max_accuracy_drop')} pt. "
            f"Chosen: {search.get('chosen') or 'none'}. Pareto front: marked *."
        )
        lines += [
            "",
            "## Candidates (budget search)",
            "",
            intro,
            "",
            "| candidate | params | int8 bytes | arena bytes | accuracy | drop bound | status |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in sorted(search.get("candidates", []), key=lambda c: c.get("bytes") or 0):
            lines.append(
                f"| {c['name']}{' *' if c.get('pareto') else ''} | {_num(c.get('params'))} | "
                f"{_num(c.get('bytes'))} | {_num(c.get('arena_bytes'))} | {_pct(c.get('accuracy'))} | "
                f"{_points(c.get('drop_bound'))} | {c.get('status', '')} |"
            )
        if search.get("target"):
            lines += ["", target_line(search["target"])]
    deployed = report.get("deployed")
    if deployed:
        lines += ["", "## Deployed model on the runtimes", ""]
        if deployed.get("claim"):
            lines += [f"{deployed['claim']}.", ""]
        lines += ["| figure | value |", "|---|---|"]
        for key, value in deployed.items():
            if key in _DEPLOYED_DETAIL or isinstance(value, list):
                continue  # the matrix gets its own table; per-runtime status and I/O lists live in report.json
            if isinstance(value, dict):
                value = ", ".join(
                    f"{k}: {_fmt(v['status'] if isinstance(v, dict) and 'status' in v else v)}"
                    for k, v in value.items()
                )
            else:
                value = _fmt(value)
            lines.append(f"| {key.replace('_', ' ')} | {value} |")
        lines += _matrix_table(deployed.get("matrix") or [])
    files = report.get("files")
    if files:
        lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
        for name, meta in files.items():
            lines.append(f"| {name} | {meta['bytes']:,} | `{meta['sha256'][:16]}…` |")
    return "\n".join(lines) + "\n"


_DEPLOYED_DETAIL = ("claim", "kernels", "trace")


def _matrix_table(matrix: list[dict]) -> list[str]:
    """The pairwise kernel-set matrix of the validation (:attr:`tfedge.validation.ValidationResult.matrix`)."""
    if not matrix:
        return []
    lines = [
        "",
        "### Kernel sets, pair by pair",
        "",
        "| pair | output | top-1 agreement | identical rows | max raw diff | mean raw diff |",
        "|---|---|---|---|---|---|",
    ]
    for m in matrix:
        lines.append(
            f"| {m['a']} vs {m['b']} | {m.get('output', '')} | {_pct(m.get('top1_agreement'))} | "
            f"{_pct(m.get('bit_identical'))} | {_fmt(m.get('max_raw_diff'))} | "
            f"{_fmt(m.get('mean_raw_diff'))} |"
        )
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def plot(report: dict, path: PathLike) -> None:
    """Accuracy against bytes (log scale), written atomically as PNG.

    With a budget search: every trained candidate (marker area: its TFLite Micro arena), the Pareto front,
    the chosen model, the plain int8 baseline, the float teacher and the budget. Without: every stage.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    search = report.get("search")
    if search:
        _plot_search(ax, search)
    else:
        points = [s for s in report.get("stages", []) if s.get("bytes") and s.get("accuracy")]
        largest = max((s["bytes"] for s in points), default=0)
        for stage in points:
            acc = min(stage["accuracy"].values())
            ax.scatter(stage["bytes"], 100 * acc, s=60, zorder=3)
            label = f"{stage['stage']}\n{stage['bytes']:,} B, {100 * acc:.1f} %"
            right = stage["bytes"] == largest  # keep the largest model's label inside the axes
            ax.annotate(
                label,
                (stage["bytes"], 100 * acc),
                textcoords="offset points",
                xytext=(-8 if right else 8, -4),
                ha="right" if right else "left",
                va="top",
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.set_xlabel("model size (bytes, .tflite; log scale)")
    ax.set_ylabel("accuracy (%; lowest runtime)")
    ax.set_title(report.get("title", "tfedge: accuracy vs size"))
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _plot_search(ax: Any, search: Mapping[str, Any]) -> None:
    trained = [c for c in search.get("candidates", []) if c.get("accuracy") is not None and c.get("bytes")]
    largest_arena = max((c.get("arena_bytes") or 1 for c in trained), default=1)

    def area(c: Mapping[str, Any]) -> float:
        return 30 + 400 * (c.get("arena_bytes") or 0) / largest_arena

    for c in trained:
        ax.scatter(c["bytes"], 100 * c["accuracy"], s=area(c), alpha=0.5, color="tab:blue", zorder=3)
        ax.annotate(
            c["name"], (c["bytes"], 100 * c["accuracy"]), textcoords="offset points", xytext=(6, -10), fontsize=7
        )
    front = sorted((c for c in trained if c.get("pareto")), key=lambda c: c["bytes"])
    if front:
        ax.plot(
            [c["bytes"] for c in front],
            [100 * c["accuracy"] for c in front],
            "--",
            color="tab:blue",
            alpha=0.6,
            label="Pareto front (marker area: TFLite Micro arena)",
        )
    chosen = next((c for c in trained if c["name"] == search.get("chosen")), None)
    if chosen:
        ax.scatter(
            chosen["bytes"],
            100 * chosen["accuracy"],
            s=area(chosen),
            facecolors="none",
            edgecolors="tab:red",
            linewidths=2,
            zorder=4,
            label=f"chosen: {chosen['bytes']:,} B",
        )
    for key, marker, color, label in (
        ("baseline", "s", "tab:orange", "teacher, plain int8 (baseline)"),
        ("teacher", "^", "tab:green", "teacher, float32"),
    ):
        point = search.get(key, {})
        if point.get("bytes") and point.get("accuracy") is not None:
            ax.scatter(
                point["bytes"],
                100 * point["accuracy"],
                marker=marker,
                color=color,
                s=60,
                zorder=4,
                label=f"{label}: {point['bytes']:,} B",
            )
    if search.get("floor") is not None:
        ax.axhline(100 * search["floor"], color="gray", linestyle=":", label="accuracy floor")
    flash = search.get("budget", {}).get("flash")
    if flash:
        ax.axvline(flash, color="tab:red", linestyle=":", label=f"flash budget {flash:,} B")
    ax.legend(fontsize=7, loc="lower right")


def write_report(report: dict, out_dir: PathLike, stem: str = "report") -> dict[str, Path]:
    """Write ``stem.json``, ``stem.md`` and ``stem.png`` into ``out_dir`` (each atomically)."""
    out = Path(out_dir)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, sort_keys=False) + os.linesep)
    atomic_write_text(paths["md"], render_markdown(report))
    plot(report, paths["png"])
    return paths


def write_manifest(
    out_dir: PathLike,
    files: Mapping[str, Mapping[str, Any]],
    *,
    dataset: str,
    scored: str,
    accuracy: Mapping[str, float],
) -> Path:
    """Write ``MANIFEST.json`` (atomically): each file's SHA-256 and bytes, and the accuracy of the ``scored`` one."""
    manifest = {
        "dataset": dataset,
        "files": [
            {
                "file": name,
                "sha256": meta["sha256"],
                "bytes": meta["bytes"],
                **({"accuracy": dict(accuracy)} if name == scored else {}),
            }
            for name, meta in files.items()
        ],
    }
    path = Path(out_dir) / "MANIFEST.json"
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path


__all__ = ["build_report", "plot", "render_markdown", "summary_line", "target_line", "write_manifest", "write_report"]
