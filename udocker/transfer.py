"""Retries of resumable downloads (registry blobs, engine bundles): only attempts without net progress count.

A transfer that resumes (a Range request) and gets further than ever before made progress, however often it was
cut; one that ends at or before the furthest byte reached so far did not. A server that ignores Range and cuts
every answer at the same byte restarts the download each time, which would otherwise look like progress forever.
"""


class NetProgress:
    """The furthest offset a transfer reached, and the attempts in a row that got no further."""

    def __init__(self, reached: int = 0):
        self.reached = reached
        self.failures = 0

    def record(self, offset: int) -> int:
        """Note that an attempt ended at `offset`; returns the attempts in a row without net progress."""
        self.failures = 0 if offset > self.reached else self.failures + 1
        self.reached = max(self.reached, offset)
        return self.failures
