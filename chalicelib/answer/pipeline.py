"""The answer pipeline: select a template, render it, check the XML, fall back. Never silent.

Selection (SPEC "The template store"): the `step` query parameter (the next step of a conversation: a
missing or broken step template is a broken flow, no guessing), X-PH-Template naming an existing template,
then the first routes.json rule whose headers all match, then the routes.json default, then
DEFAULT_TEMPLATE, then the built-in apology. Any failure along the way serves DEFAULT_TEMPLATE (if it
works) or the built-in apology, and logs one ERROR line with the CallUUID and every cause.

What a served step asked for (`result()`, `optout()`) is returned in `Answer.effects`, and only for the
template that was actually served: a reply that fell back has no effects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from jinja2 import Template

from chalicelib.answer import plivo_xml, render
from chalicelib.answer.render import BUILTIN_FALLBACK, TemplateError
from chalicelib.answer.routes import EMPTY_ROUTES, Routes, RoutesError
from chalicelib.answer.steps import StepEffects
from chalicelib.answer.store import StoreUnavailable, TemplateBroken, TemplateMissing
from chalicelib.logs import log
from chalicelib.settings import Settings


class TemplateSource(Protocol):
    """What the pipeline needs from a template store: the S3 `TemplateStore`, or any stand-in."""

    def template(self, name: str) -> Template:
        """The compiled template; raises TemplateMissing, TemplateBroken or StoreUnavailable."""
        ...

    def routes(self) -> Routes:
        """routes.json (empty when there is none); raises RoutesError or StoreUnavailable."""
        ...


# Names a template may use beyond v1's (`step`, `job`, `url`, `result`, `optout`): given the template's
# compiled `uses`, its own name and the effects to collect into, the context entries to add.
StepNames = Callable[[frozenset[str], str, StepEffects], Mapping[str, Any]]


class Causes:
    """Why the answer did not go as selected: readable texts, and a metric reason for each.

    This and `Selection` are plain classes, not dataclasses: each dataclass built at import costs every
    cold start about half a millisecond, and these are never compared or printed."""

    __slots__ = ("texts", "reasons")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.reasons: list[str] = []

    def add(self, reason: str, text: str) -> None:
        self.texts.append(text)
        self.reasons.append(reason)

    def __bool__(self) -> bool:
        return bool(self.texts)

    def __str__(self) -> str:
        return "; ".join(self.texts)


class Answer(NamedTuple):
    """The reply and what it means for the conversation. (A NamedTuple: immutable like the frozen
    dataclass it was, at a fifth of the class-building cost every cold start pays.)"""

    xml: str
    served: str | None  # the template whose output this is (None: the built-in apology)
    fell_back: bool  # the selected template did not serve (DEFAULT_TEMPLATE or the apology did)
    effects: StepEffects | None = None  # result()/optout() of the served template; None when it fell back
    reason: str | None = None  # the metric reason of the first cause, when something went wrong


def _try(
    store: TemplateSource,
    name: str,
    context: Mapping[str, Any],
    causes: Causes,
    template: Template | None = None,
    names: StepNames | None = None,
    reason: str | None = None,
) -> tuple[str, StepEffects | None] | None:
    """Render template `name` into valid Plivo XML (and the effects it asked for), or record why not and
    return None. `reason` overrides the metric reason (a step's template: "step-missing")."""
    effects: StepEffects | None = None
    try:
        if template is None:
            template = store.template(name)
        uses = render.uses(template)
        if uses and names is not None:
            effects = StepEffects()
            context = {**context, **names(uses, name, effects)}
        xml = render.render(template, context)
    except TemplateMissing:
        causes.add(reason or "missing", f"template {name!r} not found")
        return None
    except TemplateBroken as exc:
        causes.add(reason or "broken", f"template {name!r}: {exc}")
        return None
    except StoreUnavailable as exc:
        causes.add("store-unavailable", f"template {name!r}: {exc}")
        return None
    except TemplateError as exc:
        causes.add("render-failed", f"template {name!r}: {exc}")
        return None
    problem = plivo_xml.first_problem(xml)
    if problem is not None:
        causes.add("invalid-xml", f"template {name!r} rendered invalid Plivo XML: {problem}")
        return None
    return xml, effects


class Selection:
    __slots__ = ("name", "template", "failed")

    def __init__(self, name: str | None, template: Template | None = None, failed: bool = False) -> None:
        self.name = name  # None: no step picked a template (built-in fallback), or the store failed
        self.template = template  # the compiled template when selection already fetched it
        self.failed = failed  # the picked template is known to be broken


def select(
    store: TemplateSource,
    settings: Settings,
    headers: Mapping[str, str],
    causes: Causes,
    step: str | None = None,
) -> Selection:
    """Steps 0-4 of the selection; failures on the way are added to `causes`."""
    if step is not None:
        try:
            return Selection(step, store.template(step))
        except TemplateMissing:
            causes.add("step-missing", f"step template {step!r} not found: the flow is broken")
        except TemplateBroken as exc:
            causes.add("step-missing", f"step template {step!r}: {exc}")
        except StoreUnavailable as exc:
            causes.add("store-unavailable", f"cannot look up step template {step!r}: {exc}")
        return Selection(step, failed=True)  # the next step of a flow: never a guess from the routes
    requested = headers.get("Template")
    if requested:
        try:
            return Selection(requested, store.template(requested))
        except TemplateMissing:
            pass  # unknown names fall through to the rules
        except TemplateBroken as exc:
            causes.add("broken", f"template {requested!r}: {exc}")
            return Selection(requested, failed=True)  # it exists: fall back, not guess
        except StoreUnavailable as exc:
            # S3 is down and this name is not cached: fall through to the cached routes and default,
            # as for a missing name (SPEC "Answer responses"), and say so if they fail too.
            unchecked = f"cannot look up X-PH-Template {requested!r}: {exc}"
            picked = _by_routes(store, settings, headers, causes)
            if picked.name is None:
                causes.texts.insert(0, unchecked)
                causes.reasons.insert(0, "store-unavailable")
            else:
                log.warning(
                    "S3 unavailable and X-PH-Template not cached; falling through to routes.json",
                    template=requested,
                    served=picked.name,
                    cause=str(exc),
                )
            return picked
    return _by_routes(store, settings, headers, causes)


def _by_routes(
    store: TemplateSource, settings: Settings, headers: Mapping[str, str], causes: Causes
) -> Selection:
    """Steps 2-4: the first matching rule, routes.json's default, DEFAULT_TEMPLATE."""
    try:
        routes = store.routes()
    except StoreUnavailable as exc:
        causes.add("store-unavailable", f"cannot read routes.json: {exc}")
        return Selection(None)
    except RoutesError as exc:
        causes.add("broken", str(exc))
        routes = EMPTY_ROUTES
    name = routes.choose(headers)
    if name is None and settings.default_template:
        return Selection(settings.default_template)
    return Selection(name)


def step_of(params: Mapping[str, str]) -> str | None:
    """The `step` a request names (selection step 0), or None for a first answer."""
    return params.get("step") or None


def answer(
    store: TemplateSource | None,
    settings: Settings,
    params: Mapping[str, str],
    names: StepNames | None = None,
) -> Answer:
    """The reply to a call with these Plivo parameters. `store` may be None (no bucket configured);
    `names` gives conversation templates their extra names (None: templates get v1's context only)."""
    context = render.answer_context(params)
    causes = Causes()
    picked = Selection(None)
    if store is None:
        causes.add("no-template", "no template store (TEMPLATE_BUCKET is not set)")
    else:
        step = step_of(params)
        picked = select(store, settings, context["headers"], causes, step)
        if picked.name is None and not causes:
            return Answer(BUILTIN_FALLBACK, None, False)  # nothing is configured to pick a template: step 5
        if picked.name is not None and not picked.failed:
            reason = "step-missing" if step is not None else None
            done = _try(store, picked.name, context, causes, picked.template, names, reason)
            if done is not None:
                first = causes.reasons[0] if causes else None
                if causes:  # e.g. a broken routes.json, and DEFAULT_TEMPLATE served instead
                    _log_fallback(params, causes, served=picked.name)
                return Answer(done[0], picked.name, False, done[1] or StepEffects(), first)
        default = settings.default_template
        if default and default != picked.name:
            done = _try(store, default, context, causes, names=names)
            if done is not None:
                _log_fallback(params, causes, served=default)
                return Answer(done[0], default, True, None, causes.reasons[0])
    _log_fallback(params, causes, served="built-in")
    return Answer(BUILTIN_FALLBACK, None, True, None, causes.reasons[0] if causes else "no-template")


def _log_fallback(params: Mapping[str, str], causes: Causes, served: str) -> None:
    log.error(
        "answer fell back",
        call_id=params.get("call_id"),
        call_uuid=params.get("CallUUID"),
        step=step_of(params),
        cause=str(causes),
        served=served,
    )
