"""History export: follow every page of ``devices-historics`` and stream rows out.

An export can span millions of rows, so nothing here holds more than one
page: rows flow from the client's page generator straight to the output,
which is flushed as it goes so a reader (``tail -f``, a pipe) sees progress.

A file export is written under a temporary name and renamed at the end, so a
failed or interrupted export never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal, TextIO

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.baxo.models import (
    BAXO_EPOCH,
    HistoryRow,
    baxo_to_iso,
    datetime_to_baxo,
    parse_iso_time,
)

ExportFormat = Literal["csv", "jsonl"]
CSV_COLUMNS = ("device", "tag", "timestamp", "value", "source")
#: Rows between two flushes (and progress reports). Smaller than a page, so
#: output and progress move steadily even while a page is being written.
FLUSH_EVERY_ROWS = 1000


# The signature mirrors the client's history_pages plus datetimes, and callers
# already pass these positionally.
def iter_history_rows(  # noqa: PLR0917
    client: BaxoClient,
    contract_id: str,
    device_ids: Sequence[str],
    start: datetime,
    end: datetime,
    tags: Sequence[str] | None = None,
) -> Iterator[HistoryRow]:
    """Every history row between ``start`` and ``end``, one page in memory at a time."""
    pages = client.history_pages(
        contract_id, device_ids, datetime_to_baxo(start), datetime_to_baxo(end), tags
    )
    for page in pages:
        yield from page.rows


def export_history(
    rows: Iterable[HistoryRow],
    fmt: ExportFormat,
    out: TextIO,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``rows`` to ``out`` as CSV (with a header) or JSON lines; return the count.

    Timestamps are ISO 8601 UTC; JSON lines also carry the raw BAXO time as
    ``baxo_timestamp``. Values stay the strings the API sent.
    """
    write_row = _csv_writer(out) if fmt == "csv" else _jsonl_writer(out)
    count = 0
    for row in rows:
        write_row(row)
        count += 1
        if count % FLUSH_EVERY_ROWS == 0:
            out.flush()
            if progress is not None:
                progress(count)
    out.flush()
    if progress is not None:
        progress(count)
    return count


def _csv_writer(out: TextIO) -> Callable[[HistoryRow], None]:
    # "\n" rather than csv's default "\r\n": the output is read by shell tools
    # and spreadsheets alike, and every CSV reader accepts a bare newline.
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def write(row: HistoryRow) -> None:
        writer.writerow((row.device_id, row.tag, baxo_to_iso(row.timestamp), row.value, row.source))

    return write


def _jsonl_writer(out: TextIO) -> Callable[[HistoryRow], None]:
    def write(row: HistoryRow) -> None:
        record = {
            "device": row.device_id,
            "tag": row.tag,
            "timestamp": baxo_to_iso(row.timestamp),
            "value": row.value,
            "source": row.source,
            "baxo_timestamp": row.timestamp,
        }
        out.write(json.dumps(record, ensure_ascii=False))
        out.write("\n")

    return write


def parse_time_argument(option: str, text: str) -> datetime:
    """``--start``/``--end`` text -> aware UTC datetime, or a ValueError that names
    the option and shows the expected form."""
    try:
        moment = parse_iso_time(text)
    except ValueError:
        raise ValueError(
            f"{option} {text!r} is not an ISO 8601 time (for example 2024-05-01T00:00:00Z)"
        ) from None
    if moment < BAXO_EPOCH:
        raise ValueError(f"{option} {text!r} is before 2000-01-01, where BAXO time starts")
    return moment


# One parameter per option of ``baxo-mqtt history``, in the order the CLI reads them.
def run_history_command(  # noqa: PLR0917
    client: BaxoClient,
    contract_id: str,
    device_ids: Sequence[str],
    start_text: str,
    end_text: str,
    tags: Sequence[str] | None,
    fmt: ExportFormat,
    output_path: str | None,
    *,
    err: TextIO | None = None,
) -> int:
    """The body of ``baxo-mqtt history``; returns the exit code.

    Bad arguments raise ValueError (the CLI maps it to exit 2). Progress goes
    to ``err`` (stderr by default) only when it is a terminal, so logs and
    pipes never fill with carriage returns; the final row count always does.
    """
    err = sys.stderr if err is None else err
    start = parse_time_argument("--start", start_text)
    end = parse_time_argument("--end", end_text)
    if start > end:
        raise ValueError(f"--start {start_text!r} is after --end {end_text!r}")
    if not device_ids:
        raise ValueError("at least one --device is needed")
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"--format must be csv or jsonl, not {fmt!r}")

    show_progress = err.isatty()

    def report(count: int) -> None:
        err.write(f"\r{count} rows")
        err.flush()

    rows = iter_history_rows(client, contract_id, device_ids, start, end, tags)
    progress = report if show_progress else None
    if output_path is None or output_path == "-":
        count = export_history(rows, fmt, sys.stdout, progress)
        destination = "stdout"
    else:
        count = _export_to_file(rows, fmt, Path(output_path), progress)
        destination = output_path
    if show_progress:
        err.write("\r")
    err.write(f"{count} rows written to {destination}\n")
    err.flush()
    return 0


def _export_to_file(
    rows: Iterable[HistoryRow],
    fmt: ExportFormat,
    path: Path,
    progress: Callable[[int], None] | None,
) -> int:
    partial = path.with_name(path.name + ".partial")
    try:
        # newline="" lets the csv module write its own line endings untouched.
        with partial.open("w", encoding="utf-8", newline="") as out:
            count = export_history(rows, fmt, out, progress)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return count
