"""The answer pipeline: select a template, render it, check the XML, fall back. Never silent.

Selection (SPEC "The template store"): X-PH-Template naming an existing template, then the first
routes.json rule whose headers all match, then the routes.json default, then DEFAULT_TEMPLATE, then the
built-in apology. Any failure along the way serves DEFAULT_TEMPLATE (if it works) or the built-in
apology, and logs one ERROR line with the CallUUID and every cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from jinja2 import Template

from chalicelib.answer import plivo_xml, render
from chalicelib.answer.render import BUILTIN_FALLBACK, TemplateError
from chalicelib.answer.routes import EMPTY_ROUTES, Routes, RoutesError
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


def _try(
    store: TemplateSource,
    name: str,
    context: Mapping[str, Any],
    causes: list[str],
    template: Template | None = None,
) -> str | None:
    """Render template `name` into valid Plivo XML, or record why not and return None."""
    try:
        if template is None:
            template = store.template(name)
        xml = render.render(template, context)
    except TemplateMissing:
        causes.append(f"template {name!r} not found")
        return None
    except (TemplateBroken, StoreUnavailable, TemplateError) as exc:
        causes.append(f"template {name!r}: {exc}")
        return None
    problem = plivo_xml.first_problem(xml)
    if problem is not None:
        causes.append(f"template {name!r} rendered invalid Plivo XML: {problem}")
        return None
    return xml


@dataclass(frozen=True)
class Selection:
    name: str | None  # None: no step picked a template (built-in fallback), or the store failed
    template: Template | None = None  # the compiled template when selection already fetched it
    failed: bool = False  # the picked template is known to be broken


def select(
    store: TemplateSource, settings: Settings, headers: Mapping[str, str], causes: list[str]
) -> Selection:
    """Steps 1-4 of the selection; failures on the way are appended to `causes`."""
    requested = headers.get("Template")
    if requested:
        try:
            return Selection(requested, store.template(requested))
        except TemplateMissing:
            pass  # unknown names fall through to the rules
        except TemplateBroken as exc:
            causes.append(f"template {requested!r}: {exc}")
            return Selection(requested, failed=True)  # it exists: fall back, not guess
        except StoreUnavailable as exc:
            # S3 is down and this name is not cached: fall through to the cached routes and default,
            # as for a missing name (SPEC "Answer responses"), and say so if they fail too.
            unchecked = f"cannot look up X-PH-Template {requested!r}: {exc}"
            picked = _by_routes(store, settings, headers, causes)
            if picked.name is None:
                causes.insert(0, unchecked)
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
    store: TemplateSource, settings: Settings, headers: Mapping[str, str], causes: list[str]
) -> Selection:
    """Steps 2-4: the first matching rule, routes.json's default, DEFAULT_TEMPLATE."""
    try:
        routes = store.routes()
    except StoreUnavailable as exc:
        causes.append(f"cannot read routes.json: {exc}")
        return Selection(None)
    except RoutesError as exc:
        causes.append(str(exc))
        routes = EMPTY_ROUTES
    name = routes.choose(headers)
    if name is None and settings.default_template:
        return Selection(settings.default_template)
    return Selection(name)


def render_answer(store: TemplateSource | None, settings: Settings, params: Mapping[str, str]) -> str:
    """The XML a call with these Plivo parameters gets. `store` may be None (no bucket configured)."""
    context = render.answer_context(params)
    causes: list[str] = []
    if store is None:
        causes.append("no template store (TEMPLATE_BUCKET is not set)")
    else:
        picked = select(store, settings, context["headers"], causes)
        if picked.name is None and not causes:
            return BUILTIN_FALLBACK  # nothing is configured to pick a template: step 5
        if picked.name is not None and not picked.failed:
            xml = _try(store, picked.name, context, causes, picked.template)
            if xml is not None:
                if causes:  # e.g. a broken routes.json, and DEFAULT_TEMPLATE served instead
                    _log_fallback(params, causes, served=picked.name)
                return xml
        default = settings.default_template
        if default and default != picked.name:
            xml = _try(store, default, context, causes)
            if xml is not None:
                _log_fallback(params, causes, served=default)
                return xml
    _log_fallback(params, causes, served="built-in")
    return BUILTIN_FALLBACK


def _log_fallback(params: Mapping[str, str], causes: list[str], served: str) -> None:
    log.error(
        "answer fell back",
        call_uuid=params.get("CallUUID"),
        cause="; ".join(causes),
        served=served,
    )
