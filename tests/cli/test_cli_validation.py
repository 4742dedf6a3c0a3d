"""`calls add`/`calls import` check a job with the launcher's own validate_job: what the CLI accepts the
launcher dials, and what it refuses is one line naming the field."""

from __future__ import annotations

import pytest

from callflow_cli.calls import build_job
from tests.cli.test_cli import listed, new_id

BASE_FIELDS = {"to": "14155550123", "from": "14155550100"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"window": 123}, "window 123 must be text like HH:MM-HH:MM"),
        ({"tz": 5}, "tz 5 must be text naming an IANA time zone"),
        ({"max_attempts": "9" * 40}, "max_attempts '" + "9" * 40 + "' must be a whole number from 1 to"),
        ({"max_attempts": "three"}, "max_attempts 'three' must be a whole number"),
        ({"ring_timeout": "0"}, "ring_timeout '0' must be a whole number of seconds from 1 to"),
        ({"answer_method": "PATCH"}, "answer_method 'PATCH' must be GET or POST"),
    ],
)
def test_build_job_refuses_with_the_launchers_message(changes, message):
    with pytest.raises(ValueError) as raised:
        build_job({**BASE_FIELDS, **changes}, {}, 1e9)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_build_job_stores_normalised_values():
    job = build_job(
        {
            **BASE_FIELDS,
            "max_attempts": "4",
            "ring_timeout": " 30 ",
            "answer_method": "get",
            "machine_detection": "Hangup",
            "window": "08:00-20:00",
            "tz": "Europe/Paris",
        },
        {},
        1e9,
    )
    assert (job["max_attempts"], job["ring_timeout"]) == (4, 30)
    assert (job["answer_method"], job["machine_detection"]) == ("GET", "hangup")
    assert (job["window"], job["tz"], job["due_at"]) == ("08:00-20:00", "Europe/Paris", 1e9)


def test_import_skips_rows_with_numbers_dynamodb_cannot_hold(cli, tmp_path):
    good = new_id()
    csv_file = tmp_path / "numbers.csv"
    csv_file.write_text(
        "call_id,to,from,max_attempts,time_limit\n"
        f"{new_id()},14155550001,14155550100,{'9' * 40},\n"
        f"{new_id()},14155550002,14155550100,,{'1' * 45}\n"
        f"{good},14155550003,14155550100,2,600\n"
    )
    result = cli("calls", "import", str(csv_file))
    assert result.exit_code == 1
    assert f"{csv_file}:2: max_attempts" in result.output and f"{csv_file}:3: time_limit" in result.output
    assert "imported 1 call, 2 bad rows skipped" in result.output
    job = listed(cli)[good]
    assert (job["max_attempts"], job["time_limit"]) == (2, 600)
