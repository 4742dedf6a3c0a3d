"""`python -m callflow_cli`: the same CLI as the `callflow` console script."""

from callflow_cli.main import main

main()
