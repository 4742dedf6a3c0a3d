"""`calls import` whatever the file holds: one clear line per bad row with its line number, the good rows
imported whole, nothing truncated, no traceback (issue 10 item 9)."""

from __future__ import annotations

import uuid

import pytest

from tests.cli.test_cli import listed, new_id

GOOD = "14155550100"


def write(tmp_path, text: str, name: str = "calls.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_a_field_over_128_kb_is_one_bad_row_and_the_good_rows_are_imported(cli, tmp_path):
    ids = [new_id() for _ in range(3)]
    csv_file = write(
        tmp_path,
        "call_id,to,from,caller_name\n"
        f"{ids[0]},14155550001,{GOOD},Ann\n"
        f'{ids[1]},14155550002,{GOOD},"{"x" * 200_000}"\n'
        f"{ids[2]},14155550003,{GOOD},Cy\n",
    )
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1, result.output
    assert (
        f"{csv_file}:3: column 'caller_name' holds 200000 bytes (a cell may hold at most 16384)"
        in result.output
    )
    assert "imported 2 calls, 1 bad row skipped" in result.output
    assert len(result.output) < 2000  # the huge cell is not echoed back
    jobs = listed(cli)
    assert jobs[ids[0]]["caller_name"] == "Ann" and jobs[ids[2]]["caller_name"] == "Cy"
    assert ids[1] not in jobs


@pytest.mark.parametrize(
    ("char", "named"),
    [("\x85", "NEL (U+0085)"), ("\u2028", "line separator (U+2028)"), ("\x0c", "form feed")],
)
def test_an_odd_line_break_inside_an_unquoted_cell_is_reported_not_a_split_row(cli, tmp_path, char, named):
    split, after = new_id(), new_id()
    csv_file = write(
        tmp_path,
        "call_id,to,from,caller_name,X-PH-Name\n"
        f"{split},14155550001,{GOOD},Ann{char}Lee,Ann\n"
        f"{after},14155550002,{GOOD},Bob,Bob\n",
    )
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1, result.output
    assert f"{csv_file}:2: column 'caller_name' holds a {named}" in result.output
    assert "imported 1 call, 1 bad row skipped" in result.output
    jobs = listed(cli)
    assert split not in jobs  # not a truncated "Ann" job that a fixed re-import would dial a second time
    assert jobs[after]["headers"] == {"Name": "Bob"}


def test_quoted_newlines_keep_the_line_numbers_of_later_rows(cli, tmp_path):
    first, second = new_id(), new_id()
    csv_file = write(
        tmp_path,
        "call_id,to,from,data.Note\n"
        f'{first},14155550001,{GOOD},"two\nlines"\n'
        f"{second},not-a-number,{GOOD},x\n",
    )
    result = cli("calls", "import", str(csv_file))
    assert f"{csv_file}:4: to 'not-a-number'" in result.output
    assert listed(cli)[first]["data"] == {"Note": "two\nlines"}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("to,from,to", "column 'to' appears twice (column 1 and 3)"),
        ("to,from,data.A,data.A", "column 'data.A' appears twice"),
        ("to,from,X-PH-Name,header.name", "columns 'X-PH-Name' and 'header.name' both name header 'Name'"),
        (
            "to,from,X-PH-Tier,X-PH-TIER",
            "columns 'X-PH-Tier' and 'X-PH-TIER' both name header 'Tier' "
            "(column 3 and 4; Plivo treats header names case-insensitively)",
        ),
    ],
)
def test_duplicate_columns_are_an_error_naming_the_column(cli, tmp_path, header, message):
    cells = ",".join(["14155550001", GOOD] + ["A"] * (header.count(",") - 1))
    csv_file = write(tmp_path, f"{header}\n{cells}\n")
    before = len(listed(cli))
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1
    assert f"{csv_file}:1: {message}" in result.output, result.output
    assert len(listed(cli)) == before


def test_a_trailing_comma_is_tolerated_and_a_value_under_no_name_is_reported(cli, tmp_path):
    ok, stray = new_id(), new_id()
    csv_file = write(
        tmp_path,
        f"call_id,to,from,\n{ok},14155550001,{GOOD},\n{stray},14155550002,{GOOD},oops\n",
    )
    result = cli("calls", "import", str(csv_file))
    assert "unknown column" not in result.output
    assert f"{csv_file}:3: column 4 (no name) holds 'oops'" in result.output
    assert "imported 1 call, 1 bad row skipped" in result.output
    jobs = listed(cli)
    assert ok in jobs and stray not in jobs


def test_a_trailing_comma_everywhere_imports_cleanly(cli, tmp_path):
    csv_file = write(tmp_path, f"to,from,\n14155550001,{GOOD},\n14155550002,{GOOD},,\n")
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 0, result.output
    assert "imported 2 calls" in result.output


@pytest.mark.parametrize("at", ["²", "١٢٣", "1e9", "nan", "12.5.3"])
def test_a_strange_time_is_a_clear_line(cli, tmp_path, at):
    csv_file = write(tmp_path, f"call_id,to,from,at\n{new_id()},14155550001,{GOOD},{at}\n")
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1
    assert f"{csv_file}:2: time {at!r} is not ISO 8601" in result.output, result.output
    assert "float" not in result.output


def test_blank_optional_cells_are_absent(cli, tmp_path):
    columns = (
        "call_id,to,from,at,tz,window,max_attempts,caller_name,answer_url,answer_method,X-PH-Name,data.Note"
    )
    to = f"1415{uuid.uuid4().int % 10**7:07d}"
    csv_file = write(tmp_path, f"{columns}\n,{to},{GOOD},,,,,,,, , \n")
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 0, result.output
    [job] = [j for j in listed(cli).values() if j["to"] == to]
    for field in ("tz", "window", "max_attempts", "caller_name", "answer_url", "answer_method", "data"):
        assert field not in job
    assert job["headers"] == {} and len(job["call_id"]) == 36  # a generated UUID


def test_a_file_that_is_not_utf8_is_one_line(cli, tmp_path):
    csv_file = tmp_path / "latin1.csv"
    csv_file.write_bytes(b"to,from,caller_name\n14155550001,14155550100,Ren\xe9\n")
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1
    assert f"{csv_file}:2: not UTF-8" in result.output


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        ",,,\n",
        '"unterminated,to,from\n1,2',
        "to,from\n\x00\x00,\x00\n",
        "to,from\r14155550001,14155550100\r",
        "to,from," + "x" * 300_000 + "\n",
        "\ufeffto,from\n" + ",\n" * 50,
    ],
)
def test_no_file_content_ends_in_a_traceback(cli, tmp_path, text):
    result = cli("calls", "import", str(write(tmp_path, text)))  # the fixture fails on any exception
    assert "Traceback" not in result.output
    assert len(result.output) < 3000
