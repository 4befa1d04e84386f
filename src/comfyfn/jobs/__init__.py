"""The durable job store — the one queue that the gateway's API jobs and named batches share,
and that workers on any number of machines claim from (SQLite embedded, PostgreSQL shared).

- :mod:`~comfyfn.jobs.store`: :class:`Store`: API keys, jobs, output files, workers and the
  claim protocol (fenced writes: every write names the claim it holds);
- :mod:`~comfyfn.jobs.schema`: the tables and the records read from them;
- :mod:`~comfyfn.jobs.database`: opening either database, schema versions (Alembic, under
  an advisory lock on PostgreSQL; the revisions are in ``comfyfn/jobs/migrations``);
- :mod:`~comfyfn.jobs.listen`: PostgreSQL's LISTEN/NOTIFY, waking idle workers at once;
- :mod:`~comfyfn.jobs.bus`: one process's job updates and previews, numbered for event
  streams that reconnect.

The worker that runs the jobs and the HTTP service in front of them are in
:mod:`comfyfn.gateway`; ``comfyfn batch --db`` enqueues and follows a batch here.
"""

from comfyfn._public import present as _present
from comfyfn.jobs._keys import parse_rate
from comfyfn.jobs._runners import BATCH_KEY, NOTIFY_CHANNEL
from comfyfn.jobs.bus import BusEvent, JobBus, JobPreview, JobUpdate, Subscription
from comfyfn.jobs.database import SchemaTooNew, StoreUnreachable, unavailable
from comfyfn.jobs.listen import QueueListener
from comfyfn.jobs.schema import (
    MAX_PRIORITY,
    STATES,
    TERMINAL,
    Claim,
    FileRecord,
    JobRecord,
    KeyRecord,
    NewFile,
    StaleClaim,
    WorkerRecord,
)
from comfyfn.jobs.store import Store

__all__ = [
    "BATCH_KEY",
    "MAX_PRIORITY",
    "NOTIFY_CHANNEL",
    "STATES",
    "TERMINAL",
    "BusEvent",
    "Claim",
    "FileRecord",
    "JobBus",
    "JobPreview",
    "JobRecord",
    "JobUpdate",
    "KeyRecord",
    "NewFile",
    "QueueListener",
    "SchemaTooNew",
    "StaleClaim",
    "Store",
    "StoreUnreachable",
    "Subscription",
    "WorkerRecord",
    "parse_rate",
    "unavailable",
]

_present(__name__, globals(), __all__)
