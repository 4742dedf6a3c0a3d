"""Conversations: a call is a flow of templates ("steps"). A template's GetInput, GetDigits, Record or Dial
action points back at /answer?step=<Next>&call_id=<job>; what the caller pressed or said arrives with that
request and is kept on the job. Pure: URLs, labels and what a step request recorded; no AWS."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode

from chalicelib.answer.routes import is_template_name

RESULT_RE = re.compile(r"[a-z0-9-]{1,32}")
PARAM_NAME_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
OPTED_OUT = "opted-out"

# Plivo's action parameters (GetInput, GetDigits, Record, Dial): what a step request "carries as input".
ACTION_PARAMS = (
    "Digits",
    "Speech",
    "SpeechConfidenceScore",
    "InputType",
    "UnstableSpeech",
    "RecordUrl",
    "RecordingDuration",
    "RecordingDurationMs",
    "RecordingID",
    "RecordingStartMs",
    "RecordingEndMs",
    "DialStatus",
    "DialRingStatus",
    "DialHangupCause",
    "DialALegUUID",
    "DialBLegUUID",
    "DialAction",
)
MAX_RESPONSE_VALUE = 2000  # characters kept per parameter; a transcript longer than this is cut


class StepError(ValueError):
    """A template asked for something a step cannot be: a bad step name, result label or parameter."""


def step_url(base_answer_url: str, step: str, call_id: str | None, params: Mapping[str, Any]) -> str:
    """The absolute URL of /answer for `step`, carrying the job's call_id and the template's `params`."""
    if not is_template_name(step):
        raise StepError(f"url(): step {step!r} is not a template name ([A-Za-z0-9]{{1,64}})")
    query: list[tuple[str, str]] = [("step", step)]
    if call_id:
        query.append(("call_id", call_id))
    for name, value in params.items():
        if not PARAM_NAME_RE.fullmatch(name) or name in ("step", "call_id"):
            raise StepError(
                f"url(): parameter name {name!r} must be letters, digits or _ (not step or call_id)"
            )
        query.append((name, "" if value is None else str(value)))
    return f"{base_answer_url}?{urlencode(query)}"


def check_result(label: object) -> str:
    if not isinstance(label, str) or not RESULT_RE.fullmatch(label):
        raise StepError(f"result(): label {label!r} must match [a-z0-9-]{{1,32}}")
    return label


def action_input(params: Mapping[str, str]) -> dict[str, str]:
    """The Plivo action parameters this request carries (empty: no input, e.g. a Redirect)."""
    return {k: str(params[k])[:MAX_RESPONSE_VALUE] for k in ACTION_PARAMS if params.get(k) not in (None, "")}


def request_key(params: Mapping[str, str], step: str, given: Mapping[str, str]) -> str:
    """Identifies one step request: Plivo's retry of the same request has the same key."""
    text = "\x1f".join([params.get("CallUUID") or "", step, *(f"{k}={v}" for k, v in sorted(given.items()))])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


class StepEffects:
    """What rendering a step asked for; applied only when its reply is actually served.

    A plain class and a NamedTuple below, not dataclasses: every dataclass on the answer's import path
    costs each cold start about half a millisecond to build, and nothing compares these."""

    def __init__(
        self, result: str | None = None, opt_out: bool = False, calls: list[str] | None = None
    ) -> None:
        self.result = result
        self.opt_out = opt_out
        self.calls: list[str] = [] if calls is None else calls

    def set_result(self, label: object) -> str:
        label = check_result(label)
        if not self.opt_out:  # an opted-out caller stays opted out, whatever the template says next
            self.result = label
        return ""

    def set_opt_out(self) -> str:
        self.opt_out = True
        self.result = OPTED_OUT
        return ""


class StepRecord(NamedTuple):
    """The one conditional write a served step makes on its job (None fields: nothing to write)."""

    step: str
    key: str
    response: dict[str, Any] | None
    result: str | None

    @property
    def empty(self) -> bool:
        return self.response is None and self.result is None


def step_record(step: str, params: Mapping[str, str], effects: StepEffects, now: float) -> StepRecord:
    given = action_input(params)
    response: dict[str, Any] | None = None
    if given:
        response = {**given, "at": round(now, 3)}
        if params.get("CallUUID"):
            response["CallUUID"] = params["CallUUID"]
    return StepRecord(step, request_key(params, step, given), response, effects.result)


def context_names(
    uses: frozenset[str],
    step: str,
    call_id: str | None,
    base_url: Callable[[], str | None],
    job: Callable[[], Mapping[str, Any] | None],
    effects: StepEffects,
) -> dict[str, Any]:
    """The conversation names a template uses (and only those: a v1 template gets none and costs nothing).

    `job` is asked for only when the template names `job` (one GetItem); a job that does not exist is left
    out, so `job.data.Name` renders empty. The functions are plain callables: the sandbox refuses their
    `__` attributes, so they open nothing a template could not already reach.
    """
    names: dict[str, Any] = {}
    if "step" in uses:
        names["step"] = step
    if "job" in uses:
        loaded = job()
        if loaded is not None:
            names["job"] = loaded
    if "url" in uses:

        def url(name: object, /, **params: Any) -> str:
            base = base_url()
            if not base:
                raise StepError("url(): no public URL for /answer (set PUBLIC_BASE_URL)")
            if not isinstance(name, str):
                raise StepError(f"url(): step {name!r} is not a template name")
            return step_url(base, name, call_id, params)

        names["url"] = url
    if "result" in uses:
        names["result"] = effects.set_result
    if "optout" in uses:
        names["optout"] = effects.set_opt_out
    return names


def record_for(
    step: str | None,
    served: str | None,
    params: Mapping[str, str],
    effects: StepEffects | None,
    now: float,
) -> StepRecord | None:
    """What this answer writes on its job: a step request's input (also when its reply fell back), and the
    result of a reply that was served (`effects` None: it fell back). None: nothing to write."""
    if step is not None:
        record = step_record(step, params, effects or StepEffects(), now)
    elif served is not None and effects is not None and effects.result is not None:
        record = StepRecord(served, request_key(params, served, {}), None, effects.result)
    else:
        return None
    return None if record.empty else record
