"""How long a provider call the worker starts: the configured timeout, shortened to what the invocation has left
after keeping time to store the images, and not started at all when too little is left."""

from __future__ import annotations

import pytest

from darkroom.jobs.run import JobBusy, _call_budget


def test_a_fresh_invocation_shortens_a_call_the_configuration_made_too_long() -> None:
    # Given ProviderTimeoutSeconds 590 on a 600 s worker (the review's case: every job refused as busy, for hours)
    # When a fresh invocation takes a job / Then the call gets what is left after 30 s kept for storing
    assert _call_budget(lambda: 600_000, 590.0) == (570.0, 600.0)


def test_a_call_that_fits_keeps_its_configured_timeout() -> None:
    assert _call_budget(lambda: 900_000, 590.0)[0] == 590.0


def test_a_later_record_of_a_batch_with_a_minute_or_more_left_still_runs() -> None:
    assert _call_budget(lambda: 100_000, 590.0)[0] == pytest.approx(75.0)


def test_too_little_time_left_leaves_the_message_for_a_fresh_invocation() -> None:
    with pytest.raises(JobBusy, match="not enough"):
        _call_budget(lambda: 70_000, 590.0)  # 52.5 s after the reserve: under the one-minute minimum
