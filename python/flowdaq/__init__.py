"""Python client of flowdaq, the data-acquisition and analytics server for flow-chemistry labs.

- `Sender`: an instrument's measurements to the server (DEALER with acknowledgements and
  exactly-once resends, or PUSH), from numpy or pyarrow arrays and PTU files.
- `Client`: SQL into pyarrow, pandas or polars (Flight SQL, else HTTP); reaction conditions
  (`register_condition`), outcomes (`wait_outcomes`) and feature streams (`subscribe`).
- `Subscriber`: every feature row exactly once, gaps repaired by replay, JSON or Arrow.
- `flowdaq.wire`: the frames of the wire protocol, for drivers that build their own.

Every error the server reports arrives as a `FlowdaqError` subclass carrying its reason.
"""

from .client import Client, Subscriber, stream_matches
from .errors import ControlError, ControlTimeout, FlowdaqError, MessageRefused, QueryError
from .sender import AcknowledgedSender, Sender

__all__ = [
    "AcknowledgedSender",
    "Client",
    "ControlError",
    "ControlTimeout",
    "FlowdaqError",
    "MessageRefused",
    "QueryError",
    "Sender",
    "Subscriber",
    "stream_matches",
]
