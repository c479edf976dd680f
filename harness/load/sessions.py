"""Multi-turn conversations on the load engine: each turn carries the whole history.

A conversation is a list of user turns and the output length of each answer. Its first
turn is sent on the step's schedule (open loop: a new user per arrival) or by one of the
step's users (closed loop: each user holds one conversation after another). When an answer
has streamed in full, the user "thinks" for `think_time_s`, then sends the next turn:
the system prompt, every earlier user turn and the server's own earlier answers (the text
it streamed), so a server's prefix cache sees what a real chat client would send. A
turn's latency counts from its send, as in a closed loop (the user waited on the answer);
a failed turn ends its conversation. Bodies are built when the turn is sent, off the
measured path: a JSON dump of a few kB, tens of microseconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any

from harness.load.http import build_request


@dataclass(frozen=True)
class Conversation:
    turns: tuple[str, ...]  # the user's messages
    max_tokens: tuple[int, ...]  # the forced length of each answer


@dataclass(frozen=True)
class ChatBuilder:
    """Builds one streamed chat-completions request from a history (picklable)."""

    host: str
    port: int
    path: str
    model: str
    extra_body: dict[str, Any] = field(default_factory=dict)
    system: str = ""

    def build(self, messages: list[dict[str, str]], max_tokens: int) -> bytes:
        payload = {
            "model": self.model, "max_tokens": max_tokens, "temperature": 0.0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
            **self.extra_body,
            "messages": ([{"role": "system", "content": self.system}] if self.system else [])
            + messages,
        }  # fmt: skip
        body = json.dumps(payload, separators=(",", ":")).encode()
        return build_request(self.host, self.port, "POST", self.path, body,
                             headers={"Accept": "text/event-stream"})  # fmt: skip


class Sessions:
    """The conversations of one step: who is on which turn, and what to send next."""

    def __init__(
        self,
        conversations: tuple[Conversation, ...],
        builder: ChatBuilder,
        think_time_s: float,
        transport: Any,
        state: dict[str, int],
        closed: bool,
        finished: Callable[[], None],
    ) -> None:
        self.conversations = conversations
        self.builder = builder
        self.think_s = think_time_s
        self.transport = transport  # a StreamPool keeping the text of every answer
        self.state = state
        self.closed = closed  # closed loop: a user starts a new conversation after the last
        self.finished = finished  # called when a dropped turn may have been the last
        self.next_conversation = 0
        # request index -> (conversation, turn, history sent with it)
        self.turn_of: dict[int, tuple[int, int, list[dict[str, str]]]] = {}
        self._loop = asyncio.get_running_loop()

    def start(self, intended_ns: int) -> int:
        """Send the first turn of the next conversation; its request index."""
        number = self.next_conversation
        self.next_conversation += 1
        return self._send(number, 0, [], intended_ns)

    def submit(self, index: int, intended_ns: int) -> None:
        """An open-loop arrival: a new user, a new conversation (`index` is not used)."""
        self.start(intended_ns)

    def _send(self, number: int, turn: int, history: list[dict[str, str]], at: int) -> int:
        talk = self.conversations[number % len(self.conversations)]
        messages = [*history, {"role": "user", "content": talk.turns[turn]}]
        pool = self.transport
        pool.requests.append(self.builder.build(messages, talk.max_tokens[turn]))
        pool.expected.append(talk.max_tokens[turn])
        index = len(pool.requests) - 1
        self.turn_of[index] = (number, turn, messages)
        pool.submit(index, at)
        return index

    def on_done(self, index: int, error: int, end: int) -> None:
        """An answer completed: schedule the conversation's next turn, or the user's next
        conversation (closed loop). The caller has already counted this request out."""
        number, turn, messages = self.turn_of[index]
        talk = self.conversations[number % len(self.conversations)]
        if end >= self.state["stop_ns"]:
            return
        if error == 0 and turn + 1 < len(talk.turns):
            answer = self.transport.texts.pop(index, "")
            history = [*messages, {"role": "assistant", "content": answer}]
            self.state["outstanding"] += 1  # the coming turn: the step waits for it
            self._loop.call_later(self.think_s, self._fire, number, turn + 1, history)
        elif self.closed:
            self.state["outstanding"] += 1
            self.start(perf_counter_ns())

    def _fire(self, number: int, turn: int, history: list[dict[str, str]]) -> None:
        now = perf_counter_ns()
        if now >= self.state["stop_ns"]:  # the step is over: this turn is never sent
            self.state["outstanding"] -= 1
            self.finished()
            return
        self._send(number, turn, history, now)

    def turns(self, indices: list[int]) -> list[int]:
        """The turn number (0 = first) of each recorded request."""
        return [self.turn_of[i][1] if i in self.turn_of else -1 for i in indices]
