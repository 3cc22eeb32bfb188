"""The exceptions of the flowdaq client: each carries what the server said, word for word."""

from __future__ import annotations

from typing import Any, Mapping


class FlowdaqError(RuntimeError):
    """Something the server said or did that the client cannot continue from."""


class ControlError(FlowdaqError):
    """The control endpoint answered `{"ok": false, "error": ...}`; `answer` is that object."""

    def __init__(self, op: str, answer: Mapping[str, Any]):
        self.op = op
        self.answer = dict(answer)
        super().__init__(f"{op} refused by the server: {answer.get('error', answer)}")


class ControlTimeout(FlowdaqError, TimeoutError):
    """The control endpoint did not answer in time (server down, or a wrong endpoint)."""


class MessageRefused(FlowdaqError):
    """The server refused a message for good (`retry: false`): resending it cannot help.
    `reason` is the server's error text; the message was kept aside in `ingest_errors`."""

    def __init__(self, source: str, seq: int, reason: Any):
        self.source = source
        self.seq = seq
        self.reason = reason
        super().__init__(f"message {seq} of {source!r} refused by the server: {reason}")


class QueryError(FlowdaqError):
    """The server refused or failed a SQL query; `reason` is its error text."""

    def __init__(self, reason: str, status: int | None = None):
        self.reason = reason
        self.status = status
        super().__init__(f"query failed{f' (HTTP {status})' if status else ''}: {reason}")
