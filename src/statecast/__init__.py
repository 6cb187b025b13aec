"""statecast: authoritative-state rooms over WebSocket.

The public API, in one import::

    from statecast import connect, Room, action, ActionContext, Rejection

``connect`` is the asyncio client (agents and spectators); ``Room``,
``action`` and ``ActionContext`` write room types; ``Rejection`` is what a
handler raises to refuse an action and what ``act()`` raises when the room
refuses one; ``ClientIdTakenOver`` is what a client raises when another
connection took over its agent client id (close 4009), ``ServerClosed`` what it
raises once the connection ended for good (``Changed``, ``StateReplaced``, ``Welcomed`` and
``ServerNotice`` are what ``changes()`` yields), and ``ConnectFailed`` what ``connect()``
raises when its first connection cannot be made (saying why), ``AnswerLost`` what
``call()`` raises when an action took effect while the client was away but its answer is
no longer kept, and ``StateMutation`` what a handler gets when it changes the state in
place instead of through ``ctx``. The packages below
(``statecast.protocol``, ``statecast.server``, ``statecast.loadtest``) hold the rest.
"""

from statecast.protocol.client import (
    Changed,
    RoomClient,
    ServerNotice,
    StateReplaced,
    Welcomed,
    connect,
)
from statecast.protocol.errors import (
    AnswerLost,
    ClientIdTakenOver,
    ConnectFailed,
    Rejection,
    ServerClosed,
)
from statecast.server.room import ActionContext, Room, action
from statecast.server.state_view import StateMutation

__all__ = [
    "ActionContext",
    "AnswerLost",
    "Changed",
    "ClientIdTakenOver",
    "ConnectFailed",
    "Rejection",
    "Room",
    "RoomClient",
    "ServerClosed",
    "ServerNotice",
    "StateMutation",
    "StateReplaced",
    "Welcomed",
    "action",
    "connect",
]
