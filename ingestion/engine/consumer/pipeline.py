"""Step 4's pipeline: one commit thread, at most one batch in flight, batches committed in order.
The loop decodes and checks the next batch while the one before it is written."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass

import pyarrow as pa

from ingestion.engine.consumer.offsets import TopicPartitionKey


@dataclass
class PreparedBatch:
    """A decoded, checked and sorted batch on its way to the commit thread."""

    started: float  # perf_counter when its processing began
    messages: int
    table: pa.Table  # rows to append (sorted; may be empty when everything was poison or a duplicate)
    topic_counts: Counter[str]  # fresh messages per topic, in order of first appearance
    read_upto: dict[TopicPartitionKey, int]  # next offset after its last message: to Kafka once it is in the table
    snapshot_offsets: dict[TopicPartitionKey, int]  # the part of read_upto past the table's: in the snapshot summary


class CommitPipeline:
    def __init__(self, commit: Callable[[PreparedBatch], None]) -> None:
        self._commit = commit
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: tuple[Future[None], PreparedBatch] | None = None
        self.last_submit = 0.0  # time.monotonic() when the last batch was handed over (0: none yet)

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="k2-iceberg-commit")

    @property
    def inflight(self) -> bool:
        return self._inflight is not None

    @property
    def busy(self) -> bool:
        """A batch is being committed right now."""
        return self._inflight is not None and not self._inflight[0].done()

    def wait(self, timeout: float | None = None) -> None:
        """Until the batch in flight is committed (or failed), at most `timeout` seconds."""
        if self._inflight is not None:
            futures_wait([self._inflight[0]], timeout=timeout)

    def submit(self, batch: PreparedBatch) -> None:
        """Hand `batch` to the commit thread; the one before must have been taken with `finish`."""
        assert self._executor is not None and self._inflight is None
        self.last_submit = time.monotonic()
        self._inflight = (self._executor.submit(self._commit, batch), batch)

    def finish(self) -> tuple[PreparedBatch | None, BaseException | None]:
        """Wait for the batch in flight; it (None when there was none) and its failure, if any."""
        if self._inflight is None:
            return None, None
        future, batch = self._inflight
        self._inflight = None
        return batch, future.exception()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
