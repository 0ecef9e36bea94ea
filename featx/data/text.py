"""Reading the CSV files a data set comes with (manifests, the C-NMC labels file) strictly: UTF-8 text, no NUL
byte, every row as wide as the header. Each fault is one FeatxError naming the file, the line and the fix."""
from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from featx.errors import FeatxError

Rows = list[tuple[int, list[str]]]  # (line number, fields) of each row after the header


def read_csv(path: Path, what: str, expected: str) -> tuple[list[str], Rows]:
    """The header and the rows (each with its line number; blank lines left out) of the CSV file ``path``.

    ``what`` names the file in messages (``manifest``, ``labels file``); ``expected`` is its header, shown when
    the file is no text at all. Refused: bytes that are no UTF-8 (a Latin-1 export, UTF-16, a binary file), a
    NUL byte in a field, a row with more or fewer fields than the header.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeatxError(f"cannot read {what} {path} ({exc.strerror or type(exc).__name__}); make it readable") \
            from None
    text = _decode(data, path, what, expected)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: Rows = []
    try:
        for fields in reader:
            if fields:
                rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise FeatxError(f"{what} {path} line {reader.line_num}: {exc}; fix that row") from None
    if not rows:
        return [], []
    header = rows[0][1]
    for line, fields in rows:
        bad = next((i for i, f in enumerate(fields) if "\x00" in f), None)
        if bad is not None:
            column = f"field {header[bad]!r}" if line != rows[0][0] and bad < len(header) else f"field {bad + 1}"
            raise FeatxError(f"{what} {path} line {line}: {column} holds a NUL byte (\\x00); remove it (every field "
                             "is text)")
        if len(fields) != len(header):
            raise FeatxError(f"{what} {path} line {line} has {len(fields)} fields but the header has {len(header)} "
                             f"({','.join(header)}); quote a field that holds a comma, or give the row every field "
                             "(empty ones as ,,)")
    return header, rows[1:]


def _decode(data: bytes, path: Path, what: str, expected: str) -> str:
    """``data`` as text, or FeatxError saying what else it is and how to make it UTF-8."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FeatxError(f"{what} {path} is UTF-16 text; save it as UTF-8 (e.g. `iconv -f utf-16 -t utf-8 "
                         f"{path.name} > {path.stem}-utf8.csv`)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        where = f"byte 0x{data[exc.start]:02x} on line {line}"
        if _binary(data):
            raise FeatxError(f"{what} {path} is not a text file ({where} is no UTF-8, and it holds NUL or control "
                             f"bytes); give a UTF-8 CSV file with the header {expected}") from None
        raise FeatxError(f"{what} {path} is not UTF-8 text ({where}; saved as Latin-1 or Windows-1252?); save it "
                         f"as UTF-8 (e.g. `iconv -f cp1252 -t utf-8 {path.name} > {path.stem}-utf8.csv`)") from None


def _binary(data: bytes) -> bool:
    """Whether ``data`` holds a NUL byte or more than 1% control bytes (other than tab, CR and LF)."""
    if b"\x00" in data:
        return True
    control = sum(data.count(bytes([b])) for b in range(32) if b not in (9, 10, 13))
    return control > 0.01 * len(data)
