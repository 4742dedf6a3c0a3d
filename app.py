"""Wiring only: routes and the schedule. All logic lives in chalicelib/."""

from chalice.app import Chalice, Rate

from chalicelib import handlers

# chalicelib.logs writes one JSON object per line; Chalice's own plain-text handler would double every line.
app = Chalice(app_name="callflow", configure_logs=False)

# An HTTP API (v2), ALB or Function URL event is not one the routes can serve: logged, a plain 500.
app.register_middleware(handlers.rest_api_only, "http")

# Plivo may send any content type (or none on a GET); the handler parses what it understands.
ANY_CONTENT = ["*/*"]


@app.route("/answer", methods=["GET", "POST"], content_types=ANY_CONTENT)
def answer():
    return handlers.answer(app.current_request, app.lambda_context)


@app.route("/hangup", methods=["GET", "POST"], content_types=ANY_CONTENT)
def hangup():
    return handlers.hangup(app.current_request, app.lambda_context)


@app.route("/machine", methods=["GET", "POST"], content_types=ANY_CONTENT)
def machine():
    return handlers.machine(app.current_request, app.lambda_context)


@app.schedule(Rate(1, unit=Rate.MINUTES))
def launch_calls(event):
    return handlers.launch_calls(event, event.context)
