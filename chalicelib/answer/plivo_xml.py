"""Is this document something Plivo will execute? (PLIVO.md: verbs, nesting, 100 KB.)

Invalid answer XML ends the call with hangup cause 8011, so every document is checked before it is
returned. One streaming pass through defusedxml's parser (no DTDs, no entities) and no tree is built.
"""

from __future__ import annotations

from xml.parsers.expat import ErrorString, ExpatError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

MAX_BYTES = 100 * 1024

VERBS = frozenset(
    {
        "Conference",
        "Dial",
        "DTMF",
        "GetDigits",
        "GetInput",
        "Hangup",
        "Message",
        "Play",
        "PreAnswer",
        "Record",
        "Redirect",
        "Speak",
        "Wait",
        "MultiPartyCall",
        "Stream",
    }
)
SSML = frozenset({"break", "cont", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w"})
_PROMPTS = frozenset({"Speak", "Play", "Wait"})

# Which elements may appear inside which; anything absent here takes text only.
CHILDREN: dict[str, frozenset[str]] = {
    "Response": VERBS,
    "GetDigits": _PROMPTS,
    "GetInput": _PROMPTS,
    "Dial": frozenset({"Number", "User"}),
    "PreAnswer": frozenset({"Speak", "Play", "Wait", "GetDigits", "Redirect", "Message", "DTMF"}),
    "Speak": SSML,
    **{tag: SSML for tag in SSML},
}
# Containers hold elements only; text (other than whitespace) inside them is an error.
_CONTAINERS = frozenset({"Response", "GetDigits", "GetInput", "Dial", "PreAnswer"})
_NO_CHILDREN: frozenset[str] = frozenset()


class _Stop(Exception):
    pass


class _Checker:
    """Expat handlers that check nesting as elements stream past (no tree is built)."""

    __slots__ = ("first_only", "stack", "problems", "expat", "root_seen")

    def __init__(self, first_only: bool) -> None:
        self.first_only = first_only
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.expat = None
        self.root_seen = False

    def _problem(self, message: str) -> None:
        line = self.expat.CurrentLineNumber if self.expat is not None else 0
        self.problems.append(f"line {line}: {message}")
        if self.first_only:
            raise _Stop

    def start(self, tag: str, attrib: object) -> None:
        stack = self.stack
        if not stack:
            if tag != "Response":
                self._problem(f"root element must be <Response>, not <{_name(tag)}>")
            self.root_seen = True
        else:
            parent = stack[-1]
            if tag not in CHILDREN.get(parent, _NO_CHILDREN):
                if parent == "Response":
                    self._problem(f"<{_name(tag)}> is not a Plivo verb")
                else:
                    self._problem(f"<{_name(tag)}> is not allowed inside <{parent}>")
        stack.append(tag)

    def end(self, tag: str) -> None:
        self.stack.pop()

    def data(self, text: str) -> None:
        if self.stack and self.stack[-1] in _CONTAINERS and not text.isspace():
            self._problem(f"text is not allowed directly inside <{self.stack[-1]}>")


def _name(tag: str) -> str:
    # expat reports a namespaced element as "uri}local"
    return tag.rsplit("}", 1)[-1] if "}" in tag else tag


def problems(document: str | bytes, first_only: bool = False) -> list[str]:
    """Everything wrong with `document` as Plivo answer XML, as "line N: message" (empty when valid)."""
    data = document.encode("utf-8") if isinstance(document, str) else document
    if len(data) > MAX_BYTES:
        return [f"line 1: document is {len(data)} bytes, over Plivo's limit of {MAX_BYTES}"]
    checker = _Checker(first_only)
    defused = None
    try:
        # defusedxml's parser refuses DTDs, entity declarations and external references; its expat
        # parser then reports straight to the checker, skipping ElementTree's per-element work.
        defused = DefusedXMLParser(forbid_dtd=True)
        expat = defused.parser
        checker.expat = expat
        expat.StartElementHandler = checker.start
        expat.EndElementHandler = checker.end
        expat.CharacterDataHandler = checker.data
        expat.Parse(data, True)
    except _Stop:
        pass
    except ExpatError as exc:
        checker.problems.append(f"line {exc.lineno}: not well-formed XML ({ErrorString(exc.code)})")
    except DefusedXmlException as exc:
        line = checker.expat.CurrentLineNumber if checker.expat is not None else 0
        kind = type(exc).__name__
        checker.problems.append(f"line {line}: DTDs and entity declarations are not allowed ({kind})")
    except (ValueError, LookupError) as exc:  # e.g. an unknown encoding in the XML declaration
        checker.problems.append(f"line 1: unreadable XML ({exc})")
    finally:
        # The parser and its handlers point at each other; breaking those cycles here keeps the
        # cyclic GC (and its pauses) off the answer path.
        checker.expat = None
        if defused is not None:
            vars(defused).clear()
    if not checker.problems and not checker.root_seen:
        checker.problems.append("line 1: no <Response> element")
    return checker.problems


def first_problem(document: str | bytes) -> str | None:
    """The first problem or None: the cheap check on the answer path."""
    found = problems(document, first_only=True)
    return found[0] if found else None
