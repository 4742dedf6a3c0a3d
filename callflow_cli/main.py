"""`callflow`: manage templates and call jobs from a terminal, against whatever AWS the environment names.

`AWS_ENDPOINT_URL` points it at the local stack (`make run` prints the exports); without it, it talks to
real AWS with the usual credential chain. Every user mistake and every AWS failure ends in one readable
line and a non-zero exit, never a traceback (errors.py). Not deployed (the Lambda never imports it): it is
the only package allowed to use click. The commands live in templates.py and calls.py; this module wires
them under one group and holds `launch`.
"""

from __future__ import annotations

import json

import click

from callflow_cli import calls, campaigns, events, templates
from callflow_cli.errors import Group, UserError
from chalicelib import resources


@click.group(cls=Group)
def main() -> None:
    """callflow: templated Plivo answer XML and scheduled outbound calls."""
    resources.reset()  # read the environment as it is now (tests and scripts change it between calls)


main.add_command(templates.group)
main.add_command(calls.group)
main.add_command(campaigns.campaigns)
main.add_command(campaigns.dnc)
main.add_command(events.events)


@main.command("launch")
def launch_command() -> None:
    """Run one launcher pass here, exactly the code the scheduled Lambda runs."""
    from chalicelib import handlers

    settings = resources.settings()
    for field in ("calls_table", "plivo_auth_id", "public_base_url"):
        settings.require(field)
    if not (settings.plivo_auth_token or settings.plivo_auth_token_param):
        raise UserError("PLIVO_AUTH_TOKEN or PLIVO_AUTH_TOKEN_PARAM is not set")
    summary = handlers.launch()
    click.echo(json.dumps(summary))


if __name__ == "__main__":
    main(prog_name="callflow")
