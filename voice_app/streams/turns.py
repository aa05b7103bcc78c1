"""Who speaks when: the turn-taking state machine of one call.

Pure: the shell feeds `handle(event, now)` everything that happens, with the time it happened
(seconds, any monotonic origin), and carries out the commands it gets back, in order. No clock is
read and nothing is awaited here, so every rule below is a plain unit test.

The rules, in short:
* A caller turn ends on a final with `speech_final`, or on `utterance_end` after at least one
  final; finalized segments accumulate until then.
* Barge-in means the caller really talks over the assistant: words on an interim or final that
  are at least `barge_in_min_words` long (or one of `interrupt_words`, like "stop"), or a DTMF
  key. Backchannels ("mm-hm", "okay", "yeah") and noises never cut the assistant off; a
  `speech_started` only pauses the outbound audio until words arrive, or resumes it.
* The first `greeting_guard_s` of the greeting can't be interrupted by speech (callers say
  "hello?" as the line connects); a goodbye can't be interrupted at all. A transfer line plays to
  its last mark before the transfer starts; if the caller talks over it (words, not noise), the
  transfer is called off (`CancelTransfer`) and their words become the next turn.
* What the caller heard of an interrupted reply is the text of the marks Twilio echoed before the
  clear. Twilio echoes every pending mark on a clear, so those echoes are ignored.
* Keys are collected until '#' or a `digit_gap_s` pause, then go to the agent as text; "0" alone
  asks for a person.
* Silence for `idle_reprompt_s` earns one reprompt, a second silence a goodbye; so does reaching
  `max_call_s`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from voice_app.speech.base import TranscriptEvent


class Phase(StrEnum):
    LISTENING = "listening"  # waiting for (or hearing) the caller
    THINKING = "thinking"  # a caller turn went to the agent; no reply yet
    SPEAKING = "speaking"  # a reply is being sent or is still playing
    ENDING = "ending"  # goodbye or transfer decided: finish that line, then act
    ENDED = "ended"  # Hangup or Transfer issued; nothing else happens


ReplyKind = Literal["greeting", "answer", "reprompt", "goodbye", "transfer"]
EndAction = Literal["hangup", "transfer"]


# --- Events: what happened -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The stream started; the call clock and the idle timer start now."""


@dataclass(frozen=True, slots=True)
class ReplyStarted:
    """The assistant began a reply. Answers come from the agent; the other kinds are lines the
    shell says when asked (greeting at the start, `Reprompt`, `SayGoodbyeAndHangup`,
    `RequestAgent`). Goodbye and transfer lines are always uninterruptible."""

    kind: ReplyKind = "answer"
    uninterruptible: bool = False


@dataclass(frozen=True, slots=True)
class AudioSent:
    """Reply audio went to Twilio, followed by mark `mark`; `text` is what that audio says."""

    mark: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    """Twilio echoed a mark: the audio before it played, or was cleared."""

    name: str


@dataclass(frozen=True, slots=True)
class ReplyFinished:
    """All of the reply's audio has been sent (the agent is done and the TTS flushed)."""


@dataclass(frozen=True, slots=True)
class AgentEndsCall:
    """The agent decided to hang up or hand over; the reply in progress, if any, is its last."""

    action: EndAction
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DtmfPressed:
    digit: str


@dataclass(frozen=True, slots=True)
class Tick:
    """Nothing happened; lets the timers run."""


Event = (
    CallStarted
    | ReplyStarted
    | AudioSent
    | MarkEchoed
    | ReplyFinished
    | AgentEndsCall
    | DtmfPressed
    | Tick
    | TranscriptEvent
)


# --- Commands: what the shell should do ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTurn:
    """Send the caller's words to the agent."""

    text: str


@dataclass(frozen=True, slots=True)
class UserDigits:
    """Send keys the caller pressed to the agent (as text, '#' terminator removed)."""

    text: str


@dataclass(frozen=True, slots=True)
class CancelReply:
    """Cancel the agent's work on the current turn, and drop its pending speech."""


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Send `clear` to Twilio and Clear to the TTS; ignore TTS audio until it confirms."""


@dataclass(frozen=True, slots=True)
class PauseOutbound:
    """Stop sending reply audio to Twilio for now (keep it queued). Always followed by a
    `ResumeOutbound`."""


@dataclass(frozen=True, slots=True)
class ResumeOutbound:
    """Send queued reply audio again."""


@dataclass(frozen=True, slots=True)
class RecordHeard:
    """The reply was interrupted: the caller heard only `text` of it."""

    text: str


@dataclass(frozen=True, slots=True)
class Reprompt:
    """The caller has been silent: say a short prompt (as a `reprompt` reply)."""


@dataclass(frozen=True, slots=True)
class SayGoodbyeAndHangup:
    """Say the goodbye line (as a `goodbye` reply); the hang-up follows once it has played."""

    reason: str


@dataclass(frozen=True, slots=True)
class RequestAgent:
    """Say the transfer line (as a `transfer` reply); the transfer follows once it has played."""

    reason: str


@dataclass(frozen=True, slots=True)
class CancelTransfer:
    """The caller spoke over the transfer line: there will be no transfer."""


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str


@dataclass(frozen=True, slots=True)
class Transfer:
    reason: str


Command = (
    StartTurn
    | UserDigits
    | CancelReply
    | ClearPlayback
    | PauseOutbound
    | ResumeOutbound
    | RecordHeard
    | Reprompt
    | SayGoodbyeAndHangup
    | RequestAgent
    | CancelTransfer
    | Hangup
    | Transfer
)


# --- Settings --------------------------------------------------------------------------------

# Said alone while the assistant talks, these mean "go on", not "stop".
BACKCHANNEL_WORDS = frozenset(
    {
        "mm", "mmm", "hm", "hmm", "mhm", "mmhm", "uh", "huh", "um", "uhm", "ah", "oh",
        "okay", "ok", "kay", "yeah", "yep", "yup", "yes", "ya", "right", "sure", "alright",
        "cool", "great", "fine", "good", "nice",
    }
)  # fmt: skip
# Short words that do mean "stop", so one is enough to barge in.
INTERRUPT_WORDS = frozenset(
    {
        "stop", "wait", "no", "cancel", "sorry", "pardon", "hello", "agent", "operator",
        "representative", "help",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TurnConfig:
    barge_in_min_words: int = 2
    greeting_guard_s: float = 1.0
    resume_after_s: float = 1.0  # resume paused audio if the sound never became words
    idle_reprompt_s: float = 8.0
    max_call_s: float = 30 * 60.0
    utterance_timeout_s: float = 3.0  # close an utterance the recogniser never closed
    digit_gap_s: float = 1.5  # a key entry ends after this pause (or on '#')
    ending_timeout_s: float = 20.0  # act anyway if the last line never finishes playing
    backchannel_words: frozenset[str] = BACKCHANNEL_WORDS
    interrupt_words: frozenset[str] = INTERRUPT_WORDS


_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """Lower-case words; 'mm-hm' is two words, 'don't' is one."""
    return _WORD.findall(text.lower())


# --- The machine -----------------------------------------------------------------------------


@dataclass
class _Reply:
    kind: ReplyKind
    uninterruptible: bool
    started_at: float
    marks: list[tuple[str, str]] = field(default_factory=list)  # (name, text) as sent
    echoed: int = 0  # marks[:echoed] have played (Twilio echoes in order)
    finished: bool = False

    @property
    def done(self) -> bool:
        return self.finished and self.echoed == len(self.marks)

    def heard(self) -> str:
        return " ".join(text.strip() for _, text in self.marks[: self.echoed] if text.strip())

    def echo(self, name: str) -> None:
        for i in range(self.echoed, len(self.marks)):
            if self.marks[i][0] == name:
                self.echoed = i + 1
                return


@dataclass
class _Utterance:
    """What the caller is saying right now, until their turn ends."""

    finals: list[str] = field(default_factory=list)
    interim: str = ""
    guarded: bool = False  # began within the greeting guard: it never barges in
    last_at: float = 0.0  # when the recogniser last said anything about it

    def text(self, with_interim: bool = False) -> str:
        parts = [*self.finals, self.interim] if with_interim else self.finals
        return " ".join(p for p in parts if p)


class TurnTaker:
    def __init__(self, config: TurnConfig | None = None) -> None:
        self.config = config or TurnConfig()
        self.phase = Phase.LISTENING
        self.paused = False  # a PauseOutbound is waiting for its ResumeOutbound
        self._reply: _Reply | None = None
        self._utterance: _Utterance | None = None
        self._cleared: set[str] = set()  # marks whose echo means "discarded", not "played"
        self._call_started: float | None = None
        self._idle_at: float | None = None  # when silence earns a reprompt or a goodbye
        self._idle_strikes = 0
        self._paused_at = 0.0
        self._digits = ""
        self._digit_at = 0.0
        self._ending: tuple[EndAction, str] = ("hangup", "")
        self._ending_by = 0.0

    @property
    def reply_kind(self) -> ReplyKind | None:
        return self._reply.kind if self._reply is not None else None

    def handle(self, event: Event, now: float) -> list[Command]:
        if self.phase is Phase.ENDED:
            return []
        if self._call_started is None:
            self._call_started = now
        out = self._timers(now)  # deadlines that passed before this event come first
        if self.phase is Phase.ENDED:
            return out
        match event:
            case TranscriptEvent():
                out += self._on_transcript(event, now)
            case DtmfPressed(digit):
                out += self._on_digit(digit, now)
            case ReplyStarted(kind, uninterruptible):
                out += self._on_reply_started(kind, uninterruptible, now)
            case AudioSent(mark, text):
                if self._reply is not None:
                    self._reply.marks.append((mark, text))
            case MarkEchoed(name):
                out += self._on_mark(name, now)
            case ReplyFinished():
                out += self._on_reply_finished(now)
            case AgentEndsCall(action, reason):
                out += self._on_agent_ends(action, reason, now)
            case CallStarted():
                self._call_started = now
                if self.phase is Phase.LISTENING:
                    self._idle_at = now + self.config.idle_reprompt_s
            case Tick():
                pass
        return out

    # --- caller speech ---

    def _on_transcript(self, ev: TranscriptEvent, now: float) -> list[Command]:
        if self.phase is Phase.ENDING and not self._transfer_line_playing():
            return []  # nothing the caller says changes a goodbye
        self._touch(now)
        opened = self._utterance is None
        utt = self._utterance = self._utterance or _Utterance(guarded=self._greeting_guarded(now))
        utt.last_at = now
        if ev.kind == "speech_started":
            if self.phase is Phase.ENDING:
                return []  # the transfer line keeps playing until words say otherwise
            if opened and not utt.guarded and self._interruptible(now) and not self.paused:
                self.paused, self._paused_at = True, now
                return [PauseOutbound()]
            return []
        if ev.kind == "interim":
            utt.interim = ev.text.strip()
            return self._maybe_barge_in(now)
        if ev.kind == "final":
            if ev.text.strip():
                utt.finals.append(ev.text.strip())
            utt.interim = ""
            out = self._maybe_barge_in(now)
            return out + self._end_utterance(now) if ev.speech_final else out
        # utterance_end: a gap after the last finalized word
        return self._end_utterance(now)

    def _maybe_barge_in(self, now: float) -> list[Command]:
        utt = self._utterance
        if utt is None or utt.guarded:
            return []
        if self.phase is Phase.ENDING:
            if self._is_interruption(utt.text(with_interim=True)):
                return [CancelTransfer(), *self._barge_in(now)]
            return []
        if self.phase is Phase.SPEAKING and not self._interruptible(now):
            return []
        if self.phase in (Phase.SPEAKING, Phase.THINKING) and self._is_interruption(
            utt.text(with_interim=True)
        ):
            return self._barge_in(now)
        return []

    def _end_utterance(self, now: float) -> list[Command]:
        utt, self._utterance = self._utterance, None
        text = utt.text() if utt else ""
        out = self._resume()
        if not text or self.phase is Phase.ENDING:
            return out  # noise, or a backchannel over the transfer line: it goes ahead
        if self.phase is Phase.SPEAKING:
            # Not a barge-in. Only if the reply has all been sent (we are in the last few
            # hundred ms of playback) is this the caller answering it; otherwise drop it.
            if self._reply is None or not self._reply.finished:
                return out
            self._reply = None
        elif self.phase is Phase.THINKING:
            if self._is_backchannel(text):
                return out
            out.append(CancelReply())  # the caller wasn't done: answer the newer words
        return [*out, *self._start_turn(StartTurn(text))]

    def _is_backchannel(self, text: str) -> bool:
        ws = words(text)
        return bool(ws) and all(w in self.config.backchannel_words for w in ws)

    def _is_interruption(self, text: str) -> bool:
        ws = words(text)
        if not ws or self._is_backchannel(text):
            return False
        return len(ws) >= self.config.barge_in_min_words or any(
            w in self.config.interrupt_words for w in ws
        )

    # --- keys ---

    def _on_digit(self, digit: str, now: float) -> list[Command]:
        if self.phase is Phase.ENDING:
            return []
        self._touch(now)
        self._digits += digit
        self._digit_at = now
        out: list[Command] = []
        # A key is deliberate, so it interrupts even the greeting's first second.
        if self.phase is Phase.THINKING or (
            self.phase is Phase.SPEAKING
            and self._reply is not None
            and not self._reply.uninterruptible
        ):
            out += self._barge_in(now)
        return out + self._flush_digits(now)

    def _flush_digits(self, now: float) -> list[Command]:
        complete = self._digits.endswith("#") or now - self._digit_at >= self.config.digit_gap_s
        if not self._digits or not complete or self.phase is not Phase.LISTENING:
            return []
        entry, self._digits = self._digits.rstrip("#"), ""
        if entry == "0":
            return self._start_ending("transfer", "caller pressed 0", now, RequestAgent)
        return self._start_turn(UserDigits(entry)) if entry else []

    # --- the assistant's replies ---

    def _on_reply_started(
        self, kind: ReplyKind, uninterruptible: bool, now: float
    ) -> list[Command]:
        if (kind == "answer" and self.phase is not Phase.THINKING) or (
            kind in ("greeting", "reprompt") and self.phase is not Phase.LISTENING
        ):
            return []  # too late: the turn was cancelled, or the caller spoke first
        out = self._resume()
        last_line = kind in ("goodbye", "transfer")
        # A goodbye always plays out; a transfer line can be called off by the caller's words.
        self._reply = _Reply(kind, uninterruptible or kind == "goodbye", started_at=now)
        self._idle_at = None
        if not last_line:
            self.phase = Phase.SPEAKING
        elif self.phase is not Phase.ENDING:  # the shell said goodbye on its own account
            self._start_ending("hangup" if kind == "goodbye" else "transfer", kind, now, None)
        return out

    def _on_mark(self, name: str, now: float) -> list[Command]:
        if name in self._cleared:
            self._cleared.discard(name)  # echoed because of our clear: not heard
            return []
        if self._reply is None:
            return []
        self._reply.echo(name)
        return self._complete_if_done(now)

    def _on_reply_finished(self, now: float) -> list[Command]:
        if self._reply is not None:
            self._reply.finished = True
            return self._complete_if_done(now)
        if self.phase is Phase.THINKING:  # the agent had nothing to say
            self.phase = Phase.LISTENING
            self._idle_at = now + self.config.idle_reprompt_s
            return self._flush_digits(now)
        return []

    def _complete_if_done(self, now: float) -> list[Command]:
        if self._reply is None or not self._reply.done:
            return []
        self._reply = None
        out = self._resume()
        if self.phase is Phase.ENDING:
            return out + self._finish()
        self.phase = Phase.LISTENING
        self._idle_at = now + self.config.idle_reprompt_s
        return out + self._flush_digits(now)

    def _on_agent_ends(self, action: EndAction, reason: str, now: float) -> list[Command]:
        if self.phase is Phase.ENDING:
            return []
        if self.phase is Phase.SPEAKING and self._reply is not None:
            # The reply under way is the last line: it plays out, then the call ends.
            self._reply.uninterruptible = action == "hangup"  # words may call a transfer off
            return self._resume() + self._start_ending(action, reason, now, None)
        say = SayGoodbyeAndHangup if action == "hangup" else RequestAgent
        return self._start_ending(action, reason, now, say)

    # --- shared moves ---

    def _transfer_line_playing(self) -> bool:
        return (
            self.phase is Phase.ENDING
            and self._ending[0] == "transfer"
            and self._reply is not None
            and not self._reply.uninterruptible
        )

    def _barge_in(self, now: float) -> list[Command]:
        out: list[Command] = [CancelReply()]
        reply, self._reply = self._reply, None
        if self.phase in (Phase.SPEAKING, Phase.ENDING) and reply is not None:
            self._cleared.update(name for name, _ in reply.marks[reply.echoed :])
            out = [ClearPlayback(), CancelReply(), RecordHeard(reply.heard())]
        self.phase = Phase.LISTENING
        self._idle_at = now + self.config.idle_reprompt_s
        return out + self._resume()

    def _start_turn(self, command: StartTurn | UserDigits) -> list[Command]:
        self.phase = Phase.THINKING
        self._idle_at = None
        self._idle_strikes = 0
        return [command]

    def _start_ending(
        self,
        action: EndAction,
        reason: str,
        now: float,
        say: type[SayGoodbyeAndHangup] | type[RequestAgent] | None,
    ) -> list[Command]:
        self.phase = Phase.ENDING
        self._ending = (action, reason)
        self._ending_by = now + self.config.ending_timeout_s
        self._idle_at = None
        self._utterance = None
        self._digits = ""
        return [say(reason)] if say else []

    def _finish(self) -> list[Command]:
        self.phase = Phase.ENDED
        action, reason = self._ending
        return [Hangup(reason) if action == "hangup" else Transfer(reason)]

    def _resume(self) -> list[Command]:
        if not self.paused:
            return []
        self.paused = False
        return [ResumeOutbound()]

    def _touch(self, now: float) -> None:
        """The caller did something: restart the silence timer."""
        if self._idle_at is not None:
            self._idle_at = now + self.config.idle_reprompt_s

    def _interruptible(self, now: float) -> bool:
        reply = self._reply
        return (
            self.phase is Phase.SPEAKING
            and reply is not None
            and not reply.uninterruptible
            and not self._greeting_guarded(now)
        )

    def _greeting_guarded(self, now: float) -> bool:
        reply = self._reply
        return (
            reply is not None
            and reply.kind == "greeting"
            and now < reply.started_at + self.config.greeting_guard_s
        )

    # --- timers ---

    def _timers(self, now: float) -> list[Command]:
        cfg = self.config
        if self.phase is Phase.ENDING:
            return self._finish() if now >= self._ending_by else []
        started = self._call_started
        if started is not None and now - started >= cfg.max_call_s:
            out = self._barge_in(now) if self.phase in (Phase.SPEAKING, Phase.THINKING) else []
            reason = "max call length"
            return out + self._start_ending("hangup", reason, now, SayGoodbyeAndHangup)
        out = self._flush_digits(now)
        utt = self._utterance
        if utt is not None and now - utt.last_at >= cfg.utterance_timeout_s:
            out += self._end_utterance(now)  # no close came: a noise, or a lost UtteranceEnd
        if self.paused and now - self._paused_at >= cfg.resume_after_s:
            out += self._resume()
        if (
            self.phase is Phase.LISTENING
            and self._idle_at is not None
            and now >= self._idle_at
            and self._utterance is None
            and not self._digits
        ):
            if self._idle_strikes == 0:
                self._idle_strikes = 1
                self._idle_at = now + cfg.idle_reprompt_s
                out.append(Reprompt())
            else:
                out += self._start_ending("hangup", "caller silent", now, SayGoodbyeAndHangup)
        return out
