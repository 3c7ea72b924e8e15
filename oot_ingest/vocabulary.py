"""Statuses, conclusions and the record key: the words every layer shares.

Pages, queries, the replicator and the ingestion API all take their status
names, chip colours and pass-rate rule from here.
"""

from dataclasses import dataclass

STATUS_IN_PROGRESS = "in_progress"
STATUS_COMPLETED = "completed"
STATUSES = (STATUS_IN_PROGRESS, STATUS_COMPLETED)

# Rank used in ClickHouse's version column: a later state always wins, and a
# deletion outranks every state.
STATUS_RANK = {STATUS_IN_PROGRESS: 1, STATUS_COMPLETED: 2}
DELETED_RANK = 3

SCHEMA_VERSIONS = ("1", "1.0")

# Pass rate = successes / (successes + failures). Other conclusions are shown
# but not counted.
SUCCESS_CONCLUSIONS = ("success",)
FAILURE_CONCLUSIONS = ("failure", "timed_out", "startup_failure")

LEVELS = ("L1", "L2", "L3", "L4")
REPORTING_LEVELS = ("L2", "L3", "L4")

EVENT_PULL_REQUEST = "pull_request"
EVENT_PUSH = "push"
EVENT_NIGHTLY = "nightly"
EVENT_PERIODIC = "periodic"
EVENT_TYPES = (EVENT_PULL_REQUEST, EVENT_PUSH, EVENT_NIGHTLY, EVENT_PERIODIC)


@dataclass(frozen=True)
class Chip:
    label: str
    colour: str  # a CSS class suffix: green, red, yellow, blue or grey


RUNNING_CHIP = Chip("running", "blue")
UNKNOWN_CHIP = Chip("unknown", "grey")
CONCLUSION_CHIPS = {
    "success": Chip("success", "green"),
    "failure": Chip("failure", "red"),
    "startup_failure": Chip("startup failure", "red"),
    "timed_out": Chip("timed out", "yellow"),
    "cancelled": Chip("cancelled", "yellow"),
    "neutral": Chip("neutral", "grey"),
    "skipped": Chip("skipped", "grey"),
    "stale": Chip("stale", "grey"),
    "action_required": Chip("action required", "grey"),
}


def chip_for(status: str | None, conclusion: str | None) -> Chip:
    """Return the chip for a record: running, a known conclusion, or unknown."""
    if status == STATUS_IN_PROGRESS:
        return RUNNING_CHIP
    return CONCLUSION_CHIPS.get(conclusion or "", UNKNOWN_CHIP)


def pass_rate_colour(rate: float | None) -> str:
    """Return the chip colour for a pass rate in percent: None means no data."""
    if rate is None:
        return "grey"
    if rate >= 95:
        return "green"
    if rate >= 80:
        return "yellow"
    return "red"


def dynamo_key(repo: str, delivery_id: str, workflow_name: str, job_name: str, check_run_id: str) -> str:
    """Build the record key: one record per job execution of one delivery."""
    return f"{repo}/{delivery_id}/{workflow_name}/{job_name}/{check_run_id}"
