"""statecast: authoritative-state rooms over WebSocket.

The public API, in one import::

    from statecast import connect, Room, action, ActionContext, Rejection

``connect`` is the asyncio client (agents and spectators); ``Room``,
``action`` and ``ActionContext`` write room types; ``Rejection`` is what a
handler raises to refuse an action and what ``act()`` raises when the room
refuses one; ``ClientIdTakenOver`` is what a client raises when another
connection took over its agent client id (close 4009), ``ServerClosed`` what it
raises once the connection ended for good, and ``ConnectFailed`` what ``connect()``
raises when its first connection cannot be made (saying why). The packages below
(``statecast.protocol``, ``statecast.server``, ``statecast.loadtest``) hold the rest.
"""

from statecast.protocol.client import RoomClient, connect
from statecast.protocol.errors import ClientIdTakenOver, ConnectFailed, Rejection, ServerClosed
from statecast.server.room import ActionContext, Room, action

__all__ = [
    "ActionContext",
    "ClientIdTakenOver",
    "ConnectFailed",
    "Rejection",
    "Room",
    "RoomClient",
    "ServerClosed",
    "action",
    "connect",
]
