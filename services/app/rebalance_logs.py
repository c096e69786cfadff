"""aiokafka's line for a commit that a rebalance refused, logged at WARNING instead of ERROR.

When a consumer group rebalances while a batch is applied, the batch's commit is refused
(`RebalanceInProgress`, `IllegalGeneration` or `UnknownMemberId`): aiokafka logs `OffsetCommit
failed for group ... due to group error (...), will rejoin` at ERROR, once a partition of the
batch, and the consumer (`services.app.consumer`) says once at WARNING what follows: the batch
is read again and its events come back as duplicates. That is what a rebalance does, at every
process that joins or leaves, so the line is lowered to WARNING: an ERROR line stays a thing to
act on. aiokafka's other commit errors keep their level.
"""

from __future__ import annotations

import logging

COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
# aiokafka's format string for that line, matched exactly: if aiokafka changes it, the line keeps
# its level (tests/test_commit_after_rebalance.py then fails).
REJOIN_AFTER_COMMIT_FAILED = "OffsetCommit failed for group %s due to group error (%s), will rejoin"


class RebalanceCommitAsWarning(logging.Filter):
    """Lowers aiokafka's refused-commit-after-a-rebalance line to WARNING; passes every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and record.msg == REJOIN_AFTER_COMMIT_FAILED:
            record.levelno, record.levelname = (
                logging.WARNING,
                logging.getLevelName(logging.WARNING),
            )
        return True


_FILTER = RebalanceCommitAsWarning()


def lower_rebalance_commit_errors() -> None:
    """Install the filter on aiokafka's coordinator logger, once however often called."""
    logging.getLogger(COORDINATOR_LOGGER).addFilter(_FILTER)
