"""The sentence chunker and the markdown stripper."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice_app.agent.chunker import SentenceChunker, speakable


def chunk(text: str, step: int = 1, **options: int) -> list[str]:
    """Stream `text` in `step`-sized deltas; the chunks, then the flushed rest."""
    chunker = SentenceChunker(**options)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += chunker.feed(text[i : i + step])
    rest = chunker.flush()
    return [*out, rest] if rest else out


def test_sentences_come_out_one_by_one() -> None:
    assert chunk("Hello there. How are you? I'm fine!") == [
        "Hello there.",
        "How are you?",
        "I'm fine!",
    ]


def test_a_sentence_is_ready_before_the_reply_ends() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("Sure, I can") == []
    assert chunker.feed(" do that.") == []  # "that." might yet be "that.com"
    assert chunker.feed(" Which") == ["Sure, I can do that."]
    assert chunker.feed(" day?") == []
    assert chunker.feed(" ") == ["Which day?"]  # '?' never begins anything else
    assert chunker.flush() == ""


def test_flush_returns_the_remainder_and_resets() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("Done. And the rest") == ["Done."]
    assert chunker.flush() == "And the rest"
    assert chunker.flush() == ""
    assert chunker.feed("New reply.") == []
    assert chunker.flush() == "New reply."


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_delta_sizes_dont_change_the_chunks(step: int) -> None:
    text = "Dr. Lee is in at 10:30 a.m. Tomorrow. It costs $3.50, e.g. cheap... I think!"
    assert chunk(text, step) == [
        "Dr. Lee is in at 10:30 a.m.",
        "Tomorrow.",
        "It costs $3.50, e.g. cheap... I think!",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith will call you.",
        "Mr. and Mrs. Jones are here.",
        "Bring snacks, e.g. fruit and nuts.",
        "That is, i.e. tomorrow.",
        "The total is 3.5 hours.",
        "The meeting is at 10:30 today.",
        "Well... maybe later.",
        "Wait… what?",
        "J. R. R. Tolkien wrote it.",
        "She moved to the U.S. last year.",
        "It takes approx. two hours.",
        "Call me at 9 a.m. tomorrow.",
        "See example.com for details.",
    ],
)
def test_no_split_inside(text: str) -> None:
    assert chunk(text) == [text]


def test_a_lower_case_word_after_a_full_stop_goes_on() -> None:
    assert chunk("It is est. two thousand. Next one.") == [
        "It is est. two thousand.",
        "Next one.",
    ]


def test_abbreviation_that_ends_a_sentence() -> None:
    assert chunk("Meet at 9 a.m. Then lunch.") == ["Meet at 9 a.m.", "Then lunch."]
    assert chunk("Apples, pears, etc. Anything else?") == ["Apples, pears, etc.", "Anything else?"]


def test_quotes_and_brackets_stay_with_their_sentence() -> None:
    assert chunk('He said "hi." Then left.') == ['He said "hi."', "Then left."]
    assert chunk("(It works.) Good.") == ["(It works.)", "Good."]
    assert chunk("What?! No way.") == ["What?!", "No way."]


def test_long_clause_splits_at_a_comma() -> None:
    text = (
        "I added the todo to your list for tomorrow morning, and I also set a reminder, "
        "so you won't forget."
    )
    assert chunk(text) == [
        "I added the todo to your list for tomorrow morning,",
        "and I also set a reminder, so you won't forget.",
    ]


@pytest.mark.parametrize("mark", [";", ":", " -", " –", "—"])
def test_long_clause_splits_at_other_pauses(mark: str) -> None:
    first = "Your next meeting is the weekly planning call" + mark
    assert chunk(first + " it starts at noon.") == [first.strip(), "it starts at noon."]


def test_short_clauses_stay_together() -> None:
    assert chunk("Yes, sure: at noon - or later; fine.") == ["Yes, sure: at noon - or later; fine."]


def test_clause_length_is_configurable() -> None:
    assert chunk("Well, okay, fine.", min_clause_chars=5) == ["Well, okay,", "fine."]


def test_numbers_and_times_are_not_clauses() -> None:
    text = "There are 3,000 entries in the list scheduled at 10:30:00 for everyone."
    assert chunk(text, min_clause_chars=5) == [text]


def test_hyphenated_words_are_not_dashes() -> None:
    text = "This is a long-running well-known and thoroughly-tested follow-up reminder."
    assert chunk(text, min_clause_chars=10) == [text]


def test_lines_are_chunks() -> None:
    assert chunk("Here are your todos:\n1. Buy milk\n2. Call Bob\n\nThat's all.") == [
        "Here are your todos:",
        "1. Buy milk",
        "2. Call Bob",
        "That's all.",
    ]


def test_run_on_text_is_cut_at_a_space() -> None:
    text = " ".join(["word"] * 100)  # 499 characters, no punctuation
    out = chunk(text, max_chars=100)
    assert all(len(c) <= 100 for c in out)
    assert " ".join(out) == text


def test_max_chars_holds_even_for_one_big_delta() -> None:
    text = "a" * 60 + ". Then more."
    assert chunk(text, step=len(text), max_chars=50) == ["a" * 50, "a" * 10 + ".", "Then more."]


def test_unbroken_text_is_cut_hard() -> None:
    assert chunk("x" * 250, max_chars=100) == ["x" * 100, "x" * 100, "x" * 50]


def test_markdown_is_stripped_from_chunks() -> None:
    text = "## Your day\n- **Standup** at 9.\n- Lunch with [Ana](https://x.y/z).\n"
    assert chunk(text, step=4) == ["Your day", "Standup at 9.", "Lunch with Ana."]


def test_bold_sentence_end() -> None:
    assert chunk("**Done.** Next step.") == ["Done.", "Next step."]


def test_empty_and_whitespace_produce_nothing() -> None:
    assert chunk("") == []
    assert chunk("  \n\n  ") == []
    assert chunk("**") == []


# Reply-like text: words, digits, punctuation, dashes and line breaks.
replies = st.text(alphabet=st.sampled_from(list("abc AB .,!?-\n:;—…'\"1$")), max_size=300)


@given(replies, st.integers(1, 20))
def test_no_words_are_lost_or_invented(text: str, step: int) -> None:
    out = chunk(text, step)
    assert all(c and c == c.strip() for c in out)
    assert "".join("".join(out).split()) == "".join(speakable(text).split())


@given(st.text(max_size=300), st.integers(1, 300))
def test_any_text_chunks_cleanly(text: str, step: int) -> None:
    out = chunk(text, step, max_chars=50)
    assert all(c and c == c.strip() and len(c) <= 50 for c in out)


sentences = st.lists(
    st.sampled_from(
        ["Sure.", "Dr. Who is here.", "It costs 3.5 dollars.", "Really?", "Okay!", "At 10:30."]
    ),
    min_size=1,
    max_size=8,
)


@given(sentences, st.integers(1, 9))
def test_whole_sentences_stream_as_whole_sentences(parts: list[str], step: int) -> None:
    assert chunk(" ".join(parts), step) == parts


# --- speakable ---


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("**bold** and __strong__", "bold and strong"),
        ("*italic* and _em_", "italic and em"),
        ("# Title", "Title"),
        ("### Sub title", "Sub title"),
        ("- one\n- two\n* three\n+ four\n• five", "one two three four five"),
        ("> quoted", "quoted"),
        ("use `voice-app serve`", "use voice-app serve"),
        ("```python\nprint(1)\n```", "print(1)"),
        ("see [the docs](https://example.com/a_b)", "see the docs"),
        ("![a cat](cat.png)", "a cat"),
        ("| a | b |", "a b"),
        ("before\n---\nafter", "before after"),
        ("3 * 4 = 12", "3 * 4 = 12"),
        ("snake_case_name", "snake_case_name"),
        ("-5 degrees", "-5 degrees"),
        ("1. First", "1. First"),
        ("  lots   of\n\n space ", "lots of space"),
        ("", ""),
    ],
)
def test_speakable(raw: str, spoken: str) -> None:
    assert speakable(raw) == spoken


@given(st.text(max_size=200))
def test_speakable_output_is_clean(text: str) -> None:
    spoken = speakable(text)
    assert "**" not in spoken and "`" not in spoken
    assert spoken == " ".join(spoken.split())


def test_continued_line_keeps_a_leading_dash() -> None:
    assert speakable("- 5 degrees", line_start=False) == "- 5 degrees"
    assert speakable("- 5 degrees\n- item", line_start=False) == "- 5 degrees item"
    assert chunk("It was hot. - and then - cold.") == ["It was hot.", "- and then - cold."]
