"""Write a ``.tflite`` model as a C array (``prefix.h`` / ``prefix.cc``) for TFLite Micro firmware.

The source holds ``alignas(16) const unsigned char NAME[]`` and ``const unsigned int NAME_len``; the
header declares them and defines ``NAME_arena_size``, the smallest tensor arena the model needed on
TFLite Micro (measured in a child process unless given). Any well-formed model is exported: when TFLite
Micro does not run it here (a vendor NPU op, a kernel it lacks, a crash), ``NAME_arena_size`` is left
out and the header says why in the runtime's own words. A missing output folder is created.

>>> import os, tempfile, tfedge
>>> folder = tempfile.mkdtemp()
>>> h, cc = tfedge.export_c_array(tfedge.tflite.tiny_int8_model(), os.path.join(folder, "tiny"), arena_bytes=1024)
>>> os.path.basename(h), os.path.basename(cc)
('tiny.h', 'tiny.cc')
>>> [line for line in open(h).read().splitlines() if line.startswith("constexpr")]
['constexpr unsigned int tiny_arena_size = 1024;']
"""

from __future__ import annotations

import keyword
import os
import re
from pathlib import Path

from tfedge import __version__
from tfedge.errors import InputError, TfedgeError
from tfedge.files import PathLike, atomic_write_text, make_output_folder
from tfedge.runtimes import TFLiteMicro
from tfedge.tflite import ModelSource, model_bytes

#: Bytes per line of the generated array.
BYTES_PER_LINE = 12

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# C and C++ keywords (and a few common macros) that cannot name the array.
_RESERVED = frozenset(
    """
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast requires restrict return short signed sizeof static static_assert static_cast struct switch
template this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile
wchar_t while xor xor_eq _Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn
_Static_assert _Thread_local NULL
""".split()
)


def check_c_identifier(name: str) -> str:
    """Return ``name`` if it can name a C/C++ array, else raise :class:`InputError`.

    >>> check_c_identifier("digits_model")
    'digits_model'
    >>> check_c_identifier("2model")
    Traceback (most recent call last):
    ...
    tfedge.errors.InputError: name '2model' is not a C identifier: use letters, digits and _, ... (e.g. 'model_2model')
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        suggestion = c_identifier_from(str(name))
        raise InputError(
            f"name {name!r} is not a C identifier: use letters, digits and _, not starting with a "
            f"digit (e.g. {suggestion!r})"
        )
    if name in _RESERVED or re.match(r"_[A-Z_]", name):
        raise InputError(f"name {name!r} is reserved in C/C++: choose another, e.g. {name.strip('_') + '_model'!r}")
    return name


def c_identifier_from(text: str) -> str:
    """A valid C identifier made from ``text`` (other characters become ``_``).

    >>> c_identifier_from("digits-int8.v2")
    'digits_int8_v2'
    """
    ident = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "model"
    if ident[0].isdigit():
        ident = f"model_{ident}"
    if ident in _RESERVED or keyword.iskeyword(ident):
        ident = f"{ident}_model"
    return ident


def _array_lines(content: bytes) -> list[str]:
    return [
        "    " + ", ".join(f"0x{b:02x}" for b in content[i : i + BYTES_PER_LINE]) + ","
        for i in range(0, len(content), BYTES_PER_LINE)
    ]


class CArrayFiles(tuple):
    """``(header_path, source_path)`` as :func:`export_c_array` wrote them, with the arena it wrote
    (``arena_bytes``, None when left out) and, when left out, why (``arena_note``, one line)."""

    arena_bytes: int | None
    arena_note: str | None

    def __new__(cls, header: str, source: str, arena_bytes: int | None, arena_note: str | None) -> CArrayFiles:
        self = super().__new__(cls, (header, source))
        self.arena_bytes, self.arena_note = arena_bytes, arena_note
        return self


def tflm_arena(model_or_path: ModelSource) -> tuple[int | None, str | None]:
    """``(arena_bytes, None)`` when TFLite Micro runs the model (measured in a child process), else
    ``(None, reason)`` with the runtime's own one-line reason.

    >>> from tfedge.tflite import tiny_int8_model
    >>> arena, reason = tflm_arena(tiny_int8_model())
    >>> arena > 0, reason
    (True, None)
    """
    content, source = model_bytes(model_or_path)
    try:
        return TFLiteMicro(content, source).measure_arena(), None
    except TfedgeError as exc:  # refused, failed or crashed: the model is exported all the same
        return None, " ".join(str(exc).split())


def export_c_array(
    model_or_path: ModelSource,
    prefix: PathLike,
    name: str | None = None,
    arena_bytes: int | None = None,
) -> CArrayFiles:
    """Write ``prefix.h`` and ``prefix.cc`` holding the model bytes; return ``(header_path, source_path)``.

    ``name`` (default: from the prefix's file name) must be a C identifier. ``arena_bytes`` defaults
    to the smallest arena TFLite Micro needed, measured in a child process; when TFLite Micro does not
    run the model, the arena is left out and the header says why (the result's ``arena_note``). The
    prefix's folder is created if missing. Each file is written atomically; the model file is only read.
    """

    prefix = Path(prefix)
    if not prefix.name or str(prefix).endswith(os.sep) or prefix.is_dir():
        raise InputError(
            f"prefix {str(prefix)!r} must end in a file name (the .h / .cc are named after it), e.g. build/digits_model"
        )
    folder = prefix.parent if str(prefix.parent) else Path(".")
    ident = check_c_identifier(name) if name is not None else c_identifier_from(prefix.name)
    if arena_bytes is not None and (
        isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int) or arena_bytes < 1
    ):
        raise InputError(f"arena_bytes must be a positive number of bytes, got {arena_bytes!r}")
    content, source = model_bytes(model_or_path)
    header_path, source_path = Path(f"{prefix}.h"), Path(f"{prefix}.cc")
    if isinstance(model_or_path, (str, os.PathLike)):
        model_path = Path(model_or_path).resolve()
        for out in (header_path, source_path):
            if out.resolve() == model_path:
                raise InputError(f"output '{out}' is the model file itself: choose another prefix")
    make_output_folder(folder)
    note = None
    if arena_bytes is None:
        arena_bytes, note = tflm_arena(model_or_path)

    origin = os.path.basename(source) if isinstance(model_or_path, (str, os.PathLike)) else "a TFLite model"
    guard = f"TFEDGE_{ident.upper()}_H_"
    header = "\n".join(
        [
            f"// Generated by tfedge {__version__} from {origin}. Do not edit.",
            f"#ifndef {guard}",
            f"#define {guard}",
            "",
            f"// The TFLite model ({len(content):,} bytes), 16-byte aligned as TFLite Micro requires.",
            f"extern const unsigned char {ident}[];",
            f"extern const unsigned int {ident}_len;",
            "",
            *_arena_lines(ident, arena_bytes, note),
            "",
            f"#endif  // {guard}",
            "",
        ]
    )
    body = "\n".join(
        [
            f"// Generated by tfedge {__version__} from {origin}. Do not edit.",
            f'#include "{header_path.name}"',
            "",
            f"alignas(16) const unsigned char {ident}[] = {{",
            *_array_lines(content),
            "};",
            f"const unsigned int {ident}_len = {len(content)};",
            "",
        ]
    )
    atomic_write_text(source_path, body)
    atomic_write_text(header_path, header)
    return CArrayFiles(str(header_path), str(source_path), arena_bytes, note)


def _arena_lines(ident: str, arena_bytes: int | None, note: str | None) -> list[str]:
    if arena_bytes is not None:
        return [
            "// Smallest tensor arena (bytes) in which the model allocated and ran on TFLite Micro's reference",
            "// kernels (host build). Optimized kernels or another target may need a little more: add headroom.",
            f"constexpr unsigned int {ident}_arena_size = {arena_bytes};",
        ]
    reason = (note or "not measured").encode("ascii", "replace").decode()  # one ASCII line in a // comment
    return [
        f"// No {ident}_arena_size: TFLite Micro did not run this model here, so its arena was not measured.",
        f"// Why: {reason}",
        "// Size the arena on the target (MicroInterpreter::arena_used_bytes()), e.g. with the ops it registers.",
    ]


__all__ = ["export_c_array", "tflm_arena", "CArrayFiles", "check_c_identifier", "c_identifier_from"]
