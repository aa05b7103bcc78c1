"""μ-law framing, conversion, energy, resampling and the playback clock."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voice_app.streams.audio import (
    FRAME_BYTES,
    PlaybackClock,
    Resampler,
    duration_ms,
    frames,
    is_speech_like,
    pcm16_to_ulaw,
    rms,
    silence,
    ulaw_to_pcm16,
)


def tone(freq: float, ms: int, rate: int = 8000, amplitude: int = 8000) -> bytes:
    """16-bit PCM sine."""
    n = rate * ms // 1000
    samples = (round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    return struct.pack(f"<{n}h", *samples)


def samples(pcm: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def test_frame_is_20_ms() -> None:
    assert FRAME_BYTES == 160
    assert duration_ms(FRAME_BYTES) == 20
    assert duration_ms(8000) == 1000
    assert duration_ms(1) == 0.125


def test_silence_is_mulaw_zero() -> None:
    assert silence(20) == b"\xff" * 160
    assert silence(0) == b""
    assert len(silence(1000)) == 8000
    assert set(samples(ulaw_to_pcm16(silence(20)))) == {0}


def test_frames_split_and_pad_the_last() -> None:
    data = bytes(range(100)) * 4  # 400 bytes
    out = list(frames(data))
    assert [len(f) for f in out] == [160, 160, 160]
    assert b"".join(out)[:400] == data
    assert out[-1][80:] == b"\xff" * 80


def test_frames_of_nothing_and_of_exact_multiples() -> None:
    assert list(frames(b"")) == []
    assert list(frames(b"\x01" * 320)) == [b"\x01" * 160] * 2


@given(st.binary(max_size=2000))
def test_frames_preserve_audio(data: bytes) -> None:
    out = list(frames(data))
    assert all(len(f) == FRAME_BYTES for f in out)
    assert len(out) == -(-len(data) // FRAME_BYTES)
    joined = b"".join(out)
    assert joined[: len(data)] == data
    assert set(joined[len(data) :]) <= {0xFF}


def test_mulaw_round_trip_is_close() -> None:
    pcm = tone(440, 100)
    back = samples(ulaw_to_pcm16(pcm16_to_ulaw(pcm)))
    original = samples(pcm)
    assert len(pcm16_to_ulaw(pcm)) == len(pcm) // 2
    # μ-law keeps ~3% relative precision: compare within a generous envelope.
    assert all(abs(a - b) <= max(16, abs(a) // 16) for a, b in zip(original, back, strict=True))


def test_pcm_to_ulaw_ignores_half_a_sample() -> None:
    assert pcm16_to_ulaw(b"\x00\x00\x01") == pcm16_to_ulaw(b"\x00\x00")


def test_rms_and_speech_detection() -> None:
    assert rms(b"") == 0
    assert rms(silence(20)) == 0
    loud = pcm16_to_ulaw(tone(300, 20, amplitude=8000))
    hiss = pcm16_to_ulaw(tone(300, 20, amplitude=100))
    assert 5000 < rms(loud) < 6500  # a sine's RMS is amplitude / √2
    assert is_speech_like(loud)
    assert not is_speech_like(hiss)
    assert not is_speech_like(silence(20))
    assert is_speech_like(hiss, threshold=10)


def test_resampler_doubles_and_halves() -> None:
    up, down = Resampler(8000, 16000), Resampler(16000, 8000)
    pcm8 = tone(300, 200)
    pcm16 = up.convert(pcm8)
    assert abs(len(pcm16) - 2 * len(pcm8)) <= 4
    back = down.convert(pcm16)
    assert abs(len(back) - len(pcm8)) <= 4
    assert abs(rms_pcm(back) - rms_pcm(pcm8)) < rms_pcm(pcm8) * 0.1


def rms_pcm(pcm: bytes) -> float:
    values = samples(pcm)
    return math.sqrt(sum(v * v for v in values) / len(values))


def test_resampler_streams_without_seams() -> None:
    pcm = tone(300, 400)
    whole = Resampler(8000, 16000).convert(pcm)
    streaming = Resampler(8000, 16000)
    # Odd-sized pieces: the half sample is carried to the next call.
    pieces = [pcm[i : i + 333] for i in range(0, len(pcm), 333)]
    streamed = b"".join(streaming.convert(p) for p in pieces)
    assert streamed == whole


def test_resampler_reset_and_identity() -> None:
    same = Resampler(8000, 8000)
    assert same.convert(b"\x01\x02\x03") == b"\x01\x02"
    assert same.convert(b"\x04") == b"\x03\x04"
    r = Resampler(8000, 16000)
    first = r.convert(tone(300, 20))
    r.reset()
    assert r.convert(tone(300, 20)) == first


def test_resampler_rejects_bad_rates() -> None:
    with pytest.raises(ValueError):
        Resampler(0, 8000)


# --- the playback clock ---


def test_audio_plays_in_real_time_after_what_is_queued() -> None:
    clock = PlaybackClock()
    clock.sent(8000, now=10.0)  # one second
    assert clock.lead_ms(10.0) == pytest.approx(1000)
    clock.sent(4000, now=10.2)  # queued behind it
    assert clock.lead_ms(10.2) == pytest.approx(1300)
    assert clock.lead_ms(11.5) == 0
    assert clock.lead_ms(20.0) == 0


def test_audio_after_a_gap_starts_when_sent() -> None:
    clock = PlaybackClock()
    clock.sent(800, now=1.0)  # plays 1.0–1.1
    clock.sent(800, now=5.0)  # the queue drained: plays 5.0–5.1
    assert clock.lead_ms(5.0) == pytest.approx(100)


def test_wait_keeps_the_lead_bounded() -> None:
    clock = PlaybackClock()
    assert clock.wait_s(0.0) == 0
    clock.sent(FRAME_BYTES * 25, now=0.0)  # 500 ms
    assert clock.wait_s(0.0, max_lead_ms=250) == pytest.approx(0.25)
    assert clock.wait_s(0.25, max_lead_ms=250) == pytest.approx(0.0)
    assert clock.wait_s(0.1, max_lead_ms=300) == pytest.approx(0.1)
    # counting the chunk about to go: 500 ms queued at 0.3 s leaves 200 ms; +40 > 200
    assert clock.wait_s(0.3, max_lead_ms=200, next_ms=40) == pytest.approx(0.04)


def test_pacing_with_the_next_chunk_never_exceeds_the_limit() -> None:
    clock, now, max_lead = PlaybackClock(), 0.0, 0.0
    for _ in range(200):
        now += clock.wait_s(now, max_lead_ms=80, next_ms=40)
        clock.sent(FRAME_BYTES * 2, now)
        max_lead = max(max_lead, clock.lead_ms(now))
    assert max_lead <= 80 + 1e-6


def test_pacing_loop_never_gets_far_ahead() -> None:
    clock, now, max_lead = PlaybackClock(), 0.0, 0.0
    for _ in range(200):  # a sender that sleeps as told
        now += clock.wait_s(now, max_lead_ms=240)
        clock.sent(FRAME_BYTES, now)
        max_lead = max(max_lead, clock.lead_ms(now))
    assert max_lead <= 240 + 20 + 1e-6  # the limit plus the frame just sent
    assert now == pytest.approx(200 * 0.02 - 0.26, abs=0.03)  # real time, minus the lead


def test_marks_play_after_the_audio_before_them() -> None:
    clock = PlaybackClock()
    clock.sent(800, now=0.0)  # 100 ms
    clock.marked("a", now=0.0)
    clock.sent(1600, now=0.0)  # 200 ms more
    clock.marked("b", now=0.0)
    assert clock.pending == ("a", "b")
    assert clock.pop_played(0.05) == []
    assert clock.pop_played(0.1) == ["a"]
    assert clock.pop_played(0.2) == []
    assert clock.pop_played(0.31) == ["b"]
    assert clock.pending == ()


def test_a_mark_with_nothing_queued_is_reached_at_once() -> None:
    clock = PlaybackClock()
    clock.marked("now", now=3.0)
    assert clock.pop_played(3.0) == ["now"]


def test_clear_reports_marks_that_will_echo_unplayed() -> None:
    clock = PlaybackClock()
    for name in "abc":
        clock.sent(800, now=0.0)
        clock.marked(name, now=0.0)  # a at 0.1, b at 0.2, c at 0.3
    assert clock.clear(0.15) == ["b", "c"]
    assert clock.lead_ms(0.15) == 0
    assert clock.pop_played(0.15) == ["a"]  # it did play before the clear
    clock.sent(800, now=0.2)
    assert clock.lead_ms(0.2) == pytest.approx(100)
