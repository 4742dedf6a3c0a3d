"""Is this document something Plivo will execute? (PLIVO.md: verbs, nesting, attributes, 100 KB.)

Invalid answer XML ends the call with hangup cause 8011, so every document is checked before it is
returned. One streaming pass through defusedxml's parser (no DTDs, no entities) and no tree is built.
Attribute names are checked per element (case-sensitive) and the values of enumerated and numeric ones.
"""

from __future__ import annotations

from collections.abc import Callable
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


# ---------------------------------------------------------------- attributes
#
# Attribute names per element, case-sensitive, from Plivo's XML reference (docs.plivo.com/docs/voice/xml/,
# latest and legacy pages), plivo-python 4.63's builders (their to_dict() names) and PLIVO.md.
# Where the sources disagree the table takes the union of names and the wider value range, and says so in a
# comment: a false alarm turns a good reply into the fallback, a miss ends the call with 8011; both are bad,
# but a name some Plivo source documents is more likely real than a typo.
# Every rule is built here, once, at import; the handler only does dict look-ups and small string tests.

_Rule = Callable[[str], bool] | None  # None: free text (URLs, names, phone numbers ...)


def _one_of(*values: str) -> Callable[[str], bool]:
    return frozenset(values).__contains__


def _int_in(low: int, high: int | None = None) -> Callable[[str], bool]:
    """Decimal digits only (no sign, no spaces, no '1.0'), within [low, high].

    The sets of spellings are built on a rule's first use, not at import: the table holds a dozen of them
    (thousands of strings in all), and a cold start's first answer uses at most a few.
    """
    spellings = range(low, high + 1) if high is not None and high - low <= 2000 else range(low, 1001)
    table: frozenset[str] | None = None

    def known(value: str) -> bool:
        nonlocal table
        if table is None:
            table = frozenset(str(number) for number in spellings)
        return value in table

    if high is not None and high - low <= 2000:
        # Small ranges: one set look-up, no int() (the forms Plivo's own examples use, without leading 0s).
        return known

    def check(value: str) -> bool:
        if known(value):  # the usual values: one set look-up
            return True
        # 9 digits bound the int() call (and keep far away from Python's 4300-digit conversion limit).
        if not (0 < len(value) <= 9 and value.isdigit() and value.isascii()):
            return False
        if low <= 1 and high is None:
            return low == 0 or value.strip("0") != ""
        number = int(value)
        return number >= low and (high is None or number <= high)

    return check


def _int_in_or(low: int, high: int, *words: str) -> Callable[[str], bool]:
    number, allowed = _int_in(low, high), frozenset(words)

    def check(value: str) -> bool:
        return value in allowed or number(value)

    return check


def _chars(allowed: str, min_len: int = 0, max_len: int = 256) -> Callable[[str], bool]:
    table = frozenset(allowed)

    def check(value: str) -> bool:
        return min_len <= len(value) <= max_len and table.issuperset(value)

    return check


def _voice(value: str) -> bool:
    # WOMAN and MAN are Plivo's own voices; Amazon Polly voices are "Polly.<Name>", the neural ones spelled
    # "Polly.<Name>-Neural" on some pages: letters and hyphens after the dot.
    if value == "WOMAN" or value == "MAN":
        return True
    name = value[6:]
    return (
        value.startswith("Polly.")
        and name[:1].isalpha()
        and name.replace("-", "").isalpha()
        and name.isascii()
    )


def _duration(value: str) -> bool:
    # SSML break time: "500ms", "2s"
    digits = value[:-2] if value.endswith("ms") else value[:-1] if value.endswith("s") else ""
    return 0 < len(digits) <= 5 and digits.isdigit() and digits.isascii()


def _at_most_50(value: str) -> bool:
    return len(value) <= 50


def _events(*values: str) -> Callable[[str], bool]:
    allowed = frozenset(values)

    def check(value: str) -> bool:
        return bool(value) and allowed.issuperset(value.split(","))

    return check


_METHOD = _one_of("GET", "POST")
_BOOL = _one_of("true", "false")
_URL = None  # Plivo fetches it; a wrong URL is a runtime failure, not invalid XML
_TEXT = None
_POSITIVE = _int_in(1)
_NON_NEGATIVE = _int_in(0)
_KEY = _one_of(*"0123456789*#")
# GetInput: "one and only one of 0-9, *, #, or <empty string>, 'none'" (docs).
_FINISH_ONE = _one_of(*"0123456789*#", "", "none")
# GetDigits/Record: the docs say "any digit, #, *"; older pages take several keys, and 'none' / ""
# switch it off: accept any string of keys, or 'none'.
_FINISH_KEYS = _chars("0123456789*#")


def _FINISH_MANY(value: str) -> bool:
    return value == "none" or _FINISH_KEYS(value)


_DTMF_DIGITS = _chars("0123456789*#wW")  # sendDigits: "any digits and the w character" (w = wait 0.5 s)
_FORMAT = _one_of("mp3", "wav")
# Transcription: newest docs list auto, hybrid, manual; older ones auto and hybrid.
_TRANSCRIPTION = _one_of("auto", "hybrid", "manual")

_DESCRIPTIONS: dict[object, str] = {
    _METHOD: "GET or POST",
    _BOOL: "true or false",
    _POSITIVE: "a whole number of at least 1",
    _NON_NEGATIVE: "a whole number of at least 0",
    _KEY: "one key: 0-9, * or #",
    _FINISH_ONE: 'one key (0-9, * or #), "" or none',
    _FINISH_MANY: "keys from 0-9, * and #, or none",
    _DTMF_DIGITS: "digits, *, # and w",
    _FORMAT: "mp3 or wav",
    _TRANSCRIPTION: "auto, hybrid or manual",
}


def _described(rule: Callable[[str], bool], text: str) -> Callable[[str], bool]:
    """`rule`, with `text` as what the error message says is expected (rules are not shared here)."""
    assert rule not in _DESCRIPTIONS, text
    _DESCRIPTIONS[rule] = text
    return rule


_SPEAK: dict[str, _Rule] = {
    "voice": _described(_voice, "WOMAN, MAN or Polly.<Name>"),
    "language": _TEXT,  # en-US, fr-FR, arb ... Plivo's list grows with its voices
    "loop": _described(_int_in(0), "a whole number of at least 0 (0 repeats forever)"),
}

ATTRIBUTES: dict[str, dict[str, _Rule]] = {
    "Response": {},
    "Speak": _SPEAK,
    "Play": {"loop": _NON_NEGATIVE},
    # Wait: length is "a positive integer"; minSilence is in ms (docs' default 2000).
    "Wait": {"length": _POSITIVE, "silence": _BOOL, "minSilence": _NON_NEGATIVE, "beep": _BOOL},
    "GetDigits": {
        "action": _URL,
        "method": _METHOD,
        "timeout": _POSITIVE,
        "digitTimeout": _POSITIVE,
        "finishOnKey": _FINISH_MANY,
        "numDigits": _POSITIVE,
        "retries": _POSITIVE,
        "redirect": _BOOL,
        "playBeep": _BOOL,
        "validDigits": _described(_chars("0123456789*#", 1), "keys from 0-9, * and #"),
        "invalidDigitsSound": _URL,
        "log": _BOOL,
    },
    # GetInput: newest docs mark action "required", the legacy page and plivo-python do not: not required.
    "GetInput": {
        "action": _URL,
        "method": _METHOD,
        "inputType": _described(_one_of("dtmf", "speech", "dtmf speech"), "dtmf, speech or dtmf speech"),
        "executionTimeout": _described(_int_in(5, 60), "a whole number from 5 to 60"),
        # The docs type these as strings "2 to 10, or auto" (plivo-python only takes ints): both.
        "digitEndTimeout": _described(_int_in_or(2, 10, "auto"), "a whole number from 2 to 10, or auto"),
        "speechEndTimeout": _described(_int_in_or(2, 10, "auto"), "a whole number from 2 to 10, or auto"),
        "finishOnKey": _FINISH_ONE,
        "numDigits": _POSITIVE,  # docs: "positive integer"; no upper bound stated on every page
        "speechModel": _TEXT,  # default, command_and_search, phone_call ... (list differs across pages)
        "hints": _TEXT,
        "language": _TEXT,
        "interimSpeechResultsCallback": _URL,
        "interimSpeechResultsCallbackMethod": _METHOD,
        "log": _BOOL,
        "redirect": _BOOL,
        "profanityFilter": _BOOL,
    },
    "Dial": {
        "action": _URL,
        "method": _METHOD,
        "hangupOnStar": _BOOL,
        "timeLimit": _POSITIVE,
        "timeout": _POSITIVE,
        "callerId": _TEXT,
        "callerName": _described(_at_most_50, "at most 50 characters"),
        "confirmSound": _URL,
        "confirmTimeout": _POSITIVE,
        "confirmKey": _KEY,
        "dialMusic": _TEXT,  # a URL or "real"
        "callbackUrl": _URL,
        "callbackMethod": _METHOD,
        "redirect": _BOOL,
        "digitsMatch": _TEXT,
        "digitsMatchBLeg": _TEXT,
        "sipHeaders": _TEXT,
    },
    # sendDigitsMode is in plivo-python and plivo-node only (not on the docs page): accepted, free text.
    "Number": {"sendDigits": _DTMF_DIGITS, "sendOnPreanswer": _BOOL, "sendDigitsMode": _TEXT},
    # sipAuthUsername/sipAuthPassword: newest docs (authenticated SIP transfer), not in plivo-python 4.63.
    "User": {
        "sendDigits": _DTMF_DIGITS,
        "sendOnPreanswer": _BOOL,
        "sipHeaders": _TEXT,
        "sipAuthUsername": _TEXT,
        "sipAuthPassword": _TEXT,
    },
    "Record": {
        "action": _URL,
        "method": _METHOD,
        "fileFormat": _FORMAT,
        "redirect": _BOOL,
        "timeout": _POSITIVE,
        "maxLength": _POSITIVE,
        "playBeep": _BOOL,
        "finishOnKey": _FINISH_MANY,
        "recordSession": _BOOL,
        "startOnDialAnswer": _BOOL,
        "transcriptionType": _TRANSCRIPTION,
        "transcriptionUrl": _URL,
        "transcriptionMethod": _METHOD,
        "transcriptionReportType": _TEXT,  # plivo-python only; values not documented
        "callbackUrl": _URL,
        "callbackMethod": _METHOD,
        "recordChannelType": _described(_one_of("mono", "stereo"), "mono or stereo"),
    },
    "Redirect": {"method": _METHOD},
    "Hangup": {
        "reason": _described(_one_of("rejected", "busy"), "rejected or busy"),
        "schedule": _described(_int_in(1), "a whole number of seconds, at least 1"),
    },
    "PreAnswer": {},
    "DTMF": {"async": _BOOL},
    # Message: type "sms" is the only documented value.
    "Message": {
        "src": _TEXT,
        "dst": _TEXT,
        "type": _described(_one_of("sms"), "sms"),
        "callbackUrl": _URL,
        "callbackMethod": _METHOD,
    },
    "Conference": {
        "muted": _BOOL,
        "enterSound": _TEXT,  # "", beep:1, beep:2 or a URL
        "exitSound": _TEXT,
        "startConferenceOnEnter": _BOOL,
        "endConferenceOnExit": _BOOL,
        "stayAlone": _BOOL,
        "waitSound": _URL,
        # maxMembers: 1-20 (newest page), 100 (detailed reference), "no limit" (oldest): at least 1.
        "maxMembers": _POSITIVE,
        "record": _BOOL,
        "recordFileFormat": _FORMAT,
        # timeLimit: seconds; 0 meant "no limit" on older pages: at least 0.
        "timeLimit": _NON_NEGATIVE,
        "hangupOnStar": _BOOL,
        "action": _URL,
        "method": _METHOD,
        "callbackUrl": _URL,
        "callbackMethod": _METHOD,
        "digitsMatch": _TEXT,
        "floorEvent": _BOOL,
        "redirect": _BOOL,
        "relayDTMF": _BOOL,
        "sendDigits": _DTMF_DIGITS,
        "recordWhenAlone": _BOOL,
        "transcriptionType": _TRANSCRIPTION,
        "transcriptionUrl": _URL,
        "transcriptionMethod": _METHOD,
    },
    "MultiPartyCall": {
        # ai-agent: newest docs; plivo-python 4.63 knows agent, supervisor and customer only.
        "role": _described(
            _one_of("customer", "agent", "supervisor", "ai-agent"), "customer, agent, supervisor or ai-agent"
        ),
        "maxDuration": _described(_int_in(300, 28800), "a whole number from 300 to 28800"),
        "maxParticipants": _described(_int_in(2, 10), "a whole number from 2 to 10"),
        "recordMinMemberCount": _described(_int_in(1, 2), "1 or 2"),
        "waitMusicUrl": _URL,
        "waitMusicMethod": _METHOD,
        "waitTime": _described(_int_in(0, 1800), "a whole number from 0 to 1800"),  # plivo-python's range
        "agentHoldMusicUrl": _URL,
        "agentHoldMusicMethod": _METHOD,
        "customerHoldMusicUrl": _URL,
        "customerHoldMusicMethod": _METHOD,
        "record": _BOOL,
        "recordParticipantTrack": _BOOL,
        "recordFileFormat": _FORMAT,
        "recordingCallbackUrl": _URL,
        "recordingCallbackMethod": _METHOD,
        "statusCallbackEvents": _described(
            _events(
                "mpc-state-changes",
                "participant-state-changes",
                "participant-speak-events",
                "participant-digit-input-events",
                "add-participant-api-events",
            ),
            "a comma-separated list of mpc-state-changes, participant-state-changes, "
            "participant-speak-events, participant-digit-input-events, add-participant-api-events",
        ),
        "statusCallbackUrl": _URL,
        "statusCallbackMethod": _METHOD,
        "stayAlone": _BOOL,
        "coachMode": _BOOL,
        "mute": _BOOL,
        "hold": _BOOL,
        "startMpcOnEnter": _BOOL,
        "endMpcOnExit": _BOOL,
        "enterSound": _TEXT,  # beep:1, beep:2, none or a URL
        "enterSoundMethod": _METHOD,
        "exitSound": _TEXT,
        "exitSoundMethod": _METHOD,
        "onExitActionUrl": _URL,
        "onExitActionMethod": _METHOD,
        # The docs and plivo-python spell it relayDTMFInputs; plivo-go writes relayDtmfInputs. Plivo's
        # names are case-sensitive and the docs are the authority: relayDTMFInputs only.
        "relayDTMFInputs": _BOOL,
        "startRecordingAudio": _URL,
        "startRecordingAudioMethod": _METHOD,
        "stopRecordingAudio": _URL,
        "stopRecordingAudioMethod": _METHOD,
        "transcript": _BOOL,  # plivo-python only
        "transcriptionUrl": _URL,  # plivo-python only
        "waitForAgent": _BOOL,  # newest docs only
        "recordCoachVoice": _BOOL,  # newest docs only
    },
    "Stream": {
        "bidirectional": _BOOL,
        "audioTrack": _described(_one_of("inbound", "outbound", "both"), "inbound, outbound or both"),
        "streamTimeout": _POSITIVE,
        "statusCallbackUrl": _URL,
        "statusCallbackMethod": _METHOD,
        "contentType": _described(
            _one_of("audio/x-l16;rate=8000", "audio/x-l16;rate=16000", "audio/x-mulaw;rate=8000"),
            "audio/x-l16;rate=8000, audio/x-l16;rate=16000 or audio/x-mulaw;rate=8000",
        ),
        "extraHeaders": _TEXT,
        "keepCallAlive": _BOOL,
        "noiseCancellation": _BOOL,  # newest docs only
        "noiseCancellationLevel": _described(_int_in(60, 100), "a whole number from 60 to 100"),
    },
    # SSML inside Speak (Amazon Polly's SSML subset, as Plivo documents it and plivo-python builds it).
    "break": {
        "strength": _described(
            _one_of("none", "x-weak", "weak", "medium", "strong", "x-strong"),
            "none, x-weak, weak, medium, strong or x-strong",
        ),
        "time": _described(_duration, "a duration such as 500ms or 2s"),
    },
    "cont": {},
    "emphasis": {
        "level": _described(_one_of("strong", "moderate", "reduced"), "strong, moderate or reduced")
    },
    "lang": {"xml:lang": _TEXT},
    "p": {},
    "phoneme": {"alphabet": _described(_one_of("ipa", "x-sampa"), "ipa or x-sampa"), "ph": _TEXT},
    # prosody values mix words and numbers (+6dB, 80%, x-slow ...): names checked, values free.
    "prosody": {"volume": _TEXT, "rate": _TEXT, "pitch": _TEXT},
    "s": {},
    "say-as": {"interpret-as": _TEXT, "format": _TEXT},
    "sub": {"alias": _TEXT},
    "w": {"role": _TEXT},  # amazon:VB, amazon:NN ...
}
REQUIRED: dict[str, tuple[str, ...]] = {"MultiPartyCall": ("role",)}
_LOWER_NAMES = {tag: {name.lower(): name for name in rules} for tag, rules in ATTRIBUTES.items()}
_XML_NS = "http://www.w3.org/XML/1998/namespace}"


def _UNKNOWN(value: str) -> bool:  # a sentinel for dict.get: a rule no attribute has
    return False


def _attribute_name(raw: str) -> str:
    # expat reports xml:lang as "<XML namespace>}lang" and other prefixed names as "uri}local".
    if "}" not in raw:
        return raw
    if raw.startswith(_XML_NS):
        return "xml:" + raw[len(_XML_NS) :]
    return raw.rsplit("}", 1)[-1] + " (namespaced)"


def _unknown(tag: str, name: str) -> str:
    known = ATTRIBUTES[tag]
    if not known:
        return f"<{tag}> takes no attributes (found {name!r})".replace("'", '"')
    hint = _LOWER_NAMES[tag].get(name.lower())
    if hint is None:
        import difflib  # only for an error's hint: not on every cold start's import path

        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = close[0] if close else None
    suggestion = f' (did you mean "{hint}"?)' if hint else ""
    return f'<{tag}> has no attribute "{name}"{suggestion}'


def _bad_value(tag: str, name: str, value: str, rule: Callable[[str], bool]) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    expected = _DESCRIPTIONS.get(rule, "a documented value")
    return f'<{tag}> {name}="{shown}" is not valid: expected {expected}'


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

    def start(self, tag: str, attrib: list[str]) -> None:
        # defusedxml's parser sets ordered_attributes: `attrib` is [name, value, name, value ...].
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
        if attrib or tag in REQUIRED:
            rules = ATTRIBUTES.get(tag)
            if rules is not None:
                self._attributes(tag, rules, attrib)

    def _attributes(self, tag: str, rules: dict[str, _Rule], attrib: list[str]) -> None:
        pairs = iter(attrib)
        for name, value in zip(pairs, pairs, strict=False):
            rule = rules.get(name, _UNKNOWN)
            if rule is _UNKNOWN:
                name = _attribute_name(name)
                rule = rules.get(name, _UNKNOWN)
                if rule is _UNKNOWN:
                    self._problem(_unknown(tag, name))
                    continue
            if rule is not None and not rule(value):
                self._problem(_bad_value(tag, name, value, rule))
        if tag in REQUIRED:
            names = attrib[0::2]
            for name in REQUIRED[tag]:
                if name not in names:
                    self._problem(f'<{tag}> needs a "{name}" attribute')
        if tag == "Stream" and "bidirectional" in attrib:
            # Docs: "when bidirectional is true, audioTrack should not be outbound or both".
            found = dict(zip(attrib[0::2], attrib[1::2], strict=True))
            if found.get("bidirectional") == "true" and found.get("audioTrack", "inbound") != "inbound":
                self._problem('<Stream bidirectional="true"> streams the inbound track only (audioTrack)')

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
