"""An append-only, checksummed journal of broker inputs, in size-capped segment files.

Each record is one frame::

    magic b"RAJ1" | body length (u32) | crc32 of body (u32) | body

with ``body = msgpack([seq, kind, now, args, payload])``; ``payload`` carries Arrow IPC bytes for rollout batches and
is empty otherwise. On open, the journal is read back in order. A frame that is cut short or fails its checksum at
the very end of the last segment is a write torn by a crash: it is truncated away (it was never acknowledged). The
same damage anywhere else means the files were corrupted after the fact, and opening fails with a
:class:`JournalError` rather than resuming from a silently wrong state.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import msgpack

from ring_async.errors import RingAsyncError

MAGIC = b"RAJ1"
_HEADER = struct.Struct("<4sII")
_SEGMENT = re.compile(r"^segment-(\d{8})\.journal$")


class JournalError(RingAsyncError):
    """The journal on disk is corrupted (not merely torn at its end) or unreadable."""


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str
    now: float
    args: dict[str, Any]
    payload: bytes


class Journal:
    """Append entries; ``replay()`` yields everything that was durably written, in order."""

    def __init__(self, directory: str | Path, segment_bytes: int = 256 << 20, fsync: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._entries = self._recover()
        self.next_seq = self._entries[-1].seq + 1 if self._entries else 0
        segments = self._segments()
        self._index = int(_SEGMENT.match(segments[-1].name).group(1)) if segments else 0
        self._file = open(self._segment_path(self._index), "ab")

    def _segment_path(self, index: int) -> Path:
        return self.directory / f"segment-{index:08d}.journal"

    def _segments(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if _SEGMENT.match(p.name))

    def _recover(self) -> list[Entry]:
        entries: list[Entry] = []
        segments = self._segments()
        for number, path in enumerate(segments):
            data = path.read_bytes()
            offset = 0
            while offset < len(data):
                entry, end = _read_frame(data, offset)
                if entry is None:
                    if number != len(segments) - 1:
                        raise JournalError(f"{path}: corrupted frame at byte {offset} (not the end of the journal)")
                    with open(path, "r+b") as f:  # a torn final write: drop it
                        f.truncate(offset)
                    break
                if entries and entry.seq != entries[-1].seq + 1:
                    raise JournalError(f"{path}: entry {entry.seq} follows {entries[-1].seq}; entries are missing")
                entries.append(entry)
                offset = end
        return entries

    def replay(self) -> Iterator[Entry]:
        """The entries found on open (the journal's history before this process appended anything)."""
        yield from self._entries

    def release_replayed(self) -> None:
        """Forget the recovered entries once they have been applied (they can be large)."""
        self._entries = []

    def append(self, kind: str, now: float, args: dict[str, Any] | None = None, payload: bytes = b"") -> int:
        seq = self.next_seq
        body = msgpack.packb([seq, kind, now, args or {}, payload], use_bin_type=True)
        frame = _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body
        if self._file.tell() and self._file.tell() + len(frame) > self._segment_bytes:
            self._rotate()
        self._file.write(frame)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        self.next_seq += 1
        return seq

    def _rotate(self) -> None:
        self._file.close()
        self._index += 1
        self._file = open(self._segment_path(self._index), "ab")

    def close(self) -> None:
        self._file.close()


def _read_frame(data: bytes, offset: int) -> tuple[Entry | None, int]:
    if offset + _HEADER.size > len(data):
        return None, offset
    magic, length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    body = data[start : start + length]
    if magic != MAGIC or len(body) != length or zlib.crc32(body) != crc:
        return None, offset
    try:
        seq, kind, now, args, payload = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException, TypeError):
        return None, offset
    return Entry(seq, kind, now, args, payload), start + length
