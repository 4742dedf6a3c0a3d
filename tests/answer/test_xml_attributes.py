"""The Plivo XML attribute check (plivo_xml.ATTRIBUTES) against plivo-python's XML builders as the oracle.

Every document the SDK builds from documented arguments must be accepted; unknown names, wrongly cased
names and bad enumerated values must be rejected with their line.

Where plivo-python and Plivo's docs disagree, the strategies below follow the docs, and say so:
- `method` and the other *Method attributes: plivo-python's MultiPartyCall validates them case-insensitively
  (and upper-cases them), the other builders do not check them at all; the docs allow GET and POST only, so
  only those are generated and lower-case "get" is rejected.
- GetInput `digitEndTimeout`/`speechEndTimeout`: plivo-python int()s them, so it cannot build "auto", which
  the docs allow: "auto" is tested on a hand-written document.
- MultiPartyCall `role` "ai-agent": newest docs only; plivo-python 4.63 refuses it (hand-written test).
- Stream: plivo-python lets `bidirectional=True` go with `audioTrack="both"`; the docs say a bidirectional
  stream takes the inbound track only, so the strategy never combines them and the check rejects it.
- Conference `recordWhenAlone`: plivo-python types it as a string, so `True` comes out as "True"; the docs'
  booleans are lower-case true/false: the strategy passes the strings "true"/"false".
- The builders take any string for enumerated values (Speak voice, Hangup reason, Record fileFormat ...):
  only documented values are generated; numbers are generated inside the documented ranges.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plivo import plivoxml as px

from chalicelib.answer import plivo_xml

EXAMPLES = 400 if os.environ.get("CALLFLOW_LONG") else 60
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

URL = st.sampled_from(["https://example.com/a", "https://x.example/y?call_id=1&step=B", "http://h/p"])
TEXT = st.text(st.characters(categories=("L", "N", "Zs"), codec="utf-8"), max_size=12)
METHOD = st.sampled_from(["GET", "POST"])
BOOL = st.booleans()
KEYS = st.text(st.sampled_from("0123456789*#"), max_size=4)
KEY = st.sampled_from(list("0123456789*#"))
POSITIVE = st.integers(1, 100_000)
NON_NEGATIVE = st.integers(0, 100_000)
TRANSCRIPTION = st.sampled_from(["auto", "hybrid"])
FORMAT = st.sampled_from(["mp3", "wav"])


def kwargs(**optional: st.SearchStrategy) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({}, optional=optional)


SPEAK_ARGS = kwargs(
    voice=st.sampled_from(["WOMAN", "MAN", "Polly.Joanna", "Polly.Mathieu", "Polly.Joanna-Neural"]),
    language=st.sampled_from(["en-US", "fr-FR", "en-GB", "arb"]),
    loop=st.integers(0, 20),
)
PLAY_ARGS = kwargs(loop=st.integers(0, 20))
WAIT_ARGS = kwargs(length=POSITIVE, silence=BOOL, min_silence=NON_NEGATIVE, beep=BOOL)


@st.composite
def ssml(draw) -> px.PlivoXMLElement:
    """One SSML element with its documented attributes (plivo-python names them)."""
    words = draw(st.sampled_from(["hello", "12", "Plivo"]))
    kind = draw(
        st.sampled_from(["break", "emphasis", "lang", "p", "phoneme", "prosody", "s", "say-as", "sub", "w"])
    )
    if kind == "break":
        return px.BreakElement(
            **draw(
                kwargs(
                    strength=st.sampled_from(["none", "x-weak", "weak", "medium", "strong", "x-strong"]),
                    time=st.sampled_from(["500ms", "2s", "10ms"]),
                )
            )
        )
    if kind == "emphasis":
        return px.EmphasisElement(
            words, **draw(kwargs(level=st.sampled_from(["strong", "moderate", "reduced"])))
        )
    if kind == "lang":
        return px.LangElement(words, **draw(kwargs(xmllang=st.sampled_from(["fr-FR", "de-DE"]))))
    if kind == "phoneme":
        return px.PhonemeElement(
            words, **draw(kwargs(alphabet=st.sampled_from(["ipa", "x-sampa"]), ph=st.just("pɪˈkɑːn")))
        )
    if kind == "prosody":
        return px.ProsodyElement(
            words,
            **draw(
                kwargs(
                    volume=st.sampled_from(["loud", "+6dB"]),
                    rate=st.sampled_from(["slow", "80%"]),
                    pitch=st.sampled_from(["high", "-10%"]),
                )
            ),
        )
    if kind == "say-as":
        return px.SayAsElement(
            words,
            **draw(
                kwargs(interpret_as=st.sampled_from(["cardinal", "date"]), format=st.sampled_from(["mdy"]))
            ),
        )
    if kind == "sub":
        return px.SubElement(words, **draw(kwargs(alias=st.just("world"))))
    if kind == "w":
        return px.WElement(words, **draw(kwargs(role=st.sampled_from(["amazon:VB", "amazon:NN"]))))
    return {"p": px.PElement, "s": px.SElement}[kind](words)


@st.composite
def speak(draw) -> px.SpeakElement:
    element = px.SpeakElement(draw(TEXT) or "hi", **draw(SPEAK_ARGS))
    for child in draw(st.lists(ssml(), max_size=3)):
        element.add(child)
    return element


@st.composite
def prompt(draw) -> px.PlivoXMLElement:
    kind = draw(st.sampled_from(["Speak", "Play", "Wait"]))
    if kind == "Speak":
        return draw(speak())
    if kind == "Play":
        return px.PlayElement("https://x/a.mp3", **draw(PLAY_ARGS))
    return px.WaitElement(**draw(WAIT_ARGS))


GET_DIGITS_ARGS = kwargs(
    action=URL,
    method=METHOD,
    timeout=POSITIVE,
    digit_timeout=POSITIVE,
    finish_on_key=KEYS,
    num_digits=st.integers(1, 99),
    retries=st.integers(1, 10),
    redirect=BOOL,
    play_beep=BOOL,
    valid_digits=KEYS.filter(bool),
    invalid_digits_sound=URL,
    log=BOOL,
)
GET_INPUT_ARGS = kwargs(
    method=METHOD,
    input_type=st.sampled_from(["dtmf", "speech", "dtmf speech"]),
    execution_timeout=st.integers(5, 60),
    digit_end_timeout=st.integers(2, 10),
    speech_end_timeout=st.integers(2, 10),
    finish_on_key=st.sampled_from([*"0123456789*#", "none"]),
    num_digits=st.integers(1, 32),
    speech_model=st.sampled_from(["default", "command_and_search", "phone_call"]),
    hints=st.just("yes,no"),
    language=st.sampled_from(["en-US", "fr-FR"]),
    interim_speech_results_callback=URL,
    interim_speech_results_callback_method=METHOD,
    log=BOOL,
    redirect=BOOL,
    profanity_filter=BOOL,
)
DIAL_ARGS = kwargs(
    action=URL,
    method=METHOD,
    hangup_on_star=BOOL,
    time_limit=POSITIVE,
    timeout=POSITIVE,
    caller_id=st.just("14155550100"),
    caller_name=st.text(st.characters(categories=("L",), codec="utf-8"), max_size=50),
    confirm_sound=URL,
    confirm_timeout=POSITIVE,
    confirm_key=KEY,
    dial_music=st.one_of(URL, st.just("real")),
    callback_url=URL,
    callback_method=METHOD,
    redirect=BOOL,
    digits_match=st.just("123,456"),
    digits_match_b_leg=st.just("#9"),
    sip_headers=st.just("head1=val1,head2=val2"),
)
SEND_DIGITS = st.text(st.sampled_from("0123456789*#w"), max_size=8)
NUMBER_ARGS = kwargs(send_digits=SEND_DIGITS, send_on_preanswer=BOOL, send_digits_mode=st.just("rfc2833"))
USER_ARGS = kwargs(send_digits=SEND_DIGITS, send_on_preanswer=BOOL, sip_headers=st.just("a=1"))
RECORD_ARGS = kwargs(
    action=URL,
    method=METHOD,
    file_format=FORMAT,
    redirect=BOOL,
    timeout=POSITIVE,
    max_length=POSITIVE,
    play_beep=BOOL,
    finish_on_key=st.one_of(KEYS, st.just("none")),
    record_session=BOOL,
    start_on_dial_answer=BOOL,
    transcription_type=TRANSCRIPTION,
    transcription_url=URL,
    transcription_method=METHOD,
    transcription_report_type=st.just("json"),
    callback_url=URL,
    callback_method=METHOD,
    record_channel_type=st.sampled_from(["mono", "stereo"]),
)
CONFERENCE_ARGS = kwargs(
    muted=BOOL,
    enter_sound=st.sampled_from(["", "beep:1", "beep:2", "https://x/in.xml"]),
    exit_sound=st.sampled_from(["", "beep:1", "beep:2", "https://x/out.xml"]),
    start_conference_on_enter=BOOL,
    end_conference_on_exit=BOOL,
    stay_alone=BOOL,
    wait_sound=URL,
    max_members=st.integers(1, 20),
    record=BOOL,
    record_file_format=FORMAT,
    time_limit=NON_NEGATIVE,
    hangup_on_star=BOOL,
    action=URL,
    method=METHOD,
    callback_url=URL,
    callback_method=METHOD,
    digits_match=st.just("123"),
    floor_event=BOOL,
    redirect=BOOL,
    relay_dtmf=BOOL,
    send_digits=SEND_DIGITS,
    # plivo-python str()s this one ("True"); the docs' booleans are true/false: strings are passed.
    record_when_alone=st.sampled_from(["true", "false"]),
    transcription_type=TRANSCRIPTION,
    transcription_url=URL,
    transcription_method=METHOD,
)
EVENTS = [
    "mpc-state-changes",
    "participant-state-changes",
    "participant-speak-events",
    "participant-digit-input-events",
    "add-participant-api-events",
]
MPC_ARGS = kwargs(
    max_duration=st.integers(300, 28800),
    max_participants=st.integers(2, 10),
    record_min_member_count=st.integers(1, 2),
    wait_music_url=URL,
    wait_music_method=METHOD,
    wait_time=st.integers(0, 1800),
    agent_hold_music_url=URL,
    agent_hold_music_method=METHOD,
    customer_hold_music_url=URL,
    customer_hold_music_method=METHOD,
    record=BOOL,
    record_participant_track=BOOL,
    record_file_format=FORMAT,
    recording_callback_url=URL,
    recording_callback_method=METHOD,
    status_callback_events=st.lists(st.sampled_from(EVENTS), min_size=1, max_size=3, unique=True).map(
        ",".join
    ),
    status_callback_url=URL,
    status_callback_method=METHOD,
    stay_alone=BOOL,
    coach_mode=BOOL,
    mute=BOOL,
    hold=BOOL,
    start_mpc_on_enter=BOOL,
    end_mpc_on_exit=BOOL,
    enter_sound=st.sampled_from(["beep:1", "beep:2", "none", "https://x/in.xml"]),
    enter_sound_method=METHOD,
    exit_sound=st.sampled_from(["beep:1", "beep:2", "none", "https://x/out.xml"]),
    exit_sound_method=METHOD,
    on_exit_action_url=URL,
    on_exit_action_method=METHOD,
    relay_dtmf_inputs=BOOL,
    start_recording_audio=URL,
    start_recording_audio_method=METHOD,
    stop_recording_audio=URL,
    stop_recording_audio_method=METHOD,
    transcript=BOOL,
    transcription_url=URL,
)
STREAM_ARGS = kwargs(
    bidirectional=BOOL,
    audioTrack=st.sampled_from(["inbound", "outbound", "both"]),
    streamTimeout=POSITIVE,
    statusCallbackUrl=URL,
    statusCallbackMethod=METHOD,
    contentType=st.sampled_from(
        ["audio/x-l16;rate=8000", "audio/x-l16;rate=16000", "audio/x-mulaw;rate=8000"]
    ),
    extraHeaders=st.just("test1=12,test2=123"),
    keepCallAlive=BOOL,
).filter(lambda args: not (args.get("bidirectional") and args.get("audioTrack", "inbound") != "inbound"))


def with_children(element: px.PlivoXMLElement, children: list[px.PlivoXMLElement]) -> px.PlivoXMLElement:
    for child in children:
        element.add(child)
    return element


@st.composite
def get_digits(draw) -> px.GetDigitsElement:
    return with_children(px.GetDigitsElement(**draw(GET_DIGITS_ARGS)), draw(st.lists(prompt(), max_size=2)))


@st.composite
def verb(draw) -> px.PlivoXMLElement:
    kind = draw(
        st.sampled_from(
            [
                "Speak",
                "Play",
                "Wait",
                "GetDigits",
                "GetInput",
                "Dial",
                "Record",
                "Redirect",
                "Hangup",
                "PreAnswer",
                "DTMF",
                "Message",
                "Conference",
                "MultiPartyCall",
                "Stream",
            ]
        )  # fmt: skip
    )
    if kind in ("Speak", "Play", "Wait"):
        return draw(prompt().filter(lambda e: e._name == kind))
    if kind == "GetDigits":
        return draw(get_digits())
    if kind == "GetInput":
        element = px.GetInputElement(action=draw(URL), **draw(GET_INPUT_ARGS))
        return with_children(element, draw(st.lists(prompt(), max_size=2)))
    if kind == "Dial":
        targets = st.one_of(
            NUMBER_ARGS.map(lambda a: px.NumberElement("14155550100", **a)),
            USER_ARGS.map(lambda a: px.UserElement("sip:a@phone.plivo.com", **a)),
        )
        return with_children(
            px.DialElement(**draw(DIAL_ARGS)), draw(st.lists(targets, min_size=1, max_size=3))
        )
    if kind == "Record":
        return px.RecordElement(**draw(RECORD_ARGS))
    if kind == "Redirect":
        return px.RedirectElement("https://x/next", **draw(kwargs(method=METHOD)))
    if kind == "Hangup":
        return px.HangupElement(
            **draw(kwargs(reason=st.sampled_from(["rejected", "busy"]), schedule=st.integers(1, 86400)))
        )
    if kind == "PreAnswer":
        inner = st.one_of(prompt(), get_digits(), st.just(px.RedirectElement("https://x/r")))
        return with_children(px.PreAnswerElement(), draw(st.lists(inner, max_size=3)))
    if kind == "DTMF":
        return px.DTMFElement("12w3", **draw(kwargs(async_=BOOL)))
    if kind == "Message":
        args = kwargs(
            src=st.just("14155550100"),
            dst=st.just("14155550101"),
            type=st.just("sms"),
            callback_url=URL,
            callback_method=METHOD,
        )
        return px.MessageElement("hello", **draw(args))
    if kind == "Conference":
        return px.ConferenceElement("room", **draw(CONFERENCE_ARGS))
    if kind == "MultiPartyCall":
        role = draw(st.sampled_from(["customer", "agent", "supervisor"]))
        return px.MultiPartyCallElement("mpc", role, **draw(MPC_ARGS))
    return px.StreamElement("wss://x/stream", **draw(STREAM_ARGS))


@SETTINGS
@given(st.lists(verb(), min_size=1, max_size=6), st.booleans())
def test_every_document_plivo_python_builds_is_accepted(verbs, pretty):
    document = with_children(px.ResponseElement(), verbs).to_string(pretty=pretty)
    assert plivo_xml.problems(document) == [], document


def test_the_oracle_covers_every_element_the_check_knows():
    """A new element in ATTRIBUTES without a builder strategy here would go untested."""
    sdk_names = {
        cls._name
        for cls in vars(px).values()
        if isinstance(cls, type) and issubclass(cls, px.PlivoXMLElement) and hasattr(cls, "_name")
    }
    assert set(plivo_xml.ATTRIBUTES) == sdk_names


@pytest.mark.parametrize(
    "document",
    [
        # docs: "2 to 10, or auto" (plivo-python can only build integers)
        '<Response><GetInput action="https://x" digitEndTimeout="auto" speechEndTimeout="auto"/></Response>',
        '<Response><MultiPartyCall role="ai-agent">m</MultiPartyCall></Response>',  # newest docs
        '<Response><Stream bidirectional="true" audioTrack="inbound" keepCallAlive="true">wss://x</Stream>'
        "</Response>",
        '<Response><Stream noiseCancellation="true" noiseCancellationLevel="85">wss://x</Stream></Response>',
        '<Response><Dial><User sipAuthUsername="u" sipAuthPassword="p">sip:a@b</User></Dial></Response>',
        '<Response><GetDigits finishOnKey="" numDigits="1"/><Record finishOnKey="*#"/></Response>',
        '<Response><Speak voice="Polly.Joanna-Neural" loop="0">x</Speak><Wait length="5"/></Response>',
        '<Response><Conference maxMembers="20" timeLimit="0">r</Conference></Response>',
    ],
)
def test_documented_values_the_sdk_cannot_build_are_accepted(document):
    assert plivo_xml.problems(document) == []


@pytest.mark.parametrize(
    "document,expected",
    [
        (
            '<Response>\n<Speak>x</Speak>\n<GetInput action="https://x" numdigits="1"/>\n</Response>',
            'line 3: <GetInput> has no attribute "numdigits" (did you mean "numDigits"?)',
        ),
        (
            '<Response>\n<Speak Voice="MAN">x</Speak></Response>',
            'line 2: <Speak> has no attribute "Voice" (did you mean "voice"?)',
        ),
        (
            '<Response><GetDigits acton="https://x"/></Response>',
            'line 1: <GetDigits> has no attribute "acton" (did you mean "action"?)',
        ),
        (
            '<Response><Speak colour="red">x</Speak></Response>',
            'line 1: <Speak> has no attribute "colour"',
        ),
        (
            # plivo-go's spelling; the docs and plivo-python write relayDTMFInputs
            '<Response><MultiPartyCall role="agent" relayDtmfInputs="true">m</MultiPartyCall></Response>',
            'line 1: <MultiPartyCall> has no attribute "relayDtmfInputs" (did you mean "relayDTMFInputs"?)',
        ),
        ('<Response loop="1"/>', "line 1: <Response> takes no attributes"),
        ('<Response><PreAnswer x="1"/></Response>', "line 1: <PreAnswer> takes no attributes"),
        (
            '<Response>\n\n<Redirect method="get">https://x</Redirect></Response>',
            'line 3: <Redirect> method="get" is not valid: expected GET or POST',
        ),
        (
            '<Response><Speak voice="woman">x</Speak></Response>',
            'line 1: <Speak> voice="woman" is not valid: expected WOMAN, MAN or Polly.<Name>',
        ),
        ('<Response><Speak voice="Alice">x</Speak></Response>', 'voice="Alice" is not valid'),
        ('<Response><Speak loop="-1">x</Speak></Response>', 'loop="-1" is not valid'),
        ('<Response><Speak loop="1.0">x</Speak></Response>', 'loop="1.0" is not valid'),
        ('<Response><Speak loop="１">x</Speak></Response>', "is not valid"),  # full-width digit
        ('<Response><Play loop="">x</Play></Response>', 'loop="" is not valid'),
        ('<Response><Wait length="0"/></Response>', 'length="0" is not valid'),
        ('<Response><Wait beep="yes"/></Response>', 'beep="yes" is not valid: expected true or false'),
        ('<Response><Wait silence="True"/></Response>', 'silence="True" is not valid'),
        ('<Response><GetInput inputType="voice"/></Response>', 'inputType="voice" is not valid'),
        ('<Response><GetInput inputType="speech dtmf"/></Response>', "is not valid"),
        ('<Response><GetInput executionTimeout="4"/></Response>', "expected a whole number from 5 to 60"),
        ('<Response><GetInput executionTimeout="61"/></Response>', "from 5 to 60"),
        ('<Response><GetInput digitEndTimeout="1"/></Response>', "from 2 to 10, or auto"),
        ('<Response><GetInput speechEndTimeout="11"/></Response>', "from 2 to 10, or auto"),
        ('<Response><GetInput speechEndTimeout="Auto"/></Response>', "from 2 to 10, or auto"),
        ('<Response><GetInput finishOnKey="12"/></Response>', 'finishOnKey="12" is not valid'),
        ('<Response><GetDigits numDigits="99999999999999"/></Response>', "is not valid"),
        ('<Response><GetDigits validDigits="12a"/></Response>', 'validDigits="12a" is not valid'),
        ('<Response><Hangup reason="declined"/></Response>', "expected rejected or busy"),
        ('<Response><Hangup schedule="0"/></Response>', 'schedule="0" is not valid'),
        ('<Response><Hangup schedule="soon"/></Response>', 'schedule="soon" is not valid'),
        ('<Response><Record fileFormat="ogg"/></Response>', "expected mp3 or wav"),
        ('<Response><Record recordChannelType="dual"/></Response>', "expected mono or stereo"),
        ('<Response><Dial callerName="' + "x" * 51 + '"><Number>1</Number></Dial></Response>', "at most 50"),
        ('<Response><Dial confirmKey="##"><Number>1</Number></Dial></Response>', "one key"),
        ('<Response><Dial><Number sendDigits="12x">1</Number></Dial></Response>', "digits, *, # and w"),
        ("<Response><MultiPartyCall>m</MultiPartyCall></Response>", '<MultiPartyCall> needs a "role"'),
        ('<Response><MultiPartyCall role="boss">m</MultiPartyCall></Response>', 'role="boss" is not valid'),
        (
            '<Response><MultiPartyCall role="agent" maxParticipants="11">m</MultiPartyCall></Response>',
            "2 to 10",
        ),
        ('<Response><MultiPartyCall role="agent" maxDuration="299">m</MultiPartyCall></Response>', "300 to"),
        (
            '<Response><MultiPartyCall role="agent" statusCallbackEvents="mpc-state-changes,x">m'
            "</MultiPartyCall></Response>",
            "statusCallbackEvents",
        ),
        ('<Response><Stream audioTrack="all">wss://x</Stream></Response>', "inbound, outbound or both"),
        ('<Response><Stream contentType="audio/wav">wss://x</Stream></Response>', 'contentType="audio/wav"'),
        (
            '<Response><Stream bidirectional="true" audioTrack="both">wss://x</Stream></Response>',
            "inbound track only",
        ),
        ('<Response><Message type="mms">m</Message></Response>', 'type="mms" is not valid'),
        ('<Response><DTMF async="1">1</DTMF></Response>', 'async="1" is not valid'),
        ('<Response><Conference muted="no">r</Conference></Response>', 'muted="no" is not valid'),
        ('<Response><Speak><break time="forever"/></Speak></Response>', 'time="forever" is not valid'),
        ('<Response><Speak><emphasis level="loud">x</emphasis></Speak></Response>', 'level="loud"'),
        ('<Response><Speak><lang lang="fr">x</lang></Speak></Response>', '<lang> has no attribute "lang"'),
        ('<Response><Speak><p x="1">x</p></Speak></Response>', "<p> takes no attributes"),
        (
            '<Response xmlns:a="urn:a"><Speak a:voice="MAN">x</Speak></Response>',
            '<Speak> has no attribute "voice (namespaced)"',
        ),
    ],
)
def test_bad_attributes_are_rejected_with_their_line(document, expected):
    found = plivo_xml.problems(document)
    assert found and expected in found[0], found
    assert plivo_xml.first_problem(document) == found[0]


def test_every_bad_attribute_is_reported_when_asked_for_all():
    document = '<Response>\n<Speak voice="x" Loop="1">a</Speak>\n<Wait length="0"/>\n</Response>'
    assert plivo_xml.problems(document) == [
        'line 2: <Speak> voice="x" is not valid: expected WOMAN, MAN or Polly.<Name>',
        'line 2: <Speak> has no attribute "Loop" (did you mean "loop"?)',
        'line 3: <Wait> length="0" is not valid: expected a whole number of at least 1',
    ]


def test_long_bad_values_are_shortened_in_the_message():
    found = plivo_xml.first_problem('<Response><Speak voice="' + "W" * 500 + '">x</Speak></Response>')
    assert found is not None and len(found) < 200 and "..." in found
