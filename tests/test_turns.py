"""The TurnTaker: every phase against every event, then the rules one by one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice_app.speech.base import TranscriptEvent
from voice_app.streams.turns import (
    AgentEndsCall,
    AudioSent,
    CallStarted,
    CancelReply,
    ClearPlayback,
    Command,
    DtmfPressed,
    Event,
    Hangup,
    MarkEchoed,
    PauseOutbound,
    Phase,
    RecordHeard,
    ReplyFinished,
    ReplyKind,
    ReplyStarted,
    Reprompt,
    RequestAgent,
    ResumeOutbound,
    SayGoodbyeAndHangup,
    StartTurn,
    Tick,
    Transfer,
    TurnConfig,
    TurnTaker,
    UserDigits,
    words,
)

# Transcript events, as the recogniser reports them.
SPEECH = TranscriptEvent("speech_started")
END = TranscriptEvent("utterance_end")


def interim(text: str) -> TranscriptEvent:
    return TranscriptEvent("interim", text)


def final(text: str, speech_final: bool = False) -> TranscriptEvent:
    return TranscriptEvent("final", text, speech_final=speech_final)


def said(text: str) -> TranscriptEvent:
    """A final that also ends the utterance."""
    return final(text, speech_final=True)


BARGE: list[Command] = [ClearPlayback(), CancelReply()]


class Call:
    """A TurnTaker with a hand on the clock."""

    def __init__(self, **config: Any) -> None:
        self.tt = TurnTaker(TurnConfig(**config))
        self.now = 0.0
        self.log: list[Command] = []

    @property
    def phase(self) -> Phase:
        return self.tt.phase

    def __call__(self, *events: Event, at: float | None = None) -> list[Command]:
        if at is not None:
            assert at >= self.now
            self.now = at
        out: list[Command] = []
        for event in events:
            out += self.tt.handle(event, self.now)
        self.log += out
        return out

    def later(self, seconds: float, *events: Event) -> list[Command]:
        return self(*events, at=self.now + seconds)

    def reply(self, kind: ReplyKind, *lines: str, uninterruptible: bool = False) -> list[Command]:
        """Start a reply and send one mark per line (not finished, nothing echoed)."""
        out = self(ReplyStarted(kind, uninterruptible))
        for i, line in enumerate(lines):
            out += self(AudioSent(f"{kind}-{i}", line))
        return out

    def play_out(self, kind: ReplyKind, count: int) -> list[Command]:
        """Finish the reply and echo all its marks."""
        out = self(ReplyFinished())
        for i in range(count):
            out += self(MarkEchoed(f"{kind}-{i}"))
        return out


# --- getting a call into each phase ---


def listening() -> Call:
    call = Call()
    call(CallStarted())
    call.reply("greeting", "Hi, this is Ava.", "How can I help?")
    assert (
        call.later(3.0, ReplyFinished(), MarkEchoed("greeting-0"), MarkEchoed("greeting-1")) == []
    )
    assert call.phase is Phase.LISTENING
    return call


def thinking() -> Call:
    call = listening()
    assert call.later(1.0, SPEECH, interim("add milk"), said("Add milk.")) == [
        StartTurn("Add milk.")
    ]
    assert call.phase is Phase.THINKING
    return call


def speaking() -> Call:
    """An answer with its first sentence heard and its second still playing."""
    call = thinking()
    call.later(1.0)
    assert call.reply("answer", "I added milk.", "Anything else?") == []
    assert call.later(0.5, MarkEchoed("answer-0")) == []
    assert call.phase is Phase.SPEAKING
    return call


def ending() -> Call:
    call = listening()
    assert call.later(1.0, DtmfPressed("0"), DtmfPressed("#")) == [RequestAgent("caller pressed 0")]
    assert call.phase is Phase.ENDING
    return call


def ended() -> Call:
    call = ending()
    call.reply("transfer", "Connecting you now.")
    assert call.later(2.0, ReplyFinished(), MarkEchoed("transfer-0")) == [
        Transfer("caller pressed 0")
    ]
    assert call.phase is Phase.ENDED
    return call


PHASES: dict[Phase, Callable[[], Call]] = {
    Phase.LISTENING: listening,
    Phase.THINKING: thinking,
    Phase.SPEAKING: speaking,
    Phase.ENDING: ending,
    Phase.ENDED: ended,
}

EVENTS: dict[str, Event] = {
    "call_started": CallStarted(),
    "answer_started": ReplyStarted("answer"),
    "reprompt_started": ReplyStarted("reprompt"),
    "goodbye_started": ReplyStarted("goodbye"),
    "audio_sent": AudioSent("x", "words"),
    "unknown_mark": MarkEchoed("nope"),
    "reply_finished": ReplyFinished(),
    "agent_hangs_up": AgentEndsCall("hangup", "caller said goodbye"),
    "agent_transfers": AgentEndsCall("transfer", "wants a person"),
    "digit": DtmfPressed("5"),
    "tick": Tick(),
    "speech_started": SPEECH,
    "short_interim": interim("the"),
    "long_interim": interim("wait I meant"),
    "said": said("call bob"),
    "utterance_end": END,
}

L, T, S, E, X = Phase.LISTENING, Phase.THINKING, Phase.SPEAKING, Phase.ENDING, Phase.ENDED
HEARD = RecordHeard("I added milk.")
NOTHING: list[Command] = []

# (phase, event) -> (commands, phase after). Anything missing here is a test failure.
TABLE: dict[tuple[Phase, str], tuple[list[Command], Phase]] = {
    # Listening: only the caller's words, and lines the shell starts, move it.
    (L, "call_started"): (NOTHING, L),
    (L, "answer_started"): (NOTHING, L),  # late, from a cancelled turn
    (L, "reprompt_started"): (NOTHING, S),
    (L, "goodbye_started"): (NOTHING, E),
    (L, "audio_sent"): (NOTHING, L),
    (L, "unknown_mark"): (NOTHING, L),
    (L, "reply_finished"): (NOTHING, L),
    (L, "agent_hangs_up"): ([SayGoodbyeAndHangup("caller said goodbye")], E),
    (L, "agent_transfers"): ([RequestAgent("wants a person")], E),
    (L, "digit"): (NOTHING, L),  # waits for more keys
    (L, "tick"): (NOTHING, L),
    (L, "speech_started"): (NOTHING, L),
    (L, "short_interim"): (NOTHING, L),
    (L, "long_interim"): (NOTHING, L),
    (L, "said"): ([StartTurn("call bob")], T),
    (L, "utterance_end"): (NOTHING, L),
    # Thinking: new words from the caller replace the turn in flight.
    (T, "call_started"): (NOTHING, T),
    (T, "answer_started"): (NOTHING, S),
    (T, "reprompt_started"): (NOTHING, T),  # the caller spoke first
    (T, "goodbye_started"): (NOTHING, E),
    (T, "audio_sent"): (NOTHING, T),
    (T, "unknown_mark"): (NOTHING, T),
    (T, "reply_finished"): (NOTHING, L),  # the agent had nothing to say
    (T, "agent_hangs_up"): ([SayGoodbyeAndHangup("caller said goodbye")], E),
    (T, "agent_transfers"): ([RequestAgent("wants a person")], E),
    (T, "digit"): ([CancelReply()], L),
    (T, "tick"): (NOTHING, T),
    (T, "speech_started"): (NOTHING, T),
    (T, "short_interim"): (NOTHING, T),
    (T, "long_interim"): ([CancelReply()], L),
    (T, "said"): ([CancelReply(), StartTurn("call bob")], T),
    (T, "utterance_end"): (NOTHING, T),
    # Speaking: barge-in clears what is queued and records what was heard.
    (S, "call_started"): (NOTHING, S),
    (S, "answer_started"): (NOTHING, S),
    (S, "reprompt_started"): (NOTHING, S),
    (S, "goodbye_started"): (NOTHING, E),
    (S, "audio_sent"): (NOTHING, S),
    (S, "unknown_mark"): (NOTHING, S),
    (S, "reply_finished"): (NOTHING, S),  # "Anything else?" is still playing
    (S, "agent_hangs_up"): (NOTHING, E),  # this reply is the last line
    (S, "agent_transfers"): (NOTHING, E),
    (S, "digit"): ([*BARGE, HEARD], L),
    (S, "tick"): (NOTHING, S),
    (S, "speech_started"): ([PauseOutbound()], S),
    (S, "short_interim"): (NOTHING, S),
    (S, "long_interim"): ([*BARGE, HEARD], L),
    (S, "said"): ([*BARGE, HEARD, StartTurn("call bob")], T),
    (S, "utterance_end"): (NOTHING, S),
    # Ending: only the last line's own events matter.
    **{(E, name): (NOTHING, E) for name in EVENTS},
    # Ended: nothing at all.
    **{(X, name): (NOTHING, X) for name in EVENTS},
}


@pytest.mark.parametrize(("phase", "event"), [(p, e) for p in PHASES for e in EVENTS])
def test_every_phase_against_every_event(phase: Phase, event: str) -> None:
    call = PHASES[phase]()
    commands, after = TABLE[phase, event]
    assert call.later(0.1, EVENTS[event]) == commands
    assert call.phase is after


def test_the_table_is_complete() -> None:
    assert set(TABLE) == {(p, e) for p in PHASES for e in EVENTS}


# --- turns end on speech_final or utterance_end, never on a bare final ---


def test_finals_accumulate_until_speech_final() -> None:
    call = listening()
    assert call(SPEECH, interim("I want"), final("I want to add")) == []
    assert call(interim("a todo"), final("a todo for")) == []
    assert call(said("Friday.")) == [StartTurn("I want to add a todo for Friday.")]


def test_utterance_end_after_a_final_ends_the_turn() -> None:
    call = listening()
    assert call(SPEECH, final("call my mother")) == []
    assert call.later(1.0, END) == [StartTurn("call my mother")]


def test_utterance_end_without_a_final_ends_nothing() -> None:
    call = listening()
    assert call(SPEECH, interim("um"), END) == []
    assert call.phase is Phase.LISTENING


def test_empty_speech_final_ends_nothing() -> None:
    call = listening()
    assert call(SPEECH, said(""), said("  ")) == []
    assert call.phase is Phase.LISTENING


def test_each_turn_starts_fresh() -> None:
    call = listening()
    call(said("first"))
    call(ReplyFinished())  # the agent stayed silent
    assert call(said("second")) == [StartTurn("second")]


def test_a_backchannel_is_a_real_answer_when_listening() -> None:
    call = listening()
    assert call(said("Okay.")) == [StartTurn("Okay.")]


def test_an_utterance_the_recogniser_never_closes_times_out() -> None:
    call = listening()
    call(SPEECH, final("cancel my meeting"))
    assert call.later(2.9, Tick()) == []
    assert call.later(0.1, Tick()) == [StartTurn("cancel my meeting")]


# --- barge-in: only when the caller really talks over the assistant ---


def test_barge_in_pauses_on_speech_then_clears_on_two_words() -> None:
    call = speaking()
    assert call(SPEECH) == [PauseOutbound()]
    assert call.later(0.2, interim("no")) == [*BARGE, HEARD, ResumeOutbound()]
    assert call.phase is Phase.LISTENING
    assert call.later(0.5, said("no I said oat milk")) == [StartTurn("no I said oat milk")]


def test_barge_in_on_two_words() -> None:
    call = speaking()
    call(SPEECH)
    assert call.later(0.2, interim("actually")) == []
    assert call.later(0.2, interim("actually make")) == [*BARGE, HEARD, ResumeOutbound()]


def test_barge_in_counts_words_across_finalized_segments() -> None:
    call = speaking()
    call(SPEECH)
    assert call(final("actually")) == []
    assert call(interim("two")) == [*BARGE, HEARD, ResumeOutbound()]


def test_barge_in_without_speech_started_or_interims() -> None:
    # Engines without VAD events or interim results still interrupt on a final.
    call = speaking()
    assert call(final("hold on please")) == [*BARGE, HEARD]


@pytest.mark.parametrize("word", ["stop", "Wait!", "no", "Sorry?", "operator"])
def test_one_interrupt_word_is_enough(word: str) -> None:
    call = speaking()
    assert call(interim(word)) == [*BARGE, HEARD]


@pytest.mark.parametrize(
    "backchannel", ["mm-hm", "uh huh", "Okay.", "yeah", "Right.", "yeah yeah right", "mhm okay"]
)
def test_backchannels_never_cut_the_assistant_off(backchannel: str) -> None:
    call = speaking()
    assert call(SPEECH) == [PauseOutbound()]
    assert call.later(0.3, interim(backchannel)) == []
    assert call.later(0.3, said(backchannel)) == [ResumeOutbound()]
    assert call.phase is Phase.SPEAKING
    # The reply carries on and completes as if nothing happened.
    assert call.play_out("answer", 2) == []
    assert call.phase is Phase.LISTENING


def test_a_cough_pauses_briefly_then_resumes() -> None:
    call = speaking()
    assert call(SPEECH) == [PauseOutbound()]
    assert call.later(0.9, Tick()) == []
    assert call.later(0.1, Tick()) == [ResumeOutbound()]
    assert call.phase is Phase.SPEAKING
    assert call.later(1.0, Tick()) == []  # resumed once only


def test_noise_that_closes_resumes_at_once() -> None:
    call = speaking()
    call(SPEECH)
    assert call.later(0.3, END) == [ResumeOutbound()]


def test_a_single_ordinary_word_over_the_reply_is_dropped() -> None:
    call = speaking()
    call(SPEECH)
    assert call(interim("the")) == []
    assert call(said("the")) == [ResumeOutbound()]
    assert call.phase is Phase.SPEAKING
    call.play_out("answer", 2)
    assert call(said("add eggs")) == [StartTurn("add eggs")]  # no stale "the"


def test_pauses_once_per_utterance() -> None:
    call = speaking()
    assert call(SPEECH) == [PauseOutbound()]
    assert call.later(1.0, Tick()) == [ResumeOutbound()]
    assert call.later(0.1, SPEECH) == []  # same utterance, still open
    assert call(said("hm")) == []
    assert call.later(0.1, SPEECH) == [PauseOutbound()]


def test_min_words_is_configurable() -> None:
    call = Call(barge_in_min_words=3)
    call(CallStarted(), said("hi"))
    call.reply("answer", "Hello there.")
    assert call(interim("call bob")) == []
    assert call(interim("call bob now")) == [*BARGE, RecordHeard("")]


def test_custom_backchannels_and_interrupt_words() -> None:
    call = Call(backchannel_words=frozenset({"si"}), interrupt_words=frozenset({"basta"}))
    call(CallStarted(), said("hola"))
    call.reply("answer", "Hola.")
    assert call(interim("si si")) == []
    assert call(interim("basta")) == [*BARGE, RecordHeard("")]


# --- what the caller heard ---


def test_heard_is_the_marks_echoed_before_the_clear() -> None:
    call = thinking()
    call.reply("answer", "One.", "Two.", "Three.")
    call(MarkEchoed("answer-0"), MarkEchoed("answer-1"))
    assert call(interim("wait stop")) == [*BARGE, RecordHeard("One. Two.")]
    # Twilio now echoes the pending mark because of the clear: it was not heard.
    assert call(MarkEchoed("answer-2")) == []
    assert call.phase is Phase.LISTENING


def test_heard_is_empty_if_nothing_played_yet() -> None:
    call = thinking()
    call.reply("answer", "One.")
    assert call(DtmfPressed("1")) == [*BARGE, RecordHeard("")]


def test_an_echo_means_everything_before_it_played() -> None:
    call = thinking()
    call.reply("answer", "One.", "Two.", "Three.")
    call(MarkEchoed("answer-1"))  # Twilio plays in order
    assert call(interim("hang on")) == [*BARGE, RecordHeard("One. Two.")]


def test_marks_with_empty_text_add_nothing() -> None:
    call = thinking()
    call(ReplyStarted(), AudioSent("a", "Sure."), AudioSent("b", ""), AudioSent("c", " Done. "))
    call(MarkEchoed("a"), MarkEchoed("b"), MarkEchoed("c"))
    assert call(interim("one more")) == [*BARGE, RecordHeard("Sure. Done.")]


def test_cleared_mark_names_dont_leak_into_the_next_reply() -> None:
    call = thinking()
    call.reply("answer", "One.", "Two.")
    call(interim("stop that"))
    call(said("stop that"))
    # The next reply reuses a name before Twilio's echoes of the cleared marks arrive.
    call.reply("answer", "Stopped.")
    call(MarkEchoed("answer-0"), MarkEchoed("answer-1"))  # the cleared ones: not heard
    assert call.phase is Phase.SPEAKING
    call(MarkEchoed("answer-0"))  # now the new reply's own mark: heard
    assert call(interim("never mind")) == [*BARGE, RecordHeard("Stopped.")]


def test_a_reply_ends_only_after_finished_and_every_mark_echoed() -> None:
    call = thinking()
    call.reply("answer", "One.", "Two.")
    call(MarkEchoed("answer-0"), MarkEchoed("answer-1"))
    assert call.phase is Phase.SPEAKING  # more audio may still come
    call(AudioSent("answer-2", "Three."), ReplyFinished())
    assert call.phase is Phase.SPEAKING  # "Three." still playing
    call(MarkEchoed("answer-2"))
    assert call.phase is Phase.LISTENING


def test_a_reply_without_audio_ends_when_finished() -> None:
    call = thinking()
    call(ReplyStarted(), ReplyFinished())
    assert call.phase is Phase.LISTENING


def test_answer_in_the_last_moment_of_playback_is_a_turn() -> None:
    # All audio is sent; the caller answers over the last few hundred ms still playing.
    call = speaking()
    call(ReplyFinished())
    call(SPEECH)
    assert call.later(0.2, said("yes")) == [ResumeOutbound(), StartTurn("yes")]
    assert call.phase is Phase.THINKING
    assert call(MarkEchoed("answer-1")) == []  # the old reply's echo changes nothing
    assert call.phase is Phase.THINKING


def test_words_that_straddle_the_end_of_a_reply_become_a_turn() -> None:
    call = speaking()
    call(final("and"))  # one word: no barge-in
    call.play_out("answer", 2)
    assert call.phase is Phase.LISTENING
    assert call(said("also eggs")) == [StartTurn("and also eggs")]


def test_late_answer_start_after_barge_in_is_ignored() -> None:
    call = speaking()
    call(interim("no wait"))
    assert call(ReplyStarted("answer"), AudioSent("late", "x")) == []
    assert call.phase is Phase.LISTENING


# --- the greeting guard ---


def greeting() -> Call:
    call = Call()
    call(CallStarted())
    call.reply("greeting", "Hi, this is Ava, your assistant.", "How can I help?")
    return call


def test_no_barge_in_during_the_first_second_of_the_greeting() -> None:
    call = greeting()
    assert call.later(0.3, SPEECH) == []  # no pause either
    assert call.later(0.4, interim("hello hello")) == []
    # The transcript of that "hello" arrives late; it still belongs to the guarded utterance.
    assert call.later(0.6, said("Hello? Hello?")) == []
    assert call.phase is Phase.SPEAKING


def test_speech_after_the_guard_interrupts_the_greeting() -> None:
    call = greeting()
    assert call.later(1.0, SPEECH) == [PauseOutbound()]
    assert call.later(0.3, interim("I need help")) == [*BARGE, RecordHeard(""), ResumeOutbound()]


def test_guard_length_is_configurable() -> None:
    call = Call(greeting_guard_s=0.0)
    call(CallStarted())
    call.reply("greeting", "Hi.")
    assert call(interim("hi there")) == [*BARGE, RecordHeard("")]


def test_a_key_interrupts_even_the_guarded_greeting() -> None:
    call = greeting()
    assert call.later(0.2, DtmfPressed("0")) == [*BARGE, RecordHeard("")]


def test_the_guard_is_only_for_the_greeting() -> None:
    call = listening()
    assert call.later(8.0, Tick()) == [Reprompt()]
    call(ReplyStarted("reprompt"))  # interruptible from its first moment
    assert call.later(0.1, interim("yes I'm here")) == [*BARGE, RecordHeard("")]


# --- uninterruptible lines ---


def test_an_uninterruptible_reply_plays_to_the_end() -> None:
    call = thinking()
    call.reply("answer", "Please listen carefully.", uninterruptible=True)
    assert call(SPEECH, interim("no no no stop"), final("no no no stop")) == []
    assert call(DtmfPressed("3")) == []
    assert call.phase is Phase.SPEAKING
    # The key press waits for the reply to end, then goes to the agent.
    assert call.play_out("answer", 1) == []
    assert call.later(1.5, Tick()) == [UserDigits("3")]


def test_goodbye_plays_to_its_last_mark_before_hanging_up() -> None:
    call = listening()
    call.later(8.0, Tick())  # reprompt
    call.reply("reprompt", "Are you still there?")
    call.play_out("reprompt", 1)
    assert call.later(8.0, Tick()) == [SayGoodbyeAndHangup("caller silent")]
    call.reply("goodbye", "Goodbye.", "Call again soon.")
    assert call(SPEECH, interim("wait wait"), said("wait wait"), DtmfPressed("1")) == []
    assert call(ReplyFinished(), MarkEchoed("goodbye-0")) == []
    assert call.phase is Phase.ENDING
    assert call(MarkEchoed("goodbye-1")) == [Hangup("caller silent")]
    assert call.phase is Phase.ENDED
    assert call(Tick(), said("hello"), MarkEchoed("goodbye-1")) == []


def test_transfer_line_plays_to_its_last_mark_before_transferring() -> None:
    call = ending()
    call.reply("transfer", "Connecting you to a colleague.")
    assert call(interim("okay")) == []  # a backchannel does not call the transfer off
    assert call(MarkEchoed("transfer-0")) == []  # played, but more may still come
    assert call(ReplyFinished()) == [Transfer("caller pressed 0")]


def test_shell_started_goodbye_line_ends_the_call() -> None:
    call = listening()
    call.reply("goodbye", "Goodbye.")
    assert call.phase is Phase.ENDING
    assert call.play_out("goodbye", 1) == [Hangup("goodbye")]


def test_agent_ending_makes_the_current_reply_its_last_line() -> None:
    call = speaking()
    assert call(SPEECH) == [PauseOutbound()]
    assert call(AgentEndsCall("hangup", "caller said goodbye")) == [ResumeOutbound()]
    assert call(interim("oh one more thing")) == []  # uninterruptible now
    assert call.play_out("answer", 2) == [Hangup("caller said goodbye")]


def test_agent_transfer_without_words_asks_for_the_transfer_line() -> None:
    call = thinking()
    assert call(ReplyFinished()) == []  # the shell reports an empty reply first
    assert call(AgentEndsCall("transfer", "billing question")) == [RequestAgent("billing question")]
    call.reply("transfer", "One moment.")
    assert call.play_out("transfer", 1) == [Transfer("billing question")]


def test_a_line_that_never_finishes_still_ends_the_call() -> None:
    call = ending()
    call.reply("transfer", "Connecting.")
    assert call.later(19.0, Tick()) == []
    assert call.later(1.0, Tick()) == [Transfer("caller pressed 0")]
    assert call.phase is Phase.ENDED


# --- keys ---


def test_digits_are_collected_until_a_pause() -> None:
    call = listening()
    assert call(DtmfPressed("4")) == []
    assert call.later(1.0, DtmfPressed("2")) == []
    assert call.later(1.4, Tick()) == []
    assert call.later(0.1, Tick()) == [UserDigits("42")]
    assert call.phase is Phase.THINKING


def test_hash_ends_a_digit_entry_at_once() -> None:
    call = listening()
    assert call(DtmfPressed("1"), DtmfPressed("2"), DtmfPressed("#")) == [UserDigits("12")]


def test_a_lone_hash_sends_nothing() -> None:
    call = listening()
    assert call(DtmfPressed("#")) == []
    assert call.later(5.0, Tick()) == []
    assert call.phase is Phase.LISTENING


def test_zero_alone_asks_for_a_person() -> None:
    call = listening()
    assert call(DtmfPressed("0")) == []
    assert call.later(1.5, Tick()) == [RequestAgent("caller pressed 0")]
    assert call.phase is Phase.ENDING


def test_zero_within_a_number_is_just_a_digit() -> None:
    call = listening()
    assert call(DtmfPressed("1"), DtmfPressed("0"), DtmfPressed("#")) == [UserDigits("10")]
    call2 = listening()
    assert call2(DtmfPressed("0"), DtmfPressed("7"), DtmfPressed("#")) == [UserDigits("07")]


def test_zero_during_a_reply_interrupts_then_transfers() -> None:
    call = speaking()
    assert call(DtmfPressed("0")) == [*BARGE, HEARD]
    assert call(DtmfPressed("#")) == [RequestAgent("caller pressed 0")]
    call.reply("transfer", "Transferring you.")
    assert call.play_out("transfer", 1) == [Transfer("caller pressed 0")]


def test_star_is_passed_on_as_text() -> None:
    call = listening()
    assert call(DtmfPressed("*"), DtmfPressed("9"), DtmfPressed("#")) == [UserDigits("*9")]


# --- silence: reprompt, then goodbye ---


def test_idle_reprompt_then_goodbye() -> None:
    call = listening()
    assert call.later(7.9, Tick()) == []
    assert call.later(0.1, Tick()) == [Reprompt()]
    call.reply("reprompt", "Are you still there?")
    assert call.later(30.0, Tick()) == []  # no timer while speaking
    call.play_out("reprompt", 1)
    assert call.later(7.9, Tick()) == []
    assert call.later(0.1, Tick()) == [SayGoodbyeAndHangup("caller silent")]
    assert call.phase is Phase.ENDING


def test_second_silence_says_goodbye_even_if_the_reprompt_never_played() -> None:
    call = listening()
    assert call.later(8.0, Tick()) == [Reprompt()]
    assert call.later(8.0, Tick()) == [SayGoodbyeAndHangup("caller silent")]


def test_a_real_turn_forgives_the_silence() -> None:
    call = listening()
    call.later(8.0, Tick())  # reprompt
    call.later(1.0, said("yes, sorry"))
    call(ReplyStarted(), AudioSent("a", "No problem."), ReplyFinished(), MarkEchoed("a"))
    assert call.later(8.0, Tick()) == [Reprompt()]  # a reprompt again, not goodbye


def test_noise_postpones_the_reprompt() -> None:
    call = listening()
    call.later(7.0, SPEECH)
    assert call.later(2.0, Tick()) == []  # someone might be speaking
    assert call.later(1.0, Tick()) == []  # the noise times out; the timer restarted at 7.0
    assert call.later(5.0, Tick()) == [Reprompt()]


def test_silence_after_a_barge_in_still_earns_a_reprompt() -> None:
    call = speaking()
    call(interim("wait what"))
    assert call.later(1.0, END) == []  # the words never became a final
    assert call.later(7.9, Tick()) == []
    assert call.later(0.1, Tick()) == [Reprompt()]


def test_no_idle_timer_while_the_agent_thinks() -> None:
    call = thinking()
    assert call.later(60.0, Tick()) == []


def test_idle_timer_runs_from_call_start_without_a_greeting() -> None:
    call = Call(idle_reprompt_s=5.0)
    call(CallStarted(), at=1.0)
    assert call(Tick(), at=5.9) == []
    assert call(Tick(), at=6.0) == [Reprompt()]


def test_a_reprompt_is_not_started_once_the_caller_spoke() -> None:
    call = listening()
    assert call.later(8.0, Tick()) == [Reprompt()]
    call(said("I'm here"))
    assert call(ReplyStarted("reprompt")) == []
    assert call.phase is Phase.THINKING


# --- maximum call length ---


def test_max_length_while_listening() -> None:
    call = Call(max_call_s=60.0)
    call(CallStarted())
    call.later(30.0, said("hi"))
    call(ReplyFinished())
    assert call.later(30.0, Tick()) == [SayGoodbyeAndHangup("max call length")]
    call.reply("goodbye", "Time is up, goodbye.")
    assert call.play_out("goodbye", 1) == [Hangup("max call length")]


def test_max_length_cuts_a_reply() -> None:
    call = Call(max_call_s=60.0)
    call(CallStarted(), said("tell me everything"))
    call.reply("answer", "Well.", "There is a lot.")
    call(MarkEchoed("answer-0"))
    assert call.later(60.0, Tick()) == [
        *BARGE,
        RecordHeard("Well."),
        SayGoodbyeAndHangup("max call length"),
    ]


def test_max_length_cancels_thinking() -> None:
    call = Call(max_call_s=60.0)
    call(CallStarted(), said("hmm let me think"))
    assert call.later(60.0, Tick()) == [CancelReply(), SayGoodbyeAndHangup("max call length")]


def test_max_length_is_checked_before_the_event_it_arrives_with() -> None:
    call = Call(max_call_s=60.0)
    call(CallStarted())
    assert call.later(61.0, said("one more thing")) == [SayGoodbyeAndHangup("max call length")]


def test_max_length_doesnt_interrupt_an_ending() -> None:
    call = Call(max_call_s=60.0, ending_timeout_s=120.0)
    call(CallStarted(), DtmfPressed("0"), DtmfPressed("#"))
    call.reply("transfer", "Connecting.")
    assert call.later(61.0, Tick()) == []
    assert call.play_out("transfer", 1) == [Transfer("caller pressed 0")]


# --- invariants over random calls ---

random_events = st.one_of(
    st.sampled_from(list(EVENTS.values())),
    st.builds(interim, st.sampled_from(["", "ok", "yeah right", "wait", "add milk", "the"])),
    st.builds(
        final, st.sampled_from(["", "okay", "stop", "add milk please", "bob"]), st.booleans()
    ),
    st.builds(DtmfPressed, st.sampled_from(list("0123456789*#"))),
    st.builds(
        ReplyStarted,
        st.sampled_from(["greeting", "answer", "reprompt", "goodbye", "transfer"]),
        st.booleans(),
    ),
    st.builds(AudioSent, st.sampled_from(["m1", "m2", "m3"]), st.sampled_from(["", "Hi."])),
    st.builds(MarkEchoed, st.sampled_from(["m1", "m2", "m3"])),
)


@settings(max_examples=300)
@given(st.lists(st.tuples(random_events, st.floats(0, 5)), max_size=60))
def test_invariants_hold_for_any_sequence(steps: list[tuple[Event, float]]) -> None:
    tt, now = TurnTaker(TurnConfig(max_call_s=120.0)), 0.0
    out = tt.handle(CallStarted(), now)
    for event, dt in steps:
        now += dt
        out += tt.handle(event, now)
    out += tt.handle(Tick(), now + 200.0)  # every timer has run out by now
    out += tt.handle(Tick(), now + 400.0)

    paused = False
    for command in out:  # every pause is resumed before the next one, and only once
        if isinstance(command, PauseOutbound):
            assert not paused
            paused = True
        elif isinstance(command, ResumeOutbound):
            assert paused
            paused = False
    assert not paused

    finals = [i for i, c in enumerate(out) if isinstance(c, Hangup | Transfer)]
    assert finals == [len(out) - 1]  # the call always ends, once, and nothing follows
    assert tt.phase is Phase.ENDED

    for i, command in enumerate(out):
        if isinstance(command, StartTurn | UserDigits):
            assert command.text.strip()
        if isinstance(command, ClearPlayback):  # a clear always comes with its bookkeeping
            assert out[i + 1] == CancelReply() and isinstance(out[i + 2], RecordHeard)


@settings(max_examples=300)
@given(st.lists(st.tuples(random_events, st.floats(0, 5)), max_size=60))
def test_a_silent_caller_is_never_left_hanging(steps: list[tuple[Event, float]]) -> None:
    # Whatever happened, if the shell then goes quiet the timers alone end the call, unless
    # the machine is waiting on the shell itself (an agent reply, or audio still playing).
    tt, now = TurnTaker(TurnConfig(max_call_s=1e9)), 0.0
    tt.handle(CallStarted(), now)
    for event, dt in steps:
        now += dt
        tt.handle(event, now)
    for _ in range(6):
        now += 30.0
        tt.handle(Tick(), now)
    assert tt.phase in (Phase.ENDED, Phase.THINKING, Phase.SPEAKING)


def test_words() -> None:
    assert words("Mm-hm, OKAY!") == ["mm", "hm", "okay"]
    assert words("don't stop") == ["don't", "stop"]
    assert words("...") == []


# --- the transfer line: words call the transfer off, noise does not --------------------------


def _transfer_line_playing() -> tuple[TurnTaker, float]:
    from voice_app.speech.base import TranscriptEvent as T
    from voice_app.streams.turns import AgentEndsCall, AudioSent, ReplyStarted, StartTurn

    taker = TurnTaker()
    now = 0.0
    taker.handle(CallStarted(), now)
    taker.handle(T("final", "i want a person", speech_final=True), now := now + 2)
    assert taker.phase is Phase.THINKING
    taker.handle(ReplyStarted("answer"), now := now + 0.5)
    taker.handle(AgentEndsCall("transfer", "asked for a person"), now)
    taker.handle(AudioSent("m1", "I'll connect you with a colleague"), now := now + 0.2)
    assert taker.phase is Phase.ENDING
    assert not any(isinstance(c, StartTurn) for c in [])
    return taker, now


def test_words_over_the_transfer_line_call_the_transfer_off() -> None:
    from voice_app.speech.base import TranscriptEvent as T
    from voice_app.streams.turns import CancelTransfer, ClearPlayback, StartTurn, Transfer

    taker, now = _transfer_line_playing()
    out = taker.handle(T("speech_started"), now := now + 0.3)
    assert out == []  # the line keeps playing until words say otherwise
    out = taker.handle(T("interim", "no wait actually"), now := now + 0.3)
    assert any(isinstance(c, CancelTransfer) for c in out)
    assert any(isinstance(c, ClearPlayback) for c in out)
    assert taker.phase is Phase.LISTENING
    out = taker.handle(T("final", "no wait actually add a todo", speech_final=True), now + 0.5)
    assert StartTurn("no wait actually add a todo") in out
    later = taker.handle(Tick(), now + 30)
    assert not any(isinstance(c, Transfer) for c in later)


def test_a_backchannel_over_the_transfer_line_lets_it_go_ahead() -> None:
    from voice_app.speech.base import TranscriptEvent as T
    from voice_app.streams.turns import (
        CancelTransfer,
        MarkEchoed,
        ReplyFinished,
        StartTurn,
        Transfer,
    )

    taker, now = _transfer_line_playing()
    out = taker.handle(T("final", "okay", speech_final=True), now := now + 0.3)
    assert not any(isinstance(c, CancelTransfer | StartTurn) for c in out)
    taker.handle(ReplyFinished(), now := now + 0.1)
    out = taker.handle(MarkEchoed("m1"), now + 1)
    assert Transfer("asked for a person") in out
