"""Uncompressed zip archives written straight to a file, byte for byte what `zipfile` writes.

A shard archive holds thousands of small entries; `zipfile.ZipFile.writestr` spends more on
each (a ZipInfo, an entry writer object, a seek back to rewrite the header with the CRC) than
on its bytes: about a sixth of generating a child. Here each entry is one header and its data,
the CRC computed first; the central directory and end record are packed as `zipfile` packs
them (tests/synth compare the two byte for byte). Only what the generator needs: stored
entries, ASCII names, one fixed date, no zip64 (refused beyond its limits).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

_LOCAL = struct.Struct(zipfile.structFileHeader)
_CENTRAL = struct.Struct(zipfile.structCentralDir)
_END = struct.Struct(zipfile.structEndArchive)
_VERSION = zipfile.DEFAULT_VERSION
_UNIX = 3                      # the "made by" system zipfile records off Windows
_LIMIT = zipfile.ZIP64_LIMIT
_MAX_ENTRIES = zipfile.ZIP_FILECOUNT_LIMIT


def _dos(date_time: tuple[int, int, int, int, int, int]) -> tuple[int, int]:
    y, mo, d, h, mi, s = date_time
    return h << 11 | mi << 5 | s // 2, (y - 1980) << 9 | mo << 5 | d


class StoredZip:
    """`with StoredZip(path, date_time) as z: z.add(name, data)`: entries in the order added."""

    def __init__(self, path: Path, date_time: tuple[int, int, int, int, int, int], mode: int = 0o644):
        self.path = path
        self.time, self.date = _dos(date_time)
        self.attr = mode << 16
        self.file = open(path, "wb", buffering=1 << 20)
        self.central: list[bytes] = []
        self.offset = 0

    def add(self, name: str, data: bytes) -> None:
        encoded = name.encode("ascii")
        size, offset = len(data), self.offset
        if size > _LIMIT or offset > _LIMIT or len(self.central) >= _MAX_ENTRIES:
            raise ValueError(f"{self.path}: too large for an archive without zip64")
        crc = zlib.crc32(data)
        header = _LOCAL.pack(zipfile.stringFileHeader, _VERSION, 0, 0, zipfile.ZIP_STORED, self.time, self.date,
                             crc, size, size, len(encoded), 0)
        self.file.write(header)
        self.file.write(encoded)
        self.file.write(data)
        self.offset += len(header) + len(encoded) + size
        self.central.append(_CENTRAL.pack(zipfile.stringCentralDir, _VERSION, _UNIX, _VERSION, 0, 0,
                                          zipfile.ZIP_STORED, self.time, self.date, crc, size, size,
                                          len(encoded), 0, 0, 0, 0, self.attr, offset) + encoded)

    def __enter__(self) -> StoredZip:
        return self

    def __exit__(self, *exc) -> None:
        with self.file:
            if exc[0] is not None:
                return
            directory = b"".join(self.central)
            if self.offset + len(directory) > _LIMIT:
                raise ValueError(f"{self.path}: too large for an archive without zip64")
            self.file.write(directory)
            self.file.write(_END.pack(zipfile.stringEndArchive, 0, 0, len(self.central), len(self.central),
                                      len(directory), self.offset, 0))
