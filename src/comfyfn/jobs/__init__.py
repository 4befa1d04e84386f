"""The durable job store — the one queue that the gateway's API jobs and named batches share,
and that workers on any number of machines claim from (SQLite embedded, PostgreSQL shared).

- :mod:`~comfyfn.jobs.store`: :class:`Store`: API keys, jobs, output files, workers and the
  claim protocol (fenced writes: every write names the claim it holds);
- :mod:`~comfyfn.jobs.schema`: the tables and the records read from them;
- :mod:`~comfyfn.jobs.database`: opening either database, schema versions (Alembic, under
  an advisory lock on PostgreSQL; the revisions are in ``comfyfn/jobs/migrations``);
- :mod:`~comfyfn.jobs.listen`: PostgreSQL's LISTEN/NOTIFY, waking idle workers at once;
- :mod:`~comfyfn.jobs.bus`: one process's job updates and previews, numbered for event
  streams that reconnect;
- :mod:`~comfyfn.jobs.worker`: :class:`Worker`, which claims jobs and runs each one's life
  on its servers: placement, re-attach, settling, its files, its webhook (one job life for
  API jobs and batch rows);
- :mod:`~comfyfn.jobs.hooks`: what the application a worker runs in gives it
  (:class:`WorkerSettings`; the gateway's :class:`ApiJobs`, metrics and webhooks).

The HTTP service in front of the store is :mod:`comfyfn.gateway`; ``comfyfn batch --db``
enqueues and follows a batch here, and ``comfyfn worker`` runs a :class:`Worker`.
"""

from comfyfn._public import present as _present
from comfyfn.jobs._job_life import DB_ERRORS, error_record, write_outputs
from comfyfn.jobs._keys import parse_rate
from comfyfn.jobs._runners import BATCH_KEY, NOTIFY_CHANNEL
from comfyfn.jobs.bus import BusEvent, JobBus, JobPreview, JobUpdate, Subscription
from comfyfn.jobs.database import SchemaTooNew, StoreUnreachable, unavailable
from comfyfn.jobs.hooks import (
    ApiJobs,
    NoMetrics,
    Notify,
    WorkerMetrics,
    WorkerSettings,
    new_worker_id,
)
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
    models_key,
)
from comfyfn.jobs.store import Store
from comfyfn.jobs.worker import Worker

__all__ = [
    "BATCH_KEY",
    "DB_ERRORS",
    "MAX_PRIORITY",
    "NOTIFY_CHANNEL",
    "STATES",
    "TERMINAL",
    "ApiJobs",
    "BusEvent",
    "Claim",
    "FileRecord",
    "JobBus",
    "JobPreview",
    "JobRecord",
    "JobUpdate",
    "KeyRecord",
    "NewFile",
    "NoMetrics",
    "Notify",
    "QueueListener",
    "SchemaTooNew",
    "StaleClaim",
    "Store",
    "StoreUnreachable",
    "Subscription",
    "Worker",
    "WorkerMetrics",
    "WorkerRecord",
    "WorkerSettings",
    "error_record",
    "models_key",
    "new_worker_id",
    "parse_rate",
    "unavailable",
    "write_outputs",
]

_present(__name__, globals(), __all__)
