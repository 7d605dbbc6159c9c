"""The small core every package may use: the error family, typed ids, structured logs
(each line of the log file escaped of what a terminal would obey), text from outside shown
on the operator's terminal as text (`terminal.py`), secret redaction (finding the secrets in
a text and hiding them; the forms a known value takes, `secret_forms.py`), backoff, the
clock seam and wall-clock timers, verbatim text, canonical paths, machine faults and the
base every config section shares (`settings.py`).

Owns no state and imports nothing else of ours."""
