r"""The codecs of the files the job writes and reads: ``gzip``, ``zstd`` or ``none``.

    >>> sniff(b"\x28\xb5\x2f\xfd")  # the first bytes of a file
    'zstd'
    >>> format_name("json_array", "gzip"), split_format("csv.zst")
    ('json_array.gz', ('csv', 'zstd'))

Output: a text format (``ndjson``, ``json_array``, ``csv``) takes a ``compression``; the
pair has one name, the format's with the codec's suffix (``json_array.gz``), which is the
name the encoder, the file extension and the object's content type go by. gzip goes
through :mod:`transforms.rules.gzipio` (zlib-ng and ISA-L); zstd through ``zstandard``.

Input: a backfill file is gzip, zstd or plain, told apart by its first bytes (never by
its name, so ``events.jsonl`` holding zstd is read right), and read as a stream of
bounded memory (:func:`open_reader`). A file that cannot be read to its end raises one of
:data:`DAMAGED`: gzip's errors, zstd's :class:`zstandard.ZstdError`, and ``EOFError``
for a gzip or zstd file that ends inside a member or frame. The last needs a check of
its own: zstandard's stream reader ends quietly where the input does, so a truncated
file would otherwise look complete; :class:`_FrameWalker` follows the frames' headers as
the compressed bytes go by (each block header gives the block's length) and says whether
the input ended between two frames.

Plain Python, no Beam import.
"""

from __future__ import annotations

import io
from typing import BinaryIO, Literal, get_args

import zstandard

from transforms.rules import gzipio

Compression = Literal["gzip", "zstd", "none"]
"""Values of ``deliver.compression``, and what :func:`sniff` tells apart."""

COMPRESSIONS: tuple[str, ...] = get_args(Compression)

SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}
"""The suffix a codec adds to a format's name and to its files' extension."""

_BY_SUFFIX = {suffix[1:]: codec for codec, suffix in SUFFIXES.items()}

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""A zstd frame's first four bytes (0xFD2FB528, little-endian)."""

_SKIPPABLE_TAIL = b"\x2a\x4d\x18"
"""The last three bytes of a skippable frame's magic (0x184D2A50-0x184D2A5F)."""

SNIFF_BYTES = 4
"""Bytes of a file's start :func:`sniff` needs."""

ZSTD_MAX_WINDOW = 1 << 27
"""The largest zstd window a reader accepts (128 MiB, zstd's own default limit, which also
covers ``zstd --long``): a frame asking for more is refused as damaged rather than
allocated, so a crafted header cannot make a reader take gigabytes."""

ZSTD_READ_SIZE = 1 << 17
"""Compressed bytes read from the file at a time (zstd's recommended input size)."""


DAMAGED: tuple[type[BaseException], ...] = (*gzipio.DAMAGED, zstandard.ZstdError)
"""What reading a damaged gzip or zstd input raises: a truncated one ``EOFError`` (zstd's
too, see :meth:`_FrameWalker.check_end`), a corrupt one its codec's error. Reading the
same bytes again raises the same; an I/O error of the file system is not in here."""


def sniff(head: bytes) -> Compression:
    """The codec of a file that starts with ``head`` (its first :data:`SNIFF_BYTES` bytes)."""
    if head[:2] == GZIP_MAGIC:
        return "gzip"
    if head[:4] == ZSTD_MAGIC or (
        len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == _SKIPPABLE_TAIL
    ):
        return "zstd"
    return "none"


def format_name(base: str, compression: str) -> str:
    """The name of ``base`` (a text format) written with ``compression``: ``ndjson.gz``."""
    return base + SUFFIXES.get(compression, "")


def split_format(name: str) -> tuple[str, Compression]:
    """A format's name as (the format, its codec): ``ndjson.zst`` is ``("ndjson", "zstd")``."""
    base, _, suffix = name.partition(".")
    codec = _BY_SUFFIX.get(suffix)
    if codec is None:
        return name, "none"
    return base, codec  # type: ignore[return-value]  # one of SUFFIXES' keys


def open_reader(raw: BinaryIO, codec: Compression) -> BinaryIO:
    """A buffered reader of the decompressed bytes of ``raw`` (all gzip members, all zstd frames).

    Memory is bounded whatever the input: a read returns at most what was asked for
    (a zstd bomb is read piece by piece like any other file), and a zstd frame may not ask
    for a window over :data:`ZSTD_MAX_WINDOW`.
    """
    if codec == "gzip":
        return gzipio.open_reader(raw)
    if codec == "zstd":
        return io.BufferedReader(_ZstdReader(raw), buffer_size=gzipio.READ_BUFFER)
    return raw


class _ZstdReader(io.RawIOBase):
    """The decompressed bytes of a stream of zstd frames; raises if the stream is cut short."""

    def __init__(self, raw: BinaryIO):
        self._frames = _FrameWalker()
        self._source = _Tap(raw, self._frames)
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._reader = decompressor.stream_reader(
            self._source,  # type: ignore[arg-type]  # zstandard takes any object with read()
            read_size=ZSTD_READ_SIZE,
            read_across_frames=True,
            closefd=False,
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self._reader.readinto(buffer)
        if n == 0:
            self._frames.check_end()
        return n

    def close(self) -> None:
        self._reader.close()
        super().close()


class _Tap:
    """A file-like ``read`` that shows every byte it returns to a :class:`_FrameWalker`."""

    def __init__(self, raw: BinaryIO, frames: _FrameWalker):
        self._raw = raw
        self._frames = frames

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._frames.feed(data)
        return data


_MAGIC, _DESCRIPTOR, _SKIP_SIZE, _BLOCK = range(4)
_HEADER_BYTES = {_MAGIC: 4, _DESCRIPTOR: 1, _SKIP_SIZE: 4, _BLOCK: 3}
_DICT_ID_BYTES = (0, 1, 2, 4)
_CHECKSUM_BYTES = 4


class _FrameWalker:
    """Follows zstd frames (RFC 8878, section 3.1) by their headers, without decoding them.

    It reads only what gives lengths: a frame's magic and header descriptor, each block's
    3-byte header (its type and size: the bytes to step over), the 4-byte checksum when
    the frame has one; and a skippable frame's size. Content is the decompressor's
    business (it checks it); what this adds is where the input ended: between frames
    (complete) or inside one (truncated).

        >>> walker = _FrameWalker()
        >>> walker.feed(zstandard.ZstdCompressor().compress(b"x" * 100)[:-1])
        >>> walker.complete
        False
    """

    def __init__(self) -> None:
        self._state = _MAGIC
        self._buf = b""
        self._skip = 0
        self._checksum = False
        self.bad: str | None = None
        """Why the bytes cannot be zstd frames (the decompressor says so too, first)."""

    @property
    def complete(self) -> bool:
        """Whether the bytes fed so far end where a frame ends (or a next one could begin)."""
        return self.bad is None and self._state == _MAGIC and not self._buf and not self._skip

    def check_end(self) -> None:
        """At the end of the input: raise ``EOFError`` unless it ended between two frames."""
        if self.bad is not None:
            raise zstandard.ZstdError(f"not zstd frames: {self.bad}")
        if not self.complete:
            raise EOFError(
                "the zstd input ended inside a frame (truncated): the end of the file is missing"
            )

    def feed(self, data: bytes) -> None:
        """Follow the frames through ``data``, the next bytes of the input."""
        pos, end = 0, len(data)
        while pos < end and self.bad is None:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            want = _HEADER_BYTES[self._state] - len(self._buf)
            self._buf += data[pos : pos + want]
            pos += want
            if len(self._buf) == _HEADER_BYTES[self._state]:
                header, self._buf = self._buf, b""
                self._header(header)

    def _header(self, header: bytes) -> None:
        state = self._state
        if state == _MAGIC:
            if header == ZSTD_MAGIC:
                self._state = _DESCRIPTOR
            elif header[0] & 0xF0 == 0x50 and header[1:] == _SKIPPABLE_TAIL:
                self._state = _SKIP_SIZE
            else:
                self.bad = f"no frame magic number where a frame should begin ({header.hex()})"
        elif state == _SKIP_SIZE:
            self._skip = int.from_bytes(header, "little")
            self._state = _MAGIC
        elif state == _DESCRIPTOR:
            descriptor = header[0]
            if descriptor & 0x08:
                self.bad = "a reserved bit is set in a frame header"
                return
            single_segment = bool(descriptor & 0x20)
            size_flag = descriptor >> 6
            content_size = (1 if single_segment else 0, 2, 4, 8)[size_flag]
            window = 0 if single_segment else 1
            self._checksum = bool(descriptor & 0x04)
            self._skip = window + _DICT_ID_BYTES[descriptor & 0x03] + content_size
            self._state = _BLOCK
        else:
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                self.bad = "a block of the reserved type"
                return
            self._skip = 1 if kind == 1 else size  # an RLE block holds one byte
            if last:
                self._skip += _CHECKSUM_BYTES if self._checksum else 0
                self._state = _MAGIC
