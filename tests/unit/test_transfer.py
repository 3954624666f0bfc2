"""udocker.transfer.NetProgress: the count of attempts without net progress that bounds download retries."""

from udocker.transfer import NetProgress


def test_an_attempt_that_gets_further_resets_the_count():
    net = NetProgress()
    assert [net.record(offset) for offset in (10, 10, 5, 20, 20)] == [0, 1, 2, 0, 1]
    assert net.reached == 20


def test_a_resumed_transfer_starts_from_what_is_already_there():
    net = NetProgress(100)
    assert net.record(100) == 1
    assert net.record(0) == 2  # a restart (Range ignored) that gets no further is no progress
    assert net.record(101) == 0
