"""Filing answers in small groups, so the ledger keeps up with a fast server.

One DuckDB transaction per answer costs milliseconds of the event loop; at hundreds of
answers a second that, not the server, sets the pace. :class:`GroupCommitter` collects the
ledger records of answers as they arrive and commits them together, in a worker thread (the
loop keeps sending and receiving meanwhile), when ``group`` of them are waiting or the oldest
has waited ``max_wait_s``. Requests are admitted only while fewer than ``group`` answers are
uncommitted (:meth:`room`), so a crash loses, and a resumed run asks again, at most one
group of answers besides those still in flight. With ``group`` 1 an answer is in the store
before the next request starts, as with one commit per answer.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class GroupCommitter:
    def __init__(self, write: Callable[[list[Any]], None] | None, group: Callable[[], int],
                 max_wait_s: float = 0.05) -> None:
        self._write = write
        self._group = group
        self.max_wait_s = max_wait_s
        self.pending: list[Any] = []
        self.writing = 0
        self.commits = 0
        self.largest = 0
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        self._changed = asyncio.Event()

    @property
    def group(self) -> int:
        return max(1, int(self._group()))

    @property
    def uncommitted(self) -> int:
        return len(self.pending) + self.writing

    def add(self, record: Any) -> None:
        """File ``record`` with the next group (committed soon, not now)."""
        if self._write is None:
            return
        self.pending.append(record)
        if len(self.pending) >= self.group:
            self._kick()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._kick)

    async def room(self) -> None:
        """Wait until fewer than ``group`` answers are uncommitted (raises a failed commit's error)."""
        while True:
            self._raise()
            if self.uncommitted < self.group:
                return
            self._kick()
            self._changed.clear()
            await self._changed.wait()

    async def flush(self) -> None:
        """Commit everything waiting; raise what a commit raised (at once: after a failed
        commit the loop commits nothing more, and waiting for the rest spun for ever)."""
        while True:
            self._raise()
            if not self.pending and (self._task is None or self._task.done()):
                return
            self._kick()
            task = self._task
            assert task is not None
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():  # flush() itself was cancelled
                    raise

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _kick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._commit_loop())

    async def _commit_loop(self) -> None:
        assert self._write is not None
        while self.pending and self._error is None:
            batch, self.pending = self.pending, []
            self.writing = len(batch)
            try:
                await asyncio.to_thread(self._write, batch)
                self.commits += 1
                self.largest = max(self.largest, len(batch))
            except asyncio.CancelledError:  # this task, not the write (a closing client cancels every task):
                raise  # the batch's thread writes on; flush() starts another task for what is pending
            except BaseException as exc:  # surfaced to the requests waiting for room, and to flush()
                self._error = exc
            finally:
                self.writing = 0
                self._changed.set()
            if len(self.pending) < self.group:
                break
        if self.pending and self._timer is None and self._error is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait_s, self._kick)
