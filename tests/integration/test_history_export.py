"""History export end to end: simulator -> client pages -> CSV / JSON lines."""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from baxo_mqtt.baxo.client import BaxoClient
from baxo_mqtt.baxo.history import (
    CSV_COLUMNS,
    export_history,
    iter_history_rows,
    run_history_command,
)
from baxo_mqtt.baxo.models import (
    HistoryRow,
    baxo_to_datetime,
    baxo_to_iso,
    datetime_to_baxo,
    parse_iso_time,
)
from baxo_mqtt.errors import BaxoAuthError
from baxo_mqtt.simulator.http import SimulatorServer
from tests.support.connection import Connection

PASSWORD = "export-secret"
START = "2019-01-01T00:00:00Z"


class Terminal(io.StringIO):
    """An in-memory stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FlushRecorder(io.StringIO):
    """Remembers how many API requests had been made at each flush."""

    def __init__(self, server: SimulatorServer) -> None:
        super().__init__()
        self.server = server
        self.requests_at_flush: list[int] = []

    def flush(self) -> None:
        self.requests_at_flush.append(len(self.server.requests))
        super().flush()


@pytest.fixture
def server(make_simulator: Callable[..., SimulatorServer]) -> SimulatorServer:
    # 3 devices x 4 tags = 12 series of one sample a minute.
    return make_simulator(contracts=1, devices=3, tags=4, seed=5, password=PASSWORD)


@pytest.fixture
def client(server: SimulatorServer) -> Iterator[BaxoClient]:
    with BaxoClient(
        Connection(server.url, password=SecretStr(PASSWORD)), backoff_s=0.01
    ) as running:
        yield running


def contract_and_devices(server: SimulatorServer) -> tuple[str, list[str]]:
    contract = server.fleet.contracts()[0]
    return contract.id, [device.id for device in server.fleet.devices(contract.id)]


def test_csv_export_writes_a_header_one_line_per_row_and_the_count(
    client: BaxoClient, server: SimulatorServer, tmp_path: Path
) -> None:
    server.page_size = 1000
    contract_id, devices = contract_and_devices(server)
    output = tmp_path / "out.csv"
    err = io.StringIO()
    # 2019-01-01T00:00 .. 2019-01-02T10:59 inclusive: 2100 minutes per series.
    code = run_history_command(
        client,
        contract_id,
        devices,
        START,
        "2019-01-02T10:59:00Z",
        None,
        "csv",
        str(output),
        err=err,
    )
    assert code == 0
    with output.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.reader(handle))
    assert tuple(lines[0]) == CSV_COLUMNS == ("device", "tag", "timestamp", "value", "source")
    rows = lines[1:]
    assert len(rows) == 3 * 4 * 2100
    assert err.getvalue() == f"{len(rows)} rows written to {output}\n"
    assert len({(device, tag, ts) for device, tag, ts, _, _ in rows}) == len(rows)
    assert {row[0] for row in rows} == set(devices)
    timestamps = sorted({row[2] for row in rows})
    assert timestamps[0] == START
    assert timestamps[-1] == "2019-01-02T10:59:00Z"
    assert all(parse_iso_time(ts).second == 0 and ts.endswith("Z") for ts in timestamps)
    assert {row[4] for row in rows} <= {"1", "2"}
    assert not (tmp_path / "out.csv.partial").exists()


def test_jsonl_export_to_stdout_carries_iso_and_baxo_timestamps(
    client: BaxoClient, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    contract_id, devices = contract_and_devices(server)
    code = run_history_command(
        client, contract_id, devices[:1], START, "2019-01-01T00:09:59Z", ["TAG_2"], "jsonl", "-"
    )
    assert code == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert len(records) == 10
    assert captured.err == "10 rows written to stdout\n"
    for record in records:
        assert set(record) == {"device", "tag", "timestamp", "value", "source", "baxo_timestamp"}
        assert (record["device"], record["tag"]) == (devices[0], "TAG_2")
        assert record["timestamp"] == baxo_to_iso(record["baxo_timestamp"])
        assert isinstance(record["value"], str)


def test_times_without_an_offset_are_utc_and_offsets_are_converted(
    client: BaxoClient, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    contract_id, devices = contract_and_devices(server)
    run_history_command(
        client,
        contract_id,
        devices[:1],
        "2019-01-01T00:00:00",
        "2019-01-01T02:00:00+01:00",
        None,
        "csv",
        None,
        err=io.StringIO(),
    )
    (request,) = server.requests
    start = int(request.params["startTime"][0])
    end = int(request.params["endTime"][0])
    assert baxo_to_iso(start) == "2019-01-01T00:00:00Z"
    assert baxo_to_iso(end) == "2019-01-01T01:00:00Z"
    assert len(capsys.readouterr().out.splitlines()) == 1 + 4 * 61


def test_export_streams_page_by_page_and_counts_25000_rows_exactly(
    client: BaxoClient, server: SimulatorServer
) -> None:
    server.page_size = 1000
    contract_id, devices = contract_and_devices(server)
    start = parse_iso_time(START)
    end = baxo_to_datetime(datetime_to_baxo(start) + 60 * 2099)  # 12 x 2100 = 25,200 rows
    out = FlushRecorder(server)
    progress: list[int] = []
    rows = iter_history_rows(client, contract_id, devices, start, end)
    count = export_history(rows, "csv", out, progress.append)
    assert count == 25_200
    assert out.getvalue().count("\n") == count + 1
    assert progress[-1] == count
    assert progress == sorted(progress)
    # The first rows were written out while most pages were still unfetched.
    assert out.requests_at_flush[0] <= 2
    assert len(server.requests) == 26


def test_progress_is_rewritten_in_place_only_on_a_terminal(
    client: BaxoClient, server: SimulatorServer, tmp_path: Path
) -> None:
    contract_id, devices = contract_and_devices(server)

    def export(output: Path, err: io.StringIO) -> str:
        end = "2019-01-01T03:00:00Z"  # 181 minutes x 12 series = 2172 rows
        run_history_command(
            client, contract_id, devices, START, end, None, "jsonl", str(output), err=err
        )
        return err.getvalue()

    shown = export(tmp_path / "a.jsonl", Terminal())
    assert shown.startswith("\r1000 rows\r2000 rows")
    assert shown.endswith(f"\r2172 rows written to {tmp_path / 'a.jsonl'}\n")
    piped = export(tmp_path / "b.jsonl", io.StringIO())
    assert piped == f"2172 rows written to {tmp_path / 'b.jsonl'}\n"


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2019-01-02T00:00:00Z", "2019-01-01T00:00:00Z", "after --end"),
        ("yesterday", "2019-01-01T00:00:00Z", "--start 'yesterday' is not an ISO 8601 time"),
        (START, "2019-02-30", "--end '2019-02-30' is not an ISO 8601 time"),
        ("1999-12-31T23:59:59Z", START, "before 2000-01-01"),
    ],
)
def test_bad_times_are_value_errors_before_any_request(
    client: BaxoClient, server: SimulatorServer, start: str, end: str, message: str
) -> None:
    contract_id, devices = contract_and_devices(server)
    with pytest.raises(ValueError, match=message):
        run_history_command(client, contract_id, devices, start, end, None, "csv", None)
    assert server.requests == []


def test_a_failed_export_leaves_no_file_behind(
    client: BaxoClient, server: SimulatorServer, tmp_path: Path
) -> None:
    server.faults.auth_failure = True
    contract_id, devices = contract_and_devices(server)
    output = tmp_path / "out.csv"
    with pytest.raises(BaxoAuthError):
        run_history_command(
            client,
            contract_id,
            devices,
            START,
            "2019-01-02T00:00:00Z",
            None,
            "csv",
            str(output),
            err=io.StringIO(),
        )
    assert list(tmp_path.iterdir()) == []


def test_csv_quotes_values_that_hold_commas_quotes_and_newlines() -> None:
    awkward = 'a,"b"\nc'
    rows = [HistoryRow("d,1", "TAG", awkward, 578590638, 2)]
    out = io.StringIO()
    assert export_history(rows, "csv", out) == 1
    parsed = list(csv.reader(io.StringIO(out.getvalue())))
    assert parsed == [list(CSV_COLUMNS), ["d,1", "TAG", "2018-05-02T15:37:18Z", awkward, "2"]]


def test_jsonl_keeps_values_as_the_strings_the_api_sent() -> None:
    rows = [HistoryRow("7", "TAG", "024.50", 578590638, 1)]
    out = io.StringIO()
    export_history(rows, "jsonl", out)
    assert json.loads(out.getvalue()) == {
        "device": "7",
        "tag": "TAG",
        "timestamp": "2018-05-02T15:37:18Z",
        "value": "024.50",
        "source": 1,
        "baxo_timestamp": 578590638,
    }


def test_an_empty_history_writes_only_the_header_and_counts_zero() -> None:
    out = io.StringIO()
    calls: list[int] = []
    assert export_history([], "csv", out, calls.append) == 0
    assert out.getvalue() == "device,tag,timestamp,value,source\n"
    assert calls == [0]


def test_the_password_is_never_in_the_export_request_urls(
    client: BaxoClient, server: SimulatorServer, tmp_path: Path
) -> None:
    server.page_size = 50
    contract_id, devices = contract_and_devices(server)
    run_history_command(
        client,
        contract_id,
        devices,
        START,
        "2019-01-01T00:30:00Z",
        None,
        "csv",
        str(tmp_path / "x.csv"),
        err=io.StringIO(),
    )
    assert len(server.requests) > 3
    for request in server.requests:
        assert not request.password_in_url
        assert PASSWORD not in urllib.parse.unquote_plus(request.query)
