"""Write a ``.tflite`` model as a C array (``prefix.h`` / ``prefix.cc``) for TFLite Micro firmware.

The source holds ``alignas(16) const unsigned char NAME[]`` and ``const unsigned int NAME_len``; the
header declares them and defines ``NAME_arena_size``, the smallest tensor arena the model needed on
TFLite Micro (measured in a child process unless given).

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

from tfedge.errors import InputError
from tfedge.files import PathLike, atomic_write_text
from tfedge.runtimes import TFLiteMicro
from tfedge.tflite import ModelSource, model_bytes

#: Bytes per line of the generated array.
BYTES_PER_LINE = 12

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# C and C++ keywords (and a few common macros) that cannot name the array.
_RESERVED = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast requires restrict return short signed sizeof static static_assert static_cast struct switch
template this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile
wchar_t while xor xor_eq _Bool _Complex _Imaginary _Alignas _Alignof _Atomic _Generic _Noreturn
_Static_assert _Thread_local NULL
""".split())


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
        raise InputError(f"name {name!r} is not a C identifier: use letters, digits and _, not starting with a "
                         f"digit (e.g. {suggestion!r})")
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


def export_c_array(
    model_or_path: ModelSource,
    prefix: PathLike,
    name: str | None = None,
    arena_bytes: int | None = None,
) -> tuple[str, str]:
    """Write ``prefix.h`` and ``prefix.cc`` holding the model bytes; return ``(header_path, source_path)``.

    ``name`` (default: from the prefix's file name) must be a C identifier. ``arena_bytes`` defaults
    to the smallest arena TFLite Micro needed, measured in a child process. Each file is written
    atomically; the model file itself is only read.
    """

    prefix = Path(prefix)
    if not prefix.name or str(prefix).endswith(os.sep) or prefix.is_dir():
        raise InputError(f"prefix {str(prefix)!r} must end in a file name (the .h / .cc are named after it), "
                         "e.g. build/digits_model")
    folder = prefix.parent if str(prefix.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder '{folder}' does not exist: create it first (mkdir -p {folder})")
    ident = check_c_identifier(name) if name is not None else c_identifier_from(prefix.name)
    if arena_bytes is not None and (isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int)
                                    or arena_bytes < 1):
        raise InputError(f"arena_bytes must be a positive number of bytes, got {arena_bytes!r}")
    content, source = model_bytes(model_or_path)
    header_path, source_path = Path(f"{prefix}.h"), Path(f"{prefix}.cc")
    if isinstance(model_or_path, (str, os.PathLike)):
        model_path = Path(model_or_path).resolve()
        for out in (header_path, source_path):
            if out.resolve() == model_path:
                raise InputError(f"output '{out}' is the model file itself: choose another prefix")
    if arena_bytes is None:
        arena_bytes = TFLiteMicro(content, source).measure_arena()

    from tfedge import __version__

    origin = os.path.basename(source) if isinstance(model_or_path, (str, os.PathLike)) else "a TFLite model"
    guard = f"TFEDGE_{ident.upper()}_H_"
    header = "\n".join([
        f"// Generated by tfedge {__version__} from {origin}. Do not edit.",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"// The TFLite model ({len(content):,} bytes), 16-byte aligned as TFLite Micro requires.",
        f"extern const unsigned char {ident}[];",
        f"extern const unsigned int {ident}_len;",
        "",
        "// Smallest tensor arena (bytes) in which the model allocated and ran on TFLite Micro's reference",
        "// kernels (host build). Optimized kernels or another target may need a little more: add headroom.",
        f"constexpr unsigned int {ident}_arena_size = {arena_bytes};",
        "",
        f"#endif  // {guard}",
        "",
    ])
    body = "\n".join([
        f"// Generated by tfedge {__version__} from {origin}. Do not edit.",
        f'#include "{header_path.name}"',
        "",
        f"alignas(16) const unsigned char {ident}[] = {{",
        *_array_lines(content),
        "};",
        f"const unsigned int {ident}_len = {len(content)};",
        "",
    ])
    atomic_write_text(source_path, body)
    atomic_write_text(header_path, header)
    return str(header_path), str(source_path)


__all__ = ["export_c_array", "check_c_identifier", "c_identifier_from"]
