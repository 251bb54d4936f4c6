"""A Python playbook that misbehaves on purpose, by the alert's `mode`
label: `raise` (an exception escapes run), `page` (pages, and lets any
error escape), `spin` (never returns), `stdlib` (reads the time and
randomness, and tries files, sockets and processes, catching what is
refused), `open` (opens a file and lets the error escape), `sleep`
(sleeps far past the deadline), anything else
finishes. It declares a page to `ceo`: loaded without that
grant it must be refused."""

import stepgate
from stepgate import Description, Outcome, Severity, pager, step


class Hostile(stepgate.Playbook):
    def describe(self):
        return Description("python-hostile", "0.1.0").summary("misbehaves on purpose").answers("Hostile").page("ceo")

    def run(self, alert):
        mode = alert.label("mode")
        with step("Misbehave"):
            if mode == "raise":
                raise ValueError("the ledger does not add up")
            if mode == "page":
                pager.page("ceo", Severity.CRITICAL, "hostile", "a page it is granted")
            if mode == "spin":
                n = 0
                while True:
                    n += 1
            if mode == "stdlib":
                return stdlib()
            if mode == "open":
                open("/etc/passwd")
            if mode == "sleep":
                import time

                time.sleep(1_000_000)
        return Outcome("all good")


def stdlib():
    """What a new author reaches for first, and what each does."""
    import datetime
    import os
    import random
    import socket
    import subprocess
    import time

    now = datetime.datetime.now(datetime.timezone.utc)
    seconds = time.time()
    started = time.monotonic()
    tried = []
    for name, attempt in [
        ("open", lambda: open("/etc/passwd")),
        ("listdir", lambda: os.listdir("/")),
        ("connect", lambda: socket.create_connection(("127.0.0.1", 80))),
        ("run", lambda: subprocess.run(["ls"])),
    ]:
        try:
            attempt()
            tried.append(f"{name}: allowed")
        except OSError as e:
            tried.append(f"{name}: {type(e).__name__}: {e}")
    outcome = (
        Outcome("stdlib")
        .field("now", now.isoformat())
        # time.time() is a float of seconds: round, never truncate, to get
        # back the journaled milliseconds.
        .field("time_ms", round(seconds * 1000))
        .field("monotonic_ms", int((time.monotonic() - started) * 1000))
        .field("random", repr(random.random()))
        .field("urandom", os.urandom(8).hex())
        .field("environ", len(os.environ))
    )
    for line in tried:
        outcome = outcome.todo(line)
    return outcome


WitWorld = stepgate.export(Hostile)
