"""MAX_LIVE_CALLS: the slot arithmetic (pure); the call-level behaviour is in test_call_engine."""

from __future__ import annotations

from voice_app.streams.admission import Admission


def test_slots_fill_up_to_the_limit_and_free_again() -> None:
    admission = Admission(limit=2)
    assert admission.try_take() and admission.try_take()
    assert admission.full
    assert not admission.try_take()
    assert admission.taken == 2  # a refusal takes nothing
    admission.release()
    assert not admission.full and admission.try_take()


def test_a_call_keeping_its_place_may_go_over_the_limit() -> None:
    admission = Admission(limit=1)
    assert admission.try_take()
    assert admission.try_take(keeps_place=True)
    assert admission.taken == 2
    admission.release()
    assert admission.full  # one call still live: nobody new yet
    admission.release()
    assert not admission.full


def test_zero_means_no_limit_and_release_never_goes_negative() -> None:
    admission = Admission(limit=0)
    assert all(admission.try_take() for _ in range(1000))
    assert not admission.full
    fresh = Admission(limit=3)
    fresh.release()
    assert fresh.taken == 0
