from voice_app.streams.pin_change import (
    ASK_AGAIN,
    ASK_CURRENT,
    ASK_NEW,
    GAVE_UP,
    MISMATCH,
    PinChangeFlow,
    Say,
    Stop,
    Submit,
)


def test_current_new_confirm_submits() -> None:
    flow = PinChangeFlow()
    assert flow.start() == Say(ASK_CURRENT)
    assert flow.keys("4826#") == Say(ASK_NEW)
    assert flow.keys("1357") == Say(ASK_AGAIN)
    assert flow.keys("1357#") == Submit("4826", "1357")


def test_mismatch_asks_again_then_gives_up() -> None:
    flow = PinChangeFlow()
    flow.keys("4826")
    flow.keys("1357")
    assert flow.keys("1358") == Say(MISMATCH)
    assert flow.keys("2468") == Say(ASK_AGAIN)
    assert flow.keys("2469") == Stop(GAVE_UP)


def test_speech_is_refused_and_repeats_the_current_prompt() -> None:
    flow = PinChangeFlow()
    flow.keys("4826")
    first = flow.speech()
    assert isinstance(first, Say) and "keypad" in first.text and first.text.endswith(ASK_NEW)
    flow.speech()
    assert flow.speech() == Stop(GAVE_UP)
