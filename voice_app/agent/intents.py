"""What a caller wants, from a transcript, without a language model. Pure: text in, Intent out.

Transcripts come from a recogniser (often the offline one): lower case, no punctuation, fillers
("um", "please", "can you"), and "todo" heard as "to do", "to-do" or "two do". `normalize` irons
those out; `parse` then tries the patterns from the most specific (an add or a completion, whose
free-text title could contain any word) to the most general (a bare "yes").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from enum import StrEnum


class Kind(StrEnum):
    LIST_TODOS = "list_todos"
    ADD_TODO = "add_todo"
    COMPLETE_TODO = "complete_todo"
    CALENDAR = "calendar"
    TEAM = "team"
    TRANSFER = "transfer"
    HELP = "help"
    GOODBYE = "goodbye"
    YES = "yes"
    NO = "no"
    GREETING = "greeting"
    THANKS = "thanks"
    REPEAT = "repeat"
    CANCEL = "cancel"
    CHANGE_PIN = "change_pin"  # handed to the keypad flow: the PIN itself never comes here
    UNSUPPORTED = "unsupported"  # understood, but needs the full assistant or a person
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Intent:
    kind: Kind
    title: str = ""  # ADD_TODO, COMPLETE_TODO: the todo's words
    ordinal: int | None = None  # COMPLETE_TODO: 1-based position, -1 for "the last one"
    day: str = ""  # CALENDAR: today, tomorrow, a weekday, week, next
    team: str = ""  # TEAM: "the sales team" → sales
    status: str = "open"  # LIST_TODOS: open or done
    tentative: bool = False  # ADD_TODO said loosely ("i need to ..."): confirm first


def _phrases(text: str) -> frozenset[str]:
    return frozenset(text.split("|"))


# Normalizing ------------------------------------------------------------------------------------

_CONTRACTIONS = dict(
    pair.split("=")
    for pair in _phrases(
        "what's=what is|who's=who is|whose=who is|that's=that is|it's=it is|i'm=i am|"
        "i've=i have|i'd=i would|i'll=i will|don't=do not|didn't=did not|can't=cannot|"
        "let's=let us|what're=what are|where's=where is|when's=when is|how's=how is|"
        "there's=there is|wanna=want to|gonna=going to|gotta=got to|you're=you are|"
        "we're=we are|they're=they are"
    )
)
_DISFLUENCIES = re.compile(r"\b(?:um+|uh+|uhm|er+m?|hmm+|mm+|ah+|oh)\b")
_POLITE = re.compile(
    r"\b(?:please|kindly|can you|could you|would you|will you|can u|i want you to|"
    r"i would like you to|i need you to|i want to|i would like to|i wish to|"
    r"i would like|go ahead and|for me)\b"
)
# "to do" is the phrase ("i need to do laundry") unless a determiner or "list" says it's the noun.
_TODO_AFTER = re.compile(
    r"\b(a|an|my|the|new|any|your|of|all|these|those|this|that|what|are|add|mark|complete|"
    r"delete|remove|first|second|third|fourth|fifth|last|next|one|more|which|many|another)"
    r"\s+(?:to|two|too|2)\s+do(s|es)?\b"
)
_TODO_BEFORE = re.compile(r"\b(?:to|two|too|2)\s+do(s|es)?\s+(list|lists|item|items|number)\b")
_TODO_WORD = re.compile(r"\b(?:todo|two\s*do|too\s*do)(s|es)?\b")


def normalize(text: str) -> str:
    """Lower case, no punctuation, contractions expanded, 'todo' spelled one way, no 'um'."""
    text = text.lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"\bto-?do'?s\b", "todos", text)
    text = re.sub(r"\b(?:to|two)-do\b", "todo", text)
    text = re.sub(r"[^\w\s']", " ", text)
    text = " ".join(_CONTRACTIONS.get(w, w) for w in text.split())
    text = text.replace("'", "")
    text = _DISFLUENCIES.sub(" ", text)
    text = _TODO_AFTER.sub(lambda m: f"{m[1]} todo{'s' if m[2] else ''}", text)
    text = _TODO_BEFORE.sub(lambda m: f"todo{'s' if m[1] else ''} {m[2]}", text)
    text = _TODO_WORD.sub(lambda m: "todos" if m[1] else "todo", text)
    return " ".join(text.split())


def _strip_polite(text: str) -> str:
    return " ".join(_POLITE.sub(" ", text).split())


# Short answers (the whole utterance) -------------------------------------------------------------


_EXACT: dict[Kind, frozenset[str]] = {
    Kind.YES: _phrases(
        "yes|yeah|yep|yup|yea|ya|sure|of course|correct|that is right|that is correct|right|ok|"
        "okay|sounds good|go ahead|do it|please do|do|absolutely|definitely|affirmative|"
        "yes it is|yes do it|why not|alright|all right|uh huh|yes that is right"
    ),
    Kind.NO: _phrases(
        "no|nope|nah|no thanks|no thank you|not now|that is wrong|that is not right|negative|"
        "not really|no way|do not|incorrect|wrong|not that one|no no"
    ),
    Kind.THANKS: _phrases(
        "thank you|thanks|thanks a lot|thank you very much|great|perfect|awesome|cool|nice|"
        "great thanks|perfect thanks|thank you so much|got it"
    ),
    Kind.GREETING: _phrases(
        "hello|hi|hey|hi there|hello there|good morning|good afternoon|good evening|hey there|howdy"
    ),
    Kind.CANCEL: _phrases(
        "cancel|stop|never mind|nevermind|forget it|start over|wait|hold on|one moment|go back|"
        "cancel that"
    ),
    Kind.REPEAT: _phrases("repeat|again|what|pardon|sorry|come again|say again"),
    Kind.HELP: _phrases("help|menu|options|help me"),
}

# Patterns, tried in order ------------------------------------------------------------------------

_ORDINALS = {  # "for" is how the recogniser often hears "four"
    word: n
    for n, words in enumerate(
        [
            "",
            "first 1st one 1 top",
            "second 2nd two 2",
            "third 3rd three 3",
            "fourth 4th four for 4",
            "fifth 5th five 5",
            "sixth six 6",
            "seventh seven 7",
            "eighth eight 8",
            "ninth nine 9",
            "tenth ten 10",
        ]
    )
    for word in words.split()
} | {"last": -1, "final": -1, "bottom": -1}
_ORDINAL = re.compile(
    r"^(?:the\s+)?(?:todo\s+|item\s+|task\s+)?(?:number\s+)?(?P<n>"
    + "|".join(sorted(map(re.escape, _ORDINALS), key=len, reverse=True))
    + r")(?:\s+(?:one|todo|item|task))?(?:\s+(?:on|in)\s+(?:the|my)\s+list)?$"
)
_DONE = r"(?:done|complete|completed|finished|checked off|crossed off|taken care of)"

_ADD = [
    re.compile(
        r"\b(?:add|at|and|ad|create|make|put|set up|start|write|give me)\s+(?:me\s+)?"
        r"(?:a\s+|an\s+|another\s+)?(?:new\s+)?(?:todo|task|reminder)\b(?:\s+item)?"
        r"(?:\s+(?:to|for|that says|saying|called|about|that|which is|of))?"
        r"(?:\s+(?P<title>.+))?$"
    ),
    re.compile(
        r"^(?:a\s+)?new\s+(?:todo|task)(?:\s+(?:to|for|that says|called))?"
        r"(?:\s+(?P<title>.+))?$"
    ),
    re.compile(
        r"\b(?:add|put|at|and|ad|write|pop)\s+(?P<title>.+?)\s+(?:to|on|onto|in|into)\s+"
        r"(?:my\s+|the\s+)?(?:todo\s+|todos\s+)?(?:list|todos)\b"
    ),
    re.compile(r"\b(?:add|put)\s+(?P<title>.+?)\s+(?:as\s+)?(?:a\s+)?(?:todo|task)$"),
    re.compile(r"\bremind\s+me\s+(?:to|about|of|that i need to)\s+(?P<title>.+)$"),
    re.compile(r"\b(?:dont|do not)\s+let\s+me\s+forget\s+(?:to\s+)?(?P<title>.+)$"),
    re.compile(r"\bnote\s+(?:down\s+)?(?:that\s+)?(?:i\s+(?:need|have)\s+to\s+)(?P<title>.+)$"),
]
_ADD_LOOSE = re.compile(
    r"^(?:and\s+|also\s+)?i\s+(?:(?:need|have|got)\s+to|must|should|gotta)\s+"
    r"(?!know\b|hear\b|check\b|see\b|talk\b|speak\b|do(?:\s+today|\s+tomorrow)?$)(?P<title>.+)$"
)
_COMPLETE = [
    re.compile(rf"\bmark\s+(?:off\s+)?(?P<x>.+?)\s+(?:as\s+)?(?:being\s+)?{_DONE}$"),
    re.compile(r"\b(?:check|cross|tick|strike)\s+off\s+(?P<x>.+)$"),
    re.compile(r"\b(?:check|cross|tick|strike)\s+(?P<x>.+?)\s+off(?:\s+(?:my|the)\s+list)?$"),
    re.compile(r"\bmark\s+off\s+(?P<x>.+)$"),
    re.compile(
        r"\bi\s+(?:have\s+|already\s+|just\s+)*(?:finished|completed|did|done|got done|"
        r"took care of)\s+(?!not\b)(?P<x>.+)$"
    ),
    re.compile(r"\bi\s+am\s+(?:done|finished)\s+with\s+(?P<x>.+)$"),
    re.compile(r"^(?:complete|finish|close|done with|resolve)\s+(?P<x>.+)$"),
    re.compile(
        rf"^(?!(?:what|which|how|who|are|is|do|did|does|that|everything|it)\b)"
        rf"(?P<x>.+?)\s+(?:is|are|has been|was)\s+(?:all\s+)?{_DONE}$"
    ),
    re.compile(rf"\bset\s+(?P<x>.+?)\s+(?:to|as)\s+{_DONE}$"),
]
_TRANSFER = re.compile(
    r"\b(?:person|human|humans|agent|agents|operator|representative|rep|someone|somebody|"
    r"anybody|customer (?:service|support|care)|help desk|live (?:person|agent)|"
    r"real (?:person|human)|transfer(?: me)?|put me through|connect me|speak (?:to|with)|"
    r"talk (?:to|with))\b"
)
_GOODBYE = re.compile(
    r"\b(?:good ?bye|bye|bye bye|hang up|that is all|that is it|that will be all|i am done|"
    r"i am all set|all set|i am good|see you|see ya|have a (?:nice|good|great) (?:day|one|night)|"
    r"nothing else|no more|talk to you later|end (?:the )?call|im done|"
    r"i (?:have to|got to|gotta|need to|must) (?:go|run|leave)$)\b"
)
_CHANGE_PIN = re.compile(r"\b(?:change|update|reset|set|new)\s+(?:my\s+|the\s+|a\s+)?pin\b")
_UNSUPPORTED = [
    re.compile(
        r"^(?:schedule|book|set up|arrange|cancel|move|reschedule|add|create|delete|remove|"
        r"put|plan)\b.*\b(?:meeting|meetings|event|events|appointment|call|calendar)\b"
    ),
    re.compile(
        r"^(?:delete|remove|erase|clear|get rid of)\b|\b(?:delete|remove|erase|clear|get rid of|"
        r"drop)\b.*\b(?:todo|todos|list|item|items|task|tasks|one|team|number)\b"
    ),
    re.compile(
        r"\b(?:add|remove|delete|invite|kick)\s+(?!a\s+todo)(?P<who>.+?)\s+(?:to|from|"
        r"off|out of|into)\s+(?:my|the|our)\s+(?:\w+\s+)?team\b"
    ),
    re.compile(
        r"\b(?:change|update|reset|set|edit)\s+(?:my\s+|the\s+)?(?:pin|email|e mail|phone|"
        r"number|name|address|password|profile|time zone|timezone)\b"
    ),
    re.compile(r"\b(?:my pin|pin number|account number|email address|phone number|my profile)\b"),
    re.compile(r"\b(?:rename|edit|change|update)\b.*\b(?:todo|todos|task)\b"),
]
_CALENDAR = re.compile(
    r"\b(?:calendar|calender|schedule|agenda|meeting|meetings|appointment|appointments|events?|"
    r"am i free|am i busy|am i available|do i have anything|plans)\b"
)
_TEAM = re.compile(
    r"\b(?:team|teams|teammates|teammate|colleagues|coworkers|co workers|members|work with)\b"
)
_TEAM_NAME = re.compile(r"\bthe\s+(?P<team>\w+(?:\s\w+)?)\s+team\b")
_LIST = re.compile(
    r"\b(?:todo|todos|tasks?|my list|the list|to do list|need to do|have to do|got to do|"
    r"should i do|on my plate|reminders?)\b"
)
_HELP = re.compile(
    r"\b(?:help|what can you do|what can i (?:say|ask|do)|what do you do|how does this work|"
    r"how do i use|what are my options|who are you|what are you)\b"
)
_REPEAT = re.compile(
    r"\b(?:repeat|say (?:that|it) again|say again|what was that|what did you say|"
    r"(?:did not|didnt) (?:catch|hear|get) (?:that|you|it)|come again|one more time|"
    r"^(?:sorry|pardon) what$)\b"
)
_CANCEL = re.compile(r"\b(?:never ?mind|forget (?:it|that|about it)|cancel that|start over)\b")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAYS = [  # first match wins: "next monday" is a monday, not "next"
    (r"day after tomorrow", "in two days"),
    (r"tomorrow", "tomorrow"),
    (r"today|tonight|this morning|this afternoon|this evening", "today"),
    *((day, day) for day in _WEEKDAYS),
    (r"this week|next week|the week|weekend", "week"),
    (r"next", "next"),
]
_TITLE_LEAD = re.compile(
    r"^(?:(?:a|an|the|another)\s+(?:new\s+)?(?:todo|task|item|reminder)\s+)?"
    r"(?:(?:to|that|about|of|for|called|saying|says|i need to|i have to|i must|i should|"
    r"remember to|todo)\s+)*"
)
_TITLE_TAIL = re.compile(
    r"(?:\s+(?:please|thanks|thank you|for me|to my list|on my list|to the list|to my todos|"
    r"on my todos|as a todo|as a task|to my todo list|on my todo list|todo|ok|okay|now))+$"
)


def clean_title(text: str) -> str:
    """The todo's own words: 'a todo to buy milk please' → 'buy milk'."""
    text = _TITLE_TAIL.sub("", " " + text.strip()).strip()
    text = _TITLE_LEAD.sub("", text).strip()
    return text


def _ordinal(text: str) -> int | None:
    m = _ORDINAL.match(text.strip())
    return _ORDINALS[m["n"]] if m else None


def _target(x: str) -> Intent:
    """A completion's object: a position ('the second one') or a title ('buy milk')."""
    x = x.strip()
    x = re.sub(r"^(?:my|the)\s+(?:todo|task|item)\s+", "", x)
    n = _ordinal(x)
    if n is not None:
        return Intent(Kind.COMPLETE_TODO, ordinal=n)
    return Intent(Kind.COMPLETE_TODO, title=clean_title(x))


def _day(text: str) -> str:
    for pattern, day in _DAYS:
        if re.search(rf"\b(?:{pattern})\b", text):
            return day
    return "today"


def parse(text: str) -> Intent:
    """The caller's intent. UNKNOWN when nothing fits; the caller then hears the options."""
    raw = normalize(text)
    plain = _strip_polite(raw)
    for kind, phrases in _EXACT.items():
        if raw in phrases or plain in phrases:
            return Intent(kind)
    if not plain:
        return Intent(Kind.UNKNOWN) if not raw else Intent(Kind.YES)  # "please" alone

    if _REPEAT.search(plain):
        return Intent(Kind.REPEAT)
    for pattern in _ADD:
        if m := pattern.search(plain):
            return Intent(Kind.ADD_TODO, title=clean_title(m["title"] or ""))
    for pattern in _COMPLETE:
        if m := pattern.search(plain):
            return _target(m["x"])
    if _CHANGE_PIN.search(plain):
        return Intent(Kind.CHANGE_PIN)
    for pattern in _UNSUPPORTED:
        if pattern.search(plain):
            return Intent(Kind.UNSUPPORTED)
    if _TRANSFER.search(plain):
        return Intent(Kind.TRANSFER)
    if _GOODBYE.search(plain):
        return Intent(Kind.GOODBYE)
    if _CANCEL.search(plain):
        return Intent(Kind.CANCEL)
    if m := _ADD_LOOSE.match(plain):
        return Intent(Kind.ADD_TODO, title=clean_title(m["title"]), tentative=True)
    if _CALENDAR.search(plain):
        return Intent(Kind.CALENDAR, day=_day(plain))
    if _TEAM.search(plain):
        m = _TEAM_NAME.search(plain)
        team = m["team"] if m and m["team"] not in ("whole", "entire") else ""
        return Intent(Kind.TEAM, team=team)
    if _LIST.search(plain):
        done = re.search(r"\b(?:done|completed|finished|closed)\b", plain)
        return Intent(Kind.LIST_TODOS, status="done" if done else "open")
    if _HELP.search(raw):
        return Intent(Kind.HELP)
    first = plain.split()[0]
    if first in ("yes", "yeah", "yep", "sure", "ok", "okay", "correct"):
        return Intent(Kind.YES)
    if first in ("no", "nope", "nah"):
        return Intent(Kind.NO)
    if re.search(r"\b(?:thanks|thank you)\b", plain):
        return Intent(Kind.THANKS)
    if re.match(r"^(?:hello|hi|hey|good (?:morning|afternoon|evening))\b", plain):
        return Intent(Kind.GREETING)
    return Intent(Kind.UNKNOWN)


# Matching a spoken title against the real ones --------------------------------------------------

_STOPWORDS = {"the", "a", "an", "my", "to", "of", "for", "on", "and", "todo", "one", "that"}


def _words(text: str) -> list[str]:
    return [w for w in normalize(text).split() if w not in _STOPWORDS]


def title_score(spoken: str, title: str) -> float:
    """0..1: how well what the caller said names this title (word overlap, then spelling)."""
    said, real = _words(spoken), _words(title)
    if not said or not real:
        return 0.0
    shared = len(set(said) & set(real))
    overlap = shared / len(set(said))  # every word they said is in the title
    coverage = shared / len(set(real))  # ...and the title has few words beyond them
    spelling = SequenceMatcher(None, " ".join(said), " ".join(real)).ratio()  # misheard words
    return max(0.9 * spelling, 0.7 * overlap + 0.3 * coverage)


def best_match(spoken: str, titles: list[str]) -> tuple[int, float, bool]:
    """(index, score, clear): the likeliest title; `clear` when no other comes close."""
    if not titles:
        return -1, 0.0, False
    scores = [title_score(spoken, t) for t in titles]
    best = max(range(len(titles)), key=scores.__getitem__)
    runner_up = max((s for i, s in enumerate(scores) if i != best), default=0.0)
    return best, scores[best], scores[best] - runner_up >= 0.1
