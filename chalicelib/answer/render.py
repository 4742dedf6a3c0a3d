"""Answer templates: the context, compiling and rendering. Pure: no S3, no clock.

Templates are Jinja2 rendered in an immutable sandbox with XML autoescaping, so a caller's name or a
SIP header can never add or close a verb.
"""

from __future__ import annotations

import functools
import re
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from jinja2 import ChainableUndefined, Environment, Template, TemplateSyntaxError, meta, nodes
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, markup_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from chalicelib.answer import plivo_xml
from chalicelib.answer.routes import HEADER_PREFIX

SIP_PREFIX = "sip-h-"
MAX_SOURCE_BYTES = plivo_xml.MAX_BYTES
MAX_RENDER_SECONDS = 2.0  # a render's time budget: far below the API Lambda's 15 s, far above a real one's
_TEMPLATE_FILE = "<template>"

# Characters XML 1.0 cannot carry at all; a caller-controlled value containing one would break the document.
# Spelled as the (small) set of forbidden code points, not the complement of the allowed ones: the same set,
# but `re` compiles the negated class by walking its 63 000 BMP code points, about 5 ms of every cold start.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class TemplateError(Exception):
    """A template cannot be compiled or rendered; the message says why (with the line when known)."""


# The names conversations add to the context (SPEC "The template store", v2). A template that names none of
# them gets none of them: the v1 answer path does no extra work.
STEP_NAMES = frozenset({"step", "job", "url", "result", "optout"})


class AnswerTemplate(Template):
    """A compiled template that knows, from its AST, which of STEP_NAMES it uses (decided once per version:
    only a template that names `job` costs a GetItem)."""

    uses: frozenset[str] = frozenset()


def uses(template: Template) -> frozenset[str]:
    """Which of STEP_NAMES `template` names (none for a template compiled elsewhere)."""
    return getattr(template, "uses", frozenset())


class CaseInsensitive(Mapping[str, str]):
    """Read-only mapping whose lookups ignore case (`headers.customerid` finds `CustomerId`)."""

    __slots__ = ("_data", "_lower")

    def __init__(self, data: dict[str, str]) -> None:
        self._data = data
        self._lower = {key.lower(): value for key, value in data.items()}

    def __getitem__(self, key: str) -> str:
        try:
            return self._data[key]
        except KeyError:
            return self._lower[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self._data or key.lower() in self._lower)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"CaseInsensitive({self._data!r})"


def answer_context(params: Mapping[str, str]) -> dict[str, Any]:
    """The template context: `headers` (X-PH-*), `call` (everything), `sip` (SIP-H-*)."""
    headers: dict[str, str] = {}
    sip: dict[str, str] = {}
    for key, value in params.items():
        if len(key) > 5 and key[0] in "XxSs":
            lower = key[:6].lower()
            if lower.startswith(HEADER_PREFIX):
                headers[key[5:]] = value
            elif lower == SIP_PREFIX:
                sip[key[6:]] = value
    return {"headers": CaseInsensitive(headers), "call": dict(params), "sip": CaseInsensitive(sip)}


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if type(value) is str:
        return _NOT_XML.sub("", value)
    return _check(value, "an output value")  # e.g. a list of big strings, before str() builds it


class BudgetExceeded(Exception):
    """A render went over its size or time budget (a template, or a caller's header, asked for too much)."""


class _Budget:
    # A plain class, not a dataclass, like the other small records on the answer's import path: building
    # a dataclass costs about half a millisecond of every cold start, and nothing compares these.
    __slots__ = ("limit", "deadline")

    def __init__(self, limit: int, deadline: float) -> None:
        self.limit = limit  # characters any one value, and the whole output, may hold
        self.deadline = deadline  # time.monotonic() after which the render stops


_BUDGET: ContextVar[_Budget | None] = ContextVar("callflow_render_budget", default=None)


def _spend() -> _Budget | None:
    """Stop the render if its time is up (every hook, loop step and output chunk comes through here)."""
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget.deadline:
        raise BudgetExceeded("render took longer than its time budget")
    return budget


def _size(value: Any, limit: int) -> int:
    """How many characters `value` would print as, counted only up to just over `limit` (no recursion,
    no str() of a container: the count must not be the allocation it guards against)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += 8
        if total > limit:
            break
    return total


def _check(value: Any, what: str = "a value") -> Any:
    """`value`, unless it is over the budget's size (then the render stops)."""
    budget = _spend()
    if budget is not None and _size(value, budget.limit) > budget.limit:
        raise BudgetExceeded(f"{what} is over {budget.limit} characters")
    return value


def _refuse_if_over(size: int, what: str) -> None:
    budget = _BUDGET.get()
    if budget is not None and size > budget.limit:
        raise BudgetExceeded(f"{what} would be over {budget.limit} characters")


_FORMAT_WIDTH = re.compile(r"[*{]|\d+")


def _check_format(template: Any, args: Iterable[Any]) -> None:
    """printf/str.format: a width or precision from the arguments (`*`, a nested `{}`) or bigger than the
    limit would let a number choose the allocation."""
    budget = _BUDGET.get()
    if budget is None or not isinstance(template, str):
        return
    specs = re.findall(r"%[^a-zA-Z%]*[a-zA-Z%]", template) + re.findall(r"\{[^{}]*:([^}]*)\}", template)
    for spec in specs:
        for token in _FORMAT_WIDTH.findall(spec):
            if not token.isdigit() or int(token) > budget.limit:
                raise BudgetExceeded("a format width is too large or comes from the arguments")
    _refuse_if_over(len(template) + sum(_size(a, budget.limit) for a in args), "formatted text")


def _sized(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _data(args: tuple[Any, ...]) -> list[Any]:
    """A filter's own arguments, without the environment, context or eval context Jinja passes first."""
    return [a for a in args if not isinstance(a, (Environment, Context, EvalContext))]


def _estimate(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """What a str method or filter that allocates from a number would produce, before it does."""
    data = _data(args)
    first = data[0] if data else ""
    text_len = _sized(first)
    numbers = [a for a in (*data[1:], *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)]
    strings = [a for a in (*data[1:], *kwargs.values()) if isinstance(a, str)]
    widest = max(numbers, default=0)
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(text_len, widest)
    if name in ("indent", "expandtabs"):
        lines = first.count("\n") + first.count("\t") + 1 if isinstance(first, str) else 1
        width = widest + max((len(x) for x in strings), default=0)
        return text_len + lines * width
    if name == "wordwrap":
        width = max(int(kwargs.get("width", data[1] if len(data) > 1 else 79) or 1), 1)
        wrap = max((len(x) for x in strings), default=1)
        return text_len + (text_len // width + 1) * wrap
    if name == "replace":
        old = data[1] if len(data) > 1 else kwargs.get("old", "")
        new = data[2] if len(data) > 2 else kwargs.get("new", "")
        if isinstance(first, str) and isinstance(old, str) and isinstance(new, str):
            return text_len + (first.count(old) if old else text_len + 1) * len(new)
    if name in ("batch", "slice"):
        return widest  # how many items (and fill values) it builds
    if name == "join" and isinstance(first, str) and len(data) > 1:
        return _size(data[1], 10**9) + len(first) * _sized(data[1])
    return 0


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps Jinja's pass_context / pass_eval_context marks
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        _refuse_if_over(_estimate(name, args, kwargs), f"|{name}")
        if name == "format" and args:
            data = _data(args)
            if data:
                _check_format(data[0], (*data[1:], *kwargs.values()))
        return _check(func(*args, **kwargs), f"|{name}")

    return guarded


class _BudgetRange:
    """`range` for templates: Jinja's MAX_RANGE per range, and the time budget checked as it iterates."""

    __slots__ = ("_range",)

    def __init__(self, *args: int) -> None:
        self._range = safe_range(*args)

    def __iter__(self) -> Iterator[int]:
        for count, value in enumerate(self._range):
            if not count & 63:
                _spend()
            yield value

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: int) -> int:
        return self._range[index]

    def __contains__(self, value: object) -> bool:
        return value in self._range


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with a budget: no value over the size limit (`"a" * n`, `2 ** n`, `|center(n)`,
    a format width, `~` and `+` chains), and no render past its time (loops, calls, attribute lookups
    and output all check the clock). Going over raises BudgetExceeded, and the answer falls back."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _spend()
        if budget is not None:
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    if isinstance(times, int) and _sized(seq):
                        _refuse_if_over(_size(seq, budget.limit) * max(times, 0), "a repeated value")
            elif operator == "**":
                if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                    if left.bit_length() * right > 4 * budget.limit:
                        raise BudgetExceeded("a power is too large")
            elif operator == "+":
                if _sized(left) and _sized(right):
                    _refuse_if_over(_size(left, budget.limit) + _size(right, budget.limit), "a sum")
            elif operator == "%" and isinstance(left, str):
                _check_format(left, right if isinstance(right, tuple) else (right,))
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        name = getattr(__obj, "__name__", "")
        if isinstance(getattr(__obj, "__self__", None), str):
            _refuse_if_over(_estimate(name, (__obj.__self__, *args), kwargs), f".{name}()")
        return _check(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`"...".format(...)` and `format_map`: the sandbox's safe formatter, after the width check."""
        formatter = super().wrap_str_format(value)
        if formatter is None:
            return None
        owner = value.__self__

        @functools.wraps(formatter)
        def checked(*args: Any, **kwargs: Any) -> str:
            values = [v for a in args for v in (a.values() if isinstance(a, Mapping) else (a,))]
            _check_format(owner, (*values, *kwargs.values()))
            return formatter(*args, **kwargs)

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        return _check(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return _check(super().getitem(obj, argument))

    def budget_iter(self, iterable: Any) -> Iterator[Any]:
        """Every `{% for %}` iterates through this: the clock is checked as the loop runs."""
        for count, value in enumerate(iterable):
            if not count & 63:
                _spend()
            yield value

    def budget_concat(self, *values: Any) -> Any:
        """`a ~ b ~ ...`, refused before it is joined when the result would be over the limit."""
        budget = _spend()
        if budget is not None:
            _refuse_if_over(sum(_size(v, budget.limit) for v in values), "a joined value")
        return markup_join(values)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("budget_iter"), [loop.iter], [], None, None, lineno=loop.lineno
            )
        for concat in list(tree.find_all(nodes.Concat)):
            call = nodes.Call(
                nodes.EnvironmentAttribute("budget_concat"),
                concat.nodes,
                [],
                None,
                None,
                lineno=concat.lineno,
            )
            _replace(tree, concat, call)
        return tree


def _replace(tree: nodes.Node, old: nodes.Node, new: nodes.Node) -> None:
    """Put `new` where `old` is in `tree` (Jinja nodes hold their children in named fields)."""
    for node in [tree, *tree.find_all(nodes.Node)]:
        for field in node.fields:
            value = getattr(node, field, None)
            if value is old:
                setattr(node, field, new)
                return
            if isinstance(value, list):
                for index, item in enumerate(value):
                    if item is old:
                        value[index] = new
                        return


_env: BudgetedSandbox | None = None


def environment() -> BudgetedSandbox:
    """One shared sandbox, created on first use."""
    global _env
    if _env is None:
        env = BudgetedSandbox(
            autoescape=True,
            undefined=ChainableUndefined,
            finalize=_finalize,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
            cache_size=0,
        )
        env.filters = {name: _guard_filter(name, func) for name, func in env.filters.items()}
        env.globals["range"] = _BudgetRange
        _env = env
    return _env


def step_names(tree: nodes.Template) -> frozenset[str]:
    """Which of STEP_NAMES the template reads without setting them itself. Jinja's `meta` answers it with a
    whole code-generation pass, so it is asked only when the tree names one of them at all (a variable
    is only ever read through a Name or a namespace's NSRef): most templates name none."""
    named = {getattr(node, "name", None) for node in tree.find_all((nodes.Name, nodes.NSRef))}
    if named.isdisjoint(STEP_NAMES):
        return frozenset()
    return frozenset(meta.find_undeclared_variables(tree) & STEP_NAMES)


def compile_template(source: str) -> Template:
    """Compile once per template version; raises TemplateError with the line of a syntax error.

    The budget holds while compiling too: Jinja folds constant expressions (`"%0999999999d"|format(1)`)
    at compile time, and a refused fold is left to the render, which refuses it again.
    """
    if not isinstance(source, str):
        raise TemplateError(f"line 1: cannot compile: the source is {type(source).__name__}, not text")
    token = _BUDGET.set(_Budget(plivo_xml.MAX_BYTES, time.monotonic() + MAX_RENDER_SECONDS))
    try:
        env = environment()
        tree = env.parse(source)
        names = step_names(tree)
        template = env.from_string(tree, template_class=AnswerTemplate)
        assert isinstance(template, AnswerTemplate)
        template.uses = names
        return template
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None
    except Exception as exc:  # noqa: BLE001 - any compile failure is a broken template
        raise TemplateError(f"line 1: cannot compile: {exc}") from None
    finally:
        _BUDGET.reset(token)


def _error_line(exc: BaseException) -> int:
    line = 0
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == _TEMPLATE_FILE:
            line = frame.lineno or line
    return line


def render(
    template: Template,
    context: Mapping[str, Any],
    limit: int = plivo_xml.MAX_BYTES,
    seconds: float = MAX_RENDER_SECONDS,
) -> str:
    """Render within a budget: stop as soon as the output is certainly over `limit` characters, when any
    value would be (a caller's header can choose a number), or after `seconds`."""
    parts: list[str] = []
    size = 0
    token = _BUDGET.set(_Budget(limit, time.monotonic() + seconds))
    try:
        for chunk in template.generate(context):
            size += len(chunk)
            if size > limit:
                raise TemplateError(f"rendered output is over {limit} bytes")
            _spend()
            parts.append(chunk)
    except TemplateError:
        raise
    except BudgetExceeded as exc:
        raise TemplateError(f"line {_error_line(exc)}: render stopped: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the sandbox can raise anything a template provokes
        raise TemplateError(f"line {_error_line(exc)}: render failed: {type(exc).__name__}: {exc}") from None
    finally:
        _BUDGET.reset(token)
    return "".join(parts)


BUILTIN_FALLBACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Response>\n"
    "  <Speak>We are sorry, we cannot take your call right now. Please try again later. Goodbye.</Speak>\n"
    "  <Hangup/>\n"
    "</Response>\n"
)
