"""Matrix identifiers as distinct types, so a room id cannot be passed as a user id."""

from typing import NewType

RoomID = NewType("RoomID", str)
UserID = NewType("UserID", str)
EventID = NewType("EventID", str)
DeviceID = NewType("DeviceID", str)
