"""Windows of a step's log for the log viewer: the tail, the whole file (streamed), or what came after a byte.

Pure file reading, no web code. Three promises every window keeps, whatever its size or offset:

* **Only whole lines.** A window never starts or ends inside a line: a tail drops the line its first
  byte falls in, a follower's `from` that does not sit at a line start skips to the next one, and a
  last line without its newline (a step still writing it) waits for the next poll. The redactor
  masks a secret within a line, so a line cut in two could show the half of a secret it no longer
  recognises; whole lines are what makes masking hold for every line the viewer shows, including a
  secret split across two reads of a growing file.
* **Bounded memory.** A tail reads at most `max_bytes`; the whole file is an iterator of lines; a
  follow read takes at most `FOLLOW_BYTES` (plus the rest of one long line, up to `LONG_LINE_BYTES`).
* **Line numbers that mean the file's line numbers.** A tail knows where it starts in bytes, not in
  lines: the lines before it are counted by scanning the skipped head for newlines in 1 MiB blocks
  (`bytes.count`, a few hundred MB/s even on a slow disk, constant memory). Above `COUNT_LIMIT` of
  head that would make a page slow, so the numbers are counted from the start of the window instead
  and the window says so (`numbered=False`): an anchor `#L123` must never point at the wrong line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flywheel.incidents import is_error_line

TAIL_LINES = 2000
TAIL_BYTES = 512 * 1024
FOLLOW_BYTES = 256 * 1024
LONG_LINE_BYTES = 4 * 1024 * 1024
COUNT_LIMIT = 256 * 1024 * 1024
_BLOCK = 1024 * 1024

Redact = Callable[[str], str]


@dataclass(frozen=True)
class LogLine:
    number: int  # 1-based: the file's line number, or the window's when the window is not `numbered`
    text: str  # masked
    error: bool  # reports an error (`flywheel.incidents.is_error_line`)

    def anchor(self, numbered: bool = True) -> str:
        return f"L{self.number}" if numbered else f"W{self.number}"


@dataclass(frozen=True)
class LogWindow:
    lines: tuple[LogLine, ...]
    start: int  # byte offset of the first line
    end: int  # byte offset after the last whole line: where a follower resumes
    size: int  # the file's size when it was read
    cut: bool  # lines before `start` were left out
    numbered: bool  # `LogLine.number` is the file's line number
    next_number: int  # the number the line at `end` will carry

    @property
    def errors(self) -> int:
        return sum(1 for line in self.lines if line.error)


def _line(number: int, raw: bytes, redact: Redact) -> LogLine:
    text = redact(raw.decode("utf-8", "replace").rstrip("\r"))
    return LogLine(number, text, is_error_line(text))


_COUNTED: dict[tuple[int, int], tuple[int, int, bytes]] = {}
"""(device, inode) -> (bytes, newlines in them, the 64 bytes before that point): the last head counted
per log file. A log only grows, so a later count of the same file starts where the last one ended. A
file that shrank, or whose bytes before that point differ (another file that got the same inode), is
counted from the start again."""
_MARK = 64
_COUNTED_FILES = 256


def count_lines(path: str | Path, end: int) -> int:
    """The newlines in the first `end` bytes of a file, read in blocks (never the whole head in memory).

    Viewing a 100 MB log again, or its page re-rendered while the step runs, counts only what was
    written since (see `_COUNTED`)."""
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        identity = (st.st_dev, st.st_ino)
        done, seen, mark = _COUNTED.get(identity, (0, 0, b""))
        if done and (done > end or done > st.st_size or _before(handle, done) != mark):
            done, seen = 0, 0
        handle.seek(done)
        while done < end:
            block = handle.read(min(_BLOCK, end - done))
            if not block:
                break
            seen += block.count(b"\n")
            done += len(block)
        mark = _before(handle, done)
    if len(_COUNTED) >= _COUNTED_FILES and identity not in _COUNTED:
        _COUNTED.pop(next(iter(_COUNTED)))
    _COUNTED[identity] = (done, seen, mark)
    return seen


def _before(handle: BinaryIO, offset: int) -> bytes:
    handle.seek(max(0, offset - _MARK))
    return handle.read(min(offset, _MARK))


def tail(
    path: str | Path,
    redact: Redact,
    *,
    max_lines: int = TAIL_LINES,
    max_bytes: int = TAIL_BYTES,
    finished: bool = False,
    count_limit: int = COUNT_LIMIT,
) -> LogWindow:
    """The last whole lines of a log, at most `max_lines` and `max_bytes` of them.

    `finished` (the attempt has ended) shows a last line that has no newline; while the step runs, that
    line is still being written and is left to the follower. A missing file is an empty window.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(0, size - max_bytes)
            handle.seek(max(0, start - 1))  # one byte early: is `start` a line start?
            raw = handle.read(size - max(0, start - 1))
    except OSError:
        return LogWindow((), 0, 0, 0, False, True, 1)
    if start > 0:  # drop the byte before `start` and, unless it was a newline, the line `start` falls in
        newline = raw.find(b"\n")
        raw = raw[newline + 1 :] if newline >= 0 else b""
        start = size - len(raw)
    body, end = _whole_lines(raw, start, finished)
    pieces = body.split(b"\n") if end > start else []
    if len(pieces) > max_lines:
        start += sum(len(p) + 1 for p in pieces[: len(pieces) - max_lines])
        pieces = pieces[len(pieces) - max_lines :]
    numbered = start <= count_limit
    first = 1 + (count_lines(path, start) if start and numbered else 0)
    lines = tuple(_line(first + i, p, redact) for i, p in enumerate(pieces))
    return LogWindow(lines, start, end, size, start > 0, numbered, first + len(lines))


def _whole_lines(raw: bytes, start: int, finished: bool) -> tuple[bytes, int]:
    """The whole lines of `raw` (read from `start`) without their last newline, and the offset after them."""
    if finished and raw and not raw.endswith(b"\n"):
        return raw, start + len(raw)
    last = raw.rfind(b"\n")
    if last < 0:
        return b"", start
    return raw[:last], start + last + 1


def follow(
    path: str | Path,
    offset: int,
    redact: Redact,
    *,
    next_number: int | None = None,
    max_bytes: int = FOLLOW_BYTES,
    finished: bool = False,
) -> LogWindow:
    """The whole lines written since byte `offset` (a previous window's `end`), and where to read next.

    `next_number` is the number of the line at `offset` (the previous window's `next_number`); without
    it the lines are numbered from the window (`numbered=False`). An `offset` inside a line moves past
    that line (never half a line: see the module's note); an offset past the end (the file was
    replaced) reads from the start. A line longer than `max_bytes` is read on to its newline, up to
    `LONG_LINE_BYTES`; a longer one is replaced by a note (splitting it could split a secret).
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if offset > size:
                offset, next_number = 0, 1
            if offset > 0:
                handle.seek(offset - 1)
                if handle.read(1) != b"\n":  # inside a line: skip to the next line start
                    rest = _read_to_newline(handle, max_bytes)
                    newline = rest.find(b"\n")
                    offset, next_number = offset + (newline + 1 if newline >= 0 else len(rest)), None
                    if newline < 0:
                        return LogWindow((), offset, offset, size, True, False, 1)
            if offset == 0:
                next_number = 1
            handle.seek(offset)
            raw = _read_to_newline(handle, max_bytes)
    except OSError:
        return LogWindow((), offset, offset, 0, False, next_number is not None, next_number or 1)
    numbered = next_number is not None
    first = next_number if next_number is not None else 1
    if len(raw) >= LONG_LINE_BYTES and b"\n" not in raw:
        note = f"(a line of more than {LONG_LINE_BYTES // 2**20} MiB: download the log to read it)"
        return LogWindow((LogLine(first, note, False),), offset, offset + len(raw), size, False, False, first + 1)
    body, end = _whole_lines(raw, offset, finished)
    pieces = body.split(b"\n") if end > offset else []
    lines = tuple(_line(first + i, p, redact) for i, p in enumerate(pieces))
    return LogWindow(lines, offset, end, size, offset > 0 and not numbered, numbered, first + len(lines))


def _read_to_newline(handle: BinaryIO, max_bytes: int) -> bytes:
    """`max_bytes`, or more when they hold no newline: on to the first one, up to `LONG_LINE_BYTES`."""
    raw = handle.read(max_bytes)
    while b"\n" not in raw and len(raw) < LONG_LINE_BYTES:
        more = handle.read(max_bytes)
        if not more:
            break
        raw += more
    return raw


class WholeLog:
    """Every line of a log, numbered, as an iterator (a page streams it; it is never all in memory).

    After the iteration `end` and `next_number` say where a follower resumes, so a streamed page can
    write them after its last line.
    """

    def __init__(self, path: str | Path, redact: Redact, *, finished: bool = False) -> None:
        self.path = path
        self.redact = redact
        self.finished = finished
        self.end = 0
        self.next_number = 1
        self.errors = 0

    def __iter__(self) -> Iterator[LogLine]:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (closed below, after the last line)
        except OSError:
            return
        with handle:
            for raw in handle:
                if not raw.endswith(b"\n") and not self.finished:
                    break  # being written: the follower takes it when it is whole
                line = _line(self.next_number, raw.rstrip(b"\n"), self.redact)
                self.end += len(raw)
                self.next_number += 1
                self.errors += line.error
                yield line


def matches(text: str, query: str) -> bool:
    """The viewer's search: a case-insensitive substring (what a reader types is text, not a pattern)."""
    return not query or query.casefold() in text.casefold()


def highlight(text: str, query: str) -> list[tuple[str, bool]]:
    """`text` in pieces, each marked whether it matches `query` (case-insensitive), for `<mark>`."""
    if not query:
        return [(text, False)]
    folded, wanted = text.casefold(), query.casefold()
    if len(folded) != len(text):  # casefold changed lengths (ß -> ss): mark nothing rather than misplace
        return [(text, False)]
    out: list[tuple[str, bool]] = []
    at = 0
    while (found := folded.find(wanted, at)) >= 0:
        if found > at:
            out.append((text[at:found], False))
        out.append((text[found : found + len(wanted)], True))
        at = found + len(wanted)
    if at < len(text):
        out.append((text[at:], False))
    return out or [(text, False)]


class Shown:
    """The lines a search keeps, counted as they go by (a streamed page writes the counts after them)."""

    def __init__(self, lines: Iterable[LogLine], query: str) -> None:
        self.lines = lines
        self.query = query
        self.total = 0
        self.kept = 0
        self.first_error: LogLine | None = None

    def __iter__(self) -> Iterator[LogLine]:
        for line in self.lines:
            self.total += 1
            if matches(line.text, self.query):
                self.kept += 1
                if line.error and self.first_error is None:
                    self.first_error = line
                yield line
