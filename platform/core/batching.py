"""Group commit for the queue's writes: what arrives while one write is in flight goes in
the next, together (one transaction and one thread hop for a burst, not one each)."""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, Optional, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class WriteBatch(Generic[Item, Result]):
    """`await batch(item)` is `write([item])[0]`, with the items of concurrent callers
    written by one call of `write` (at most `max_items` at a time). A failed write fails
    every caller of that batch, each of which may try again."""

    def __init__(self, write: Callable[[list[Item]], Optional[Sequence[Result]]], max_items: int = 500) -> None:
        self._write = write
        self._max_items = max_items
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flushing: Optional[asyncio.Task[None]] = None

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future))
        if self._flushing is None or self._flushing.done():
            self._flushing = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self._max_items], self._pending[self._max_items:]
            try:
                results = await asyncio.to_thread(self._write, [item for item, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results if results is not None else [None] * len(batch)):
                if not future.done():
                    future.set_result(result)  # type: ignore[arg-type]
