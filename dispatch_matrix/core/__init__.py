"""The small core every package may use: the error family, typed ids, structured logs,
secret redaction, backoff, the clock seam and wall-clock timers, verbatim text, canonical
paths and machine faults.

Owns no state and imports nothing else of ours."""
