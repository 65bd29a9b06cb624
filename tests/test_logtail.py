"""Windows of a log for the viewer (`flywheel.ui.logview`): the tail, the whole file, and follow from a byte.

Files are written here byte by byte, so every expected number (line numbers, offsets) is counted from
what was written, not from the code under test.
"""

from __future__ import annotations

import time
from pathlib import Path

from flywheel.incidents import is_error_line
from flywheel.redaction import MASK, Redactor
from flywheel.ui import logview

SECRET = "s3cr3t-Token-4242"
redact = Redactor([SECRET])


def numbered_log(path: Path, count: int, width: int = 40) -> list[bytes]:
    lines = [f"line {i} ".ljust(width, ".").encode() for i in range(1, count + 1)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def test_a_small_log_is_shown_whole_with_its_line_numbers_and_error_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("starting\nINFO reading 3 files\nTraceback (most recent call last):\n  File x\nKeyError: 'k'\n")
    window = logview.tail(log, redact)
    assert [(ln.number, ln.text) for ln in window.lines] == [
        (1, "starting"),
        (2, "INFO reading 3 files"),
        (3, "Traceback (most recent call last):"),
        (4, "  File x"),
        (5, "KeyError: 'k'"),
    ]
    assert [ln.number for ln in window.lines if ln.error] == [3, 5]
    assert not window.cut and window.numbered and window.start == 0
    assert window.end == window.size == log.stat().st_size and window.next_number == 6


def test_the_tail_keeps_the_last_lines_and_numbers_them_as_the_file_does(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    numbered_log(log, 10_000)
    window = logview.tail(log, redact, max_lines=100)
    assert [ln.number for ln in window.lines] == list(range(9901, 10_001))
    assert window.lines[0].text.startswith("line 9901 ") and window.cut and window.numbered
    assert window.start == 9900 * 41  # 40 characters and a newline per line


def test_a_byte_window_never_starts_inside_a_line(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    numbered_log(log, 1000)
    window = logview.tail(log, redact, max_bytes=41 * 10 + 5)  # ten lines and 5 bytes of the one before
    assert [ln.number for ln in window.lines] == list(range(991, 1001))
    exact = logview.tail(log, redact, max_bytes=41 * 10)  # the window starts exactly at a line start
    assert [ln.number for ln in exact.lines] == list(range(991, 1001))


def test_above_the_count_limit_numbers_are_relative_and_say_so(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    numbered_log(log, 1000)
    window = logview.tail(log, redact, max_lines=5, count_limit=100)
    assert not window.numbered and [ln.number for ln in window.lines] == [1, 2, 3, 4, 5]
    assert window.lines[0].anchor(window.numbered) == "W1" and window.lines[0].text.startswith("line 996 ")


def test_a_multi_megabyte_log_is_read_within_the_cap(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    numbered_log(log, 200_000, width=60)  # 12 MB
    started = time.perf_counter()
    window = logview.tail(log, redact)
    took = time.perf_counter() - started
    assert len(window.lines) == logview.TAIL_LINES
    assert window.lines[-1].number == 200_000 and window.lines[0].number == 200_000 - logview.TAIL_LINES + 1
    assert window.size - window.start <= logview.TAIL_BYTES
    assert took < 2.0, f"a 12 MB tail took {took:.2f} s"
    whole = logview.WholeLog(log, redact, finished=True)
    assert sum(1 for _ in whole) == 200_000 and whole.end == log.stat().st_size


def test_follow_returns_whole_lines_and_a_partial_line_waits_for_the_next_poll(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\nthr")
    first = logview.tail(log, redact)
    assert [ln.text for ln in first.lines] == ["one", "two"] and first.end == 8 and first.next_number == 3
    nothing = logview.follow(log, first.end, redact, next_number=first.next_number)
    assert nothing.lines == () and nothing.end == 8  # "thr" is still being written
    with log.open("ab") as handle:
        handle.write(b"ee\nfour\nfi")
    more = logview.follow(log, nothing.end, redact, next_number=nothing.next_number)
    assert [(ln.number, ln.text) for ln in more.lines] == [(3, "three"), (4, "four")]
    assert more.end == len(b"one\ntwo\nthree\nfour\n") and more.numbered
    last = logview.follow(log, more.end, redact, next_number=more.next_number, finished=True)
    assert [(ln.number, ln.text) for ln in last.lines] == [(5, "fi")]  # the step ended: its last words count


def test_a_secret_split_across_two_reads_is_still_masked(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    half = len(SECRET) // 2
    log.write_bytes(b"connecting\nusing token " + SECRET[:half].encode())
    shown: list[str] = []
    window = logview.tail(log, redact)
    shown += [ln.text for ln in window.lines]
    with log.open("ab") as handle:
        handle.write(SECRET[half:].encode() + b" ok\n")
    later = logview.follow(log, window.end, redact, next_number=window.next_number)
    shown += [ln.text for ln in later.lines]
    assert shown == ["connecting", f"using token {MASK} ok"]


def test_a_secret_across_the_follow_chunk_boundary_is_masked(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    prefix = b"x" * 90 + b"\n" + b"token="  # the secret starts 97 bytes in; chunks are 100 bytes
    log.write_bytes(prefix + SECRET.encode() + b"\nafter\n")
    shown, offset, number = [], 0, 1
    for _ in range(10):
        window = logview.follow(log, offset, redact, next_number=number, max_bytes=100)
        shown += [ln.text for ln in window.lines]
        offset, number = window.end, window.next_number
    assert shown == ["x" * 90, f"token={MASK}", "after"]
    assert not any(SECRET[i : i + 6] in "".join(shown) for i in range(len(SECRET) - 5))  # not even a piece


def test_an_offset_inside_a_line_never_shows_half_of_it(tmp_path: Path) -> None:
    """A crafted `from=` in the middle of a secret would otherwise show its unmasked end."""
    log = tmp_path / "a.log"
    log.write_bytes(b"head\nkey " + SECRET.encode() + b"\ntail\n")
    inside = len(b"head\nkey ") + 3
    window = logview.follow(log, inside, redact, next_number=2)
    assert [ln.text for ln in window.lines] == ["tail"] and not window.numbered
    assert SECRET[3:] not in " ".join(ln.text for ln in window.lines)
    tail = logview.tail(log, redact, max_bytes=len(SECRET) + 5)  # the window's first byte is inside the secret
    assert [ln.text for ln in tail.lines] == ["tail"]


def test_a_log_replaced_by_a_shorter_one_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"new\n")
    window = logview.follow(log, 5000, redact, next_number=300)
    assert [(ln.number, ln.text) for ln in window.lines] == [(1, "new")] and window.end == 4


def test_a_missing_log_is_an_empty_window(tmp_path: Path) -> None:
    assert logview.tail(tmp_path / "gone.log", redact).lines == ()
    assert logview.follow(tmp_path / "gone.log", 10, redact).lines == ()
    assert list(logview.WholeLog(tmp_path / "gone.log", redact)) == []


def test_search_is_plain_text_and_case_insensitive() -> None:
    assert logview.matches("ERROR Boom", "boom") and not logview.matches("ERROR Boom", "bang")
    assert logview.matches("a.b", "a.b") and not logview.matches("axb", "a.b")  # not a pattern
    assert logview.highlight("Boom then boom", "BOOM") == [("Boom", True), (" then ", False), ("boom", True)]
    assert logview.highlight("nothing", "") == [("nothing", False)]


def test_error_lines_are_the_ones_a_traceback_or_an_error_record_writes() -> None:
    """Shapes from Python's own output (a traceback's head and last line, `logging`'s default
    `LEVEL:name:message` and a bracketed level) and flywheel's `ERROR type: message`."""
    errors = [
        "ERROR InjectedFault: the source file is missing",
        "Traceback (most recent call last):",
        "KeyError: 'customer_id'",
        "botocore.exceptions.ClientError: An error occurred (AccessDenied)",
        "2026-12-03 10:00:00,123 [ERROR] upload failed",
        "ERROR:root:upload failed",
        "2026-12-03 10:00:00 - root - CRITICAL - disk full",
    ]
    quiet = [
        "INFO reading 3 files",
        "no errors found",
        "ErrorCount: 0",
        '  raise ValueError("bad")',  # a frame of the traceback, not its verdict
        "INFO step 3 ERROR_RATE=0.0",
    ]
    assert [line for line in errors + quiet if is_error_line(line)] == errors


def test_line_numbers_stay_the_files_when_a_counted_log_grows_is_rewritten_or_replaced(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"".join(b"line %d\n" % n for n in range(1, 5001)))
    head = log.stat().st_size - 1000
    assert logview.count_lines(log, head) == log.read_bytes()[:head].count(b"\n")

    with open(log, "ab") as handle:  # the step goes on writing: the next count starts where this one ended
        handle.write(b"".join(b"more %d\n" % n for n in range(1, 2001)))
    later = log.stat().st_size - 500
    assert logview.count_lines(log, later) == log.read_bytes()[:later].count(b"\n")

    # rewritten in place (same inode) with longer lines: the count is not carried over from before
    log.write_bytes(b"".join(b"a much longer line, number %d\n" % n for n in range(1, 9001)))
    end = log.stat().st_size - 10
    assert logview.count_lines(log, end) == log.read_bytes()[:end].count(b"\n")
    # an earlier point than the last count
    assert logview.count_lines(log, 4096) == log.read_bytes()[:4096].count(b"\n")
