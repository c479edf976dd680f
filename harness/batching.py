"""Dynamic batching for Python servers: gather requests for up to `max_delay`, run once.

Servers such as Triton and TorchServe batch concurrent requests; a Python server without
it would be compared unfairly. One batch runs at a time on the executor (the model's own
threads parallelise inside it); requests arriving meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np


class DynamicBatcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        executor: Executor,
        max_batch_size: int,
        max_delay_s: float,
    ) -> None:
        self.predict = predict
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self.batches = 0
        self.items = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def submit(self, inputs: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((inputs, future))
        return await future

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]:
        loop = asyncio.get_running_loop()
        items = [await self.queue.get()]
        size = len(items[0][0])
        deadline = loop.time() + self.max_delay_s
        while size < self.max_batch_size:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except TimeoutError:
                    break
            items.append(item)
            size += len(item[0])
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            batch = np.concatenate([x for x, _ in items])
            try:
                outputs = await loop.run_in_executor(self.executor, self.predict, batch)
            except Exception as exc:  # every waiter gets the failure, the loop goes on
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            start = 0
            for x, future in items:
                if not future.done():
                    future.set_result(outputs[start : start + len(x)])
                start += len(x)
