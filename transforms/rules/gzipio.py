"""gzip on the hot path, through zlib-ng and ISA-L: standard gzip, less CPU than the stdlib.

    >>> import gzip
    >>> gzip.decompress(compress(b"telemetry", 6))
    b'telemetry'

Every gzip the job writes (``ndjson.gz`` objects, gzip request bodies) and every gzip
input it reads goes through here. `zlib-ng <https://github.com/zlib-ng/zlib-ng>`_ (via
the ``zlib-ng`` package of python-isal's authors) is a drop-in replacement for zlib:
the same 1-9 levels, the same format, any gunzip reads its output. Measured on the
bench's 381 archive batches (67 MB of NDJSON; bench/RESULTS.md): level 6 compresses 1.9x
faster than the stdlib's zlib at 1% larger output; level 2 is 4.3x faster than the
stdlib's level 6 for 1.35x the size.

Gzip *input* is read through ISA-L's ``IGzipFile``: the same gzip, the same errors for a
damaged file (:data:`DAMAGED`), decompressing ~1.15x as fast as zlib-ng's reader and 3.7x
the stdlib's (bench/RESULTS.md, "Session 13: compression re-measured").

Levels 1 and 2, the ones users pick for speed, go through `ISA-L
<https://github.com/intel/isa-l>`_ instead (``isal``, the same authors' bindings), its
levels 1 and 2: on the same batches they are both smaller and faster than zlib-ng's 1
and 2 (ratio 0.092 / 0.090 at ~1,350 MB/s, vs 0.123 at 809 and 0.097 at 520). ISA-L has
no levels above 3, so 3-9 stay with zlib-ng; the scale stays monotone (3: 0.089 at 357).

Output is deterministic for a given build (no mtime), which is what the job needs:
object names come from the batch's event ids, never from the compressed bytes, so a
rerun on a machine whose library picks other CPU instructions names its objects the same.
Plain Python, no Beam import.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import BinaryIO

from isal import igzip, isal_zlib
from zlib_ng import gzip_ng, zlib_ng

_ZLIB_NG_ERROR: type[Exception] = zlib_ng.error  # type: ignore[assignment]  # its stub says an instance
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]  # as zlib-ng's

DAMAGED = (EOFError, gzip.BadGzipFile, zlib.error, _ZLIB_NG_ERROR, _ISAL_ERROR)
"""What reading a damaged gzip stream raises: truncated (``EOFError``), a bad header or
checksum (``BadGzipFile``), corrupt deflate data (ISA-L's, zlib's or zlib-ng's ``error``).
Reading the same bytes again raises the same; an I/O error of the file system is not in
here."""

READ_BUFFER = 1 << 20
"""Bytes of decompressed input buffered per read."""

ISAL_LEVELS = (1, 2)
"""``gzip_level`` values compressed by ISA-L (at the same level number)."""


def compress(data: bytes, level: int) -> bytes:
    """``data`` as one gzip member at ``level`` (1-9), with mtime 0 (equal data, equal bytes)."""
    if level in ISAL_LEVELS:
        return igzip.compress(data, compresslevel=level, mtime=0)
    return gzip_ng.compress(data, compresslevel=level, mtime=0)


def open_reader(raw: BinaryIO) -> io.BufferedReader:
    """A buffered reader of the decompressed bytes of the gzip stream ``raw`` (all members)."""
    return io.BufferedReader(igzip.IGzipFile(fileobj=raw), buffer_size=READ_BUFFER)
