"""What `templates check` renders: every branch a template's own comparisons select.

A template's `{% if call.Digits == "1" %}` names the values its author expects; rendering it once per
combination of those values (and with none at all) finds the branch whose XML is invalid at authoring time,
not as a fallback at call time. Also the literal `url('X')` and `result('x')` arguments, checked with the
runtime's own rules (chalicelib.answer.steps). Pure: a template's AST and source in, findings out.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import nodes

from chalicelib.answer.steps import StepEffects, StepError, check_result, step_url

ROOTS = ("call", "headers", "sip", "job")
CASE_INSENSITIVE = ("headers", "sip")
MAX_COMBINATIONS = 256
SAMPLE = "Sample"  # what an uncompared value renders as (the v1 check's placeholder)
CHECK_BASE_URL = "https://callflow.invalid/answer"
CHECK_CALL_ID = "check"
NUMERIC_JOB_FIELDS = frozenset({"attempts", "max_attempts", "due_at", "duration", "bill_duration"})
# Filters that keep the compared value recognisable: `call.Digits|int == 1`, `(call.Speech or "")|lower`.
TRANSPARENT_FILTERS = frozenset(
    {"lower", "upper", "trim", "int", "float", "string", "default", "d", "capitalize", "title", "e", "escape"}
)
# The parameters Plivo sends with every answer request: present even in the "no value" rendering.
PLIVO_BASICS = {
    "From": "14155550100",
    "To": "14155550199",
    "CallUUID": "00000000-0000-4000-8000-000000000000",
    "Direction": "outbound",
    "Event": "StartApp",
    "CallStatus": "in-progress",
}

Path = tuple[str, ...]


class _Absent:
    def __repr__(self) -> str:
        return "no value"


ABSENT: Any = _Absent()
DEFAULT: Any = object()  # the placeholder: SAMPLE, or a number for job.attempts


@dataclass
class Analysis:
    """What a template's AST names: compared values per variable path, url() targets, bad literals."""

    values: dict[Path, list[Any]] = field(default_factory=dict)
    shown: dict[Path, str] = field(default_factory=dict)  # the path as the author spelled it
    targets: dict[str, int] = field(default_factory=dict)  # url('X') → first line
    problems: list[tuple[int, str]] = field(default_factory=list)

    def add(self, path: Path, spelled: str, value: Any) -> None:
        if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
            return
        if not _numeric(path):
            value = str(value)
        found = self.values.setdefault(path, [])
        self.shown.setdefault(path, spelled)
        if value not in found and len(found) < 32:
            found.append(value)


def _numeric(path: Path) -> bool:
    return path[0] == "job" and len(path) == 2 and path[1] in NUMERIC_JOB_FIELDS


def _path(node: nodes.Node, aliases: Mapping[str, tuple[Path, str]]) -> tuple[Path, str] | None:
    """`call.Digits`, `headers["Lang"]|lower`, `(call.Speech or "")` → (("call", "Digits"), "call.Digits")."""
    while True:
        if isinstance(node, nodes.Filter) and node.node is not None and node.name in TRANSPARENT_FILTERS:
            node = node.node
        elif isinstance(node, nodes.Or):
            node = node.left
        else:
            break
    parts: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name):
        return None
    if node.name in aliases:
        base, spelled = aliases[node.name]
    elif node.name in ROOTS:
        base, spelled = (node.name,), node.name
    else:
        return None
    parts.reverse()
    keys = [part.lower() for part in parts] if base[0] in CASE_INSENSITIVE else parts
    path = base + tuple(keys)
    if len(path) < 2:
        return None
    return path, ".".join([spelled, *parts]) if parts else spelled


def _consts(node: nodes.Node) -> list[Any] | None:
    if isinstance(node, nodes.Const):  # a literal list may already be folded into one constant tuple
        return list(node.value) if isinstance(node.value, list | tuple) else [node.value]
    if isinstance(node, nodes.List | nodes.Tuple) and all(isinstance(i, nodes.Const) for i in node.items):
        return [item.value for item in node.items if isinstance(item, nodes.Const)]
    return None


def _compare(analysis: Analysis, left: nodes.Node, op: str, right: nodes.Node, aliases: Any) -> None:
    found, other = _path(left, aliases), _consts(right)
    if found is None:
        found, other = _path(right, aliases), _consts(left)
        reverse = True
    else:
        reverse = False
    if found is None or other is None:
        return
    path, spelled = found
    for value in other:
        if (
            op in ("in", "notin")
            and not reverse
            and isinstance(right, nodes.Const)
            and isinstance(value, str)
        ):
            # `call.Digits in "12"`: each character, and the whole text
            for char in value[:16]:
                analysis.add(path, spelled, char)
        if (
            op in ("gt", "gteq", "lt", "lteq")
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            for near in (value - 1, value, value + 1):
                analysis.add(path, spelled, near)
        else:
            analysis.add(path, spelled, value)


def analyse(ast: nodes.Template) -> Analysis:
    """Collect the compared constants per variable path, the url() targets and the bad literals."""
    analysis = Analysis()
    aliases: dict[str, tuple[Path, str]] = {}
    for assign in ast.find_all(nodes.Assign):
        if isinstance(assign.target, nodes.Name):
            found = _path(assign.node, aliases)
            if found is not None:
                aliases[assign.target.name] = found
    for block in ast.find_all(nodes.With):
        for target, value in zip(block.targets, block.values, strict=False):
            found = _path(value, aliases)
            if isinstance(target, nodes.Name) and found is not None:
                aliases[target.name] = found
    for compare in ast.find_all(nodes.Compare):
        operands = [compare.expr, *(operand.expr for operand in compare.ops)]
        for i, operand in enumerate(compare.ops):
            _compare(analysis, operands[i], operand.op, operands[i + 1], aliases)
    for call in ast.find_all(nodes.Call):
        if not isinstance(call.node, nodes.Name) or not call.args:
            continue
        first = call.args[0]
        if not isinstance(first, nodes.Const):
            continue
        try:
            if call.node.name == "url":
                names = {kw.key: "" for kw in call.kwargs}
                step_url(CHECK_BASE_URL, first.value, None, names)
                analysis.targets.setdefault(first.value, call.lineno)
            elif call.node.name == "result":
                check_result(first.value)
        except StepError as exc:
            analysis.problems.append((call.lineno, str(exc)))
    return analysis


def url_targets(ast: nodes.Template) -> set[str]:
    """The templates a template's literal `url('X')` calls name (for `templates delete`)."""
    return set(analyse(ast).targets)


# --------------------------------------------------------------------------- combinations


@dataclass(frozen=True)
class Combination:
    chosen: Mapping[Path, Any]
    nothing: bool = False  # the "no value" rendering: no headers, no job, only Plivo's basic parameters

    def describe(self, shown: Mapping[Path, str]) -> str:
        if self.nothing:
            return "with no values (no headers, no job, no input)"
        picked = [
            f"{shown[path]}={'no value' if value is ABSENT else repr(value)}"
            for path, value in self.chosen.items()
            if value is not DEFAULT
        ]
        return "with " + ", ".join(picked) if picked else ""


def combinations(analysis: Analysis, seed: str) -> tuple[list[Combination], int]:
    """The renderings to try, and how many combinations there are in all (more than returned: sampled)."""
    paths = list(analysis.values)
    # A job always has its numeric fields; "no job at all" is the `nothing` rendering.
    domains = [[DEFAULT, *([] if _numeric(p) else [ABSENT]), *analysis.values[p]] for p in paths]
    total = 1
    for domain in domains:
        total *= len(domain)
    first = Combination(dict.fromkeys(paths, DEFAULT))
    result = [first, Combination(dict.fromkeys(paths, ABSENT), nothing=True)]
    if total <= MAX_COMBINATIONS:
        for values in itertools.product(*domains):
            chosen = dict(zip(paths, values, strict=True))
            if any(value is not DEFAULT for value in values):
                result.append(Combination(chosen))
        return result, total + 1
    # Too many to try them all: every value once, then a reproducible sample of the rest.
    for path, domain in zip(paths, domains, strict=True):
        for value in domain[1:]:
            result.append(Combination({**first.chosen, path: value}))
    rng = random.Random(hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest())
    while len(result) < MAX_COMBINATIONS:
        result.append(
            Combination({path: rng.choice(domain) for path, domain in zip(paths, domains, strict=True)})
        )
    return result, total + 1


class Sample(Mapping[str, Any]):
    """`call`, `headers`, `sip`, `job` for one combination: chosen values, else a placeholder."""

    def __init__(self, path: Path, chosen: Mapping[Path, Any], prefixes: frozenset[Path]) -> None:
        self._path = path
        self._chosen = chosen
        self._prefixes = prefixes

    def __getitem__(self, key: object) -> Any:
        if not isinstance(key, str):
            raise KeyError(key)
        path = (*self._path, key.lower() if self._path[0] in CASE_INSENSITIVE else key)
        value = self._chosen.get(path, DEFAULT)
        if value is ABSENT:
            raise KeyError(key)
        if value is not DEFAULT:
            return value
        if path in self._prefixes or path[:2] in (("job", "data"), ("job", "responses")):
            return Sample(path, self._chosen, self._prefixes)
        return 1 if _numeric(path) else SAMPLE

    def __contains__(self, key: object) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __str__(self) -> str:
        return SAMPLE


def context(name: str, combination: Combination, effects: StepEffects) -> dict[str, Any]:
    """The render context of one combination, with the step functions the runtime gives templates."""
    chosen = combination.chosen
    prefixes = frozenset(path[:i] for path in chosen for i in range(2, len(path)))
    if combination.nothing:
        call: Any = dict(PLIVO_BASICS)
        for path, value in chosen.items():
            if path[0] == "call" and len(path) == 2 and value is not ABSENT:
                call[path[1]] = value
        headers: Any = {}
        sip: Any = {}
        job: dict[str, Any] = {}
    else:
        call = Sample(("call",), chosen, prefixes)
        headers = Sample(("headers",), chosen, prefixes)
        sip = Sample(("sip",), chosen, prefixes)
        job = {"job": Sample(("job",), chosen, prefixes)}

    def url(step: str, /, **params: Any) -> str:
        return step_url(CHECK_BASE_URL, step, CHECK_CALL_ID, params)

    found: dict[str, Any] = {
        "call": call,
        "headers": headers,
        "sip": sip,
        "step": name,
        "url": url,
        "result": effects.set_result,
        "optout": effects.set_opt_out,
    }
    found.update(job)
    return found


# --------------------------------------------------------------------------- output lines → template lines


def _const_lines(ast: nodes.Template) -> dict[str, list[int]]:
    """Each run of literal text the template outputs → the template lines it starts on."""
    runs: dict[str, list[int]] = {}
    for output in ast.find_all(nodes.Output):
        text, start = "", 0
        for node in [*output.nodes, None]:
            if isinstance(node, nodes.TemplateData):
                if not text:
                    start = node.lineno
                text += node.data
                continue
            if text:
                runs.setdefault(text, []).append(start)
            text = ""
    return runs


def output_lines(template: Any, ast: nodes.Template, ctx: Mapping[str, Any]) -> Callable[[int], int | None]:
    """Render again, noting which template line each output line came from (only for a failed rendering)."""
    runs = _const_lines(ast)
    lines: dict[int, int] = {}
    out_line = 1
    generator = template.generate(ctx)
    try:
        for chunk in generator:
            inner = generator
            while getattr(inner, "gi_yieldfrom", None) is not None:
                inner = inner.gi_yieldfrom
            frame = getattr(inner, "gi_frame", None)
            near = template.get_corresponding_lineno(frame.f_lineno) if frame is not None else 1
            literal = type(chunk) is str and chunk in runs
            if literal:
                candidates = runs[chunk]
                later = [line for line in candidates if line >= near]
                at = later[0] if later else candidates[-1]
            else:
                at = near
            for i, segment in enumerate(chunk.split("\n")):
                if i:
                    out_line += 1
                if segment.strip() and out_line not in lines:
                    lines[out_line] = at + i if literal else at
    except Exception:  # noqa: BLE001, S110 - the first rendering already reported it; lines are a hint
        pass
    return lines.get
