"""Values DynamoDB or a clock cannot hold are bad rows, not a stopped import or a broken `calls list`."""

from __future__ import annotations

from tests.cli.test_cli import listed, new_id


def test_import_rejects_unstorable_id_and_far_future_time_and_keeps_going(cli, tmp_path):
    after = new_id()
    csv_file = tmp_path / "limits.csv"
    csv_file.write_text(
        "call_id,to,from,at\n"
        f"{'x' * 3000},14155550001,14155550100,\n"
        f"{new_id()},14155550002,14155550100,99999999999999999999\n"
        f"{after},14155550003,14155550100,\n"
    )
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1
    assert f"{csv_file}:2: id " in result.output and "1 to 128 characters" in result.output
    assert f"{csv_file}:3:" in result.output and "out of range" in result.output
    assert "imported 1 call, 2 bad rows skipped" in result.output
    jobs = listed(cli)  # and listing still works
    assert jobs[after]["status"] == "pending"


def test_add_with_far_future_time_is_one_clear_line(cli):
    result = cli(
        "calls", "add", "--to", "14155550001", "--from", "14155550100", "--at", "99999999999999999999"
    )
    assert result.exit_code != 0
    assert "out of range" in result.output and "Traceback" not in result.output


def test_cancel_of_an_unstorable_id_is_not_found(cli):
    result = cli("calls", "cancel", "y" * 3000)
    assert result.exit_code != 0
    assert "does not exist" in result.output and "Traceback" not in result.output
