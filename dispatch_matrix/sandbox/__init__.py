"""The wall: the OS sandbox every shell call runs in (bubblewrap on Linux, sandbox-exec
on macOS), generated from data: what is hidden, what is read-only even inside a root,
and each call's limits.

May import `core` and `store`."""
