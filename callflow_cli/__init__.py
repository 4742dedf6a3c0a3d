"""The `callflow` command line: templates, calls, launch. Never deployed: it is not part of the Lambda zip."""
