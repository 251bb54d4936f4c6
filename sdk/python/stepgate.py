"""stepgate: write incident playbooks in Python.

A playbook is a WebAssembly component that the stepgate host runs step by
step: every database query, RPC call, flag change and page goes through the
host, which checks it against the operator's grants, simulates writes in a
dry run, asks a human where policy says so, and journals everything. This
module hides the generated WIT bindings: you write plain Python.

    import stepgate
    from stepgate import Decimal, Description, Outcome, Severity, db, flags, pager, step

    class DriftCheck(stepgate.Playbook):
        def describe(self):
            return (Description("drift-check", "1.0.0")
                    .answers("ReconciliationDriftHigh")
                    .db_read("plaza")
                    .flag_write("PLAZA_CUSTODIED_MODE_DISABLED"))

        def run(self, alert):
            with step("Triage"):
                held = db.query("plaza", "SELECT sum(amount) AS held FROM escrow_holds").first().decimal("held")
            if held > Decimal(1000):
                with step("Mitigate"):
                    flags.set("PLAZA_CUSTODIED_MODE_DISABLED", "1", "runbook: unexplained drift")
            return Outcome(f"{held} USDC held").severity("SEV-1").field("held_usdc", held)

    WitWorld = stepgate.export(DriftCheck)

Build it with `stepgate build DIR` (componentize-py, with this module and
the WIT contract the host speaks). Money is `Decimal`, never `float`: the
host carries decimals as exact text. A failed call raises `stepgate.Error`,
which carries the WIT error's kind; an exception that escapes `run` ends the
run as a clean playbook error (`failed`), never a crash.
"""

import datetime
import json
import re
import sys
from decimal import Decimal

from componentize_py_types import Err
from wit_world.imports import db as _db
from wit_world.imports import flags as _flags
from wit_world.imports import pager as _pager
from wit_world.imports import rpc as _rpc
from wit_world.imports import runbook as _runbook
from wit_world.imports import types as _t

__all__ = [
    "Alert", "Decimal", "Description", "Error", "Fate", "Outcome", "Playbook", "Row", "Rows",
    "Severity", "db", "export", "from_units", "flags", "http", "pager", "rpc", "runbook", "step",
]

# A playbook has no stdout: `print` (and tracebacks on stderr) go to the
# run's log, under the current step. Time and randomness work and replay
# the same (`time.time()` and `datetime.now()` read the run's journaled
# time, as `runbook.now()` does; `random` and `os.urandom` are seeded by the
# run id). Files, sockets and processes are not there: see `_seal`.
class _LogStream:
    def __init__(self, level):
        self._level, self._pending = level, ""

    def write(self, text):
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if line:
                _runbook.log(self._level, line)
        return len(text)

    def flush(self):
        pass


# What the standard library would reach outside the sandbox with, and the
# capability to use instead.
_FILES = "no files in a playbook: read through db or rpc, keep state in flags"
_PROCESSES = "no processes in a playbook: act through db, rpc, flags or pager"
_SOCKETS = "no sockets in a playbook: call endpoints through rpc (stepgate.http for HTTP)"
_SEALED = [
    ("builtins", ["open"], _FILES),
    ("io", ["open"], _FILES),
    ("os", ["open", "listdir", "scandir", "walk", "remove", "unlink", "rmdir", "mkdir",
            "makedirs", "rename", "replace", "chdir", "truncate"], _FILES),
    ("os", ["system", "popen", "execv", "execve", "spawnv", "spawnve", "posix_spawn",
            "posix_spawnp", "fork", "kill"], _PROCESSES),
    ("subprocess", ["Popen", "run", "call", "check_call", "check_output", "getoutput",
                    "getstatusoutput"], _PROCESSES),
    ("socket", ["socket", "socketpair", "fromfd", "create_connection", "create_server",
                "getaddrinfo", "gethostbyname"], _SOCKETS),
]


def _refusal(name, message):
    def refused(*args, **kwargs):
        raise PermissionError(f"{name}(): {message}")

    refused.__name__ = refused.__qualname__ = name
    return refused


def _seal():
    """Makes what the sandbox does not give raise `PermissionError` (an
    `OSError`, so `except OSError` catches it) naming the capability to use
    instead, not fail deep in WASI with an errno or an unrelated error."""
    import importlib

    for module_name, names, message in _SEALED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _refusal(name, message))


if sys.platform == "wasi":  # inside the component, not in the SDK's own tests
    sys.stdout = _LogStream(_runbook.Level.INFO)
    sys.stderr = _LogStream(_runbook.Level.WARN)
    _seal()

Severity = _pager.Severity
"""How urgently a page needs a human: CRITICAL, ERROR, WARNING, INFO."""


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

_KINDS = {
    _t.Error_NotGranted: "not granted",
    _t.Error_Denied: "denied",
    _t.Error_Invalid: "invalid",
    _t.Error_Timeout: "timeout",
    _t.Error_Backend: "backend",
    _t.Error_Failed: "failed",
}
_CASES = {kind: case for case, kind in _KINDS.items()}


class Error(Exception):
    """A stepgate call failed, or the playbook could not finish.

    `kind` is the WIT error case ("not granted", "denied", "invalid",
    "timeout", "backend", "failed"), `text` what the host said.
    """

    def __init__(self, kind, text):
        if kind not in _CASES:
            kind, text = "failed", f"{kind}: {text}"
        super().__init__(f"{kind}: {text}")
        self.kind = kind
        self.text = text

    @staticmethod
    def failed(text):
        """The playbook's own failure."""
        return Error("failed", text)

    def is_denied(self):
        """Whether a gate or a human refused a write."""
        return self.kind == "denied"

    def message(self):
        """What went wrong, for people: `timeout: the query ran past 10s`."""
        return f"{self.kind}: {self.text}"

    def to_wit(self):
        return _CASES[self.kind](self.text)


def _wit(call, *args):
    """Calls a WIT import; its error comes back as `Error`."""
    try:
        return call(*args)
    except Err as e:
        raise Error(_KINDS.get(type(e.value), "failed"), getattr(e.value, "value", str(e.value))) from None


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------

_I64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _decimal_text(d):
    """A decimal as plain digits, never exponent notation ("0.0000001",
    not "1E-7"), as the Rust SDK writes it. NaN and infinities are refused."""
    if not d.is_finite():
        raise Error("invalid", f"{d} is not an amount")
    return format(d, "f")


def _to_value(v):
    if v is None:
        return _t.Value_Null()
    if isinstance(v, bool):
        return _t.Value_Boolean(v)
    if isinstance(v, int):
        if not _I64[0] <= v <= _I64[1]:
            raise Error("invalid", f"{v} does not fit a 64-bit integer")
        return _t.Value_Int(v)
    if isinstance(v, Decimal):
        return _t.Value_Decimal(_decimal_text(v))
    if isinstance(v, float):
        return _t.Value_Float(v)
    if isinstance(v, str):
        return _t.Value_Text(v)
    if isinstance(v, (bytes, bytearray)):
        return _t.Value_Bytes(bytes(v))
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None or v.utcoffset() is None:
            raise Error("invalid", f"{v} has no time zone, so it is no one instant: give it one (tzinfo=datetime.timezone.utc), or use runbook.now()")
        return _t.Value_Timestamp(_rfc3339(v))
    if isinstance(v, (list, tuple)):
        # One parameter: `= ANY($1)` on PostgreSQL, `json_each(?1)` on SQLite.
        return _t.Value_Array([_to_element(item) for item in v])
    raise Error("invalid", f"cannot pass a {type(v).__name__} to stepgate: use None, bool, int, Decimal, str, bytes, a datetime with a time zone, or a list of these")


def _to_element(item):
    """A list's item as the WIT `element` of the same kind."""
    if isinstance(item, (list, tuple)):
        raise Error("invalid", "a list parameter holds values, not lists: lists do not nest")
    value = _to_value(item)
    kind = type(value).__name__.removeprefix("Value_")
    element = getattr(_t, "Element_" + kind)
    return element() if kind == "Null" else element(value.value)


def _rfc3339(moment):
    """A datetime with a time zone as RFC 3339 in UTC, to the millisecond:
    `2026-11-23T09:00:00Z`, `2026-11-23T09:00:00.250Z`."""
    utc = moment.astimezone(datetime.timezone.utc)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    millis = utc.microsecond // 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def from_units(units, scale):
    """An exact decimal from integer units: `from_units(1500000, 6)` is
    `Decimal("1.500000")` (USDC micro-units), the scale kept as written."""
    return Decimal(units).scaleb(-scale)


def _debug(v):
    """A value as the Rust SDK's messages show it: `Value::Text("x")`."""
    case = type(v).__name__.removeprefix("Value_")
    if isinstance(v, _t.Value_Null):
        return "Value::Null"
    if isinstance(v, _t.Value_Boolean):
        return f"Value::Boolean({'true' if v.value else 'false'})"
    if isinstance(v, _t.Value_Bytes):
        return f"Value::Bytes([{', '.join(str(b) for b in v.value)}])"
    if isinstance(v, (_t.Value_Text, _t.Value_Decimal, _t.Value_Timestamp)):
        quoted = v.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return f'Value::{case}("{quoted}")'
    return f"Value::{case}({v.value!r})"


def _from_value(v):
    if isinstance(v, _t.Value_Null):
        return None
    if isinstance(v, _t.Value_Decimal):
        return Decimal(v.value)
    return v.value


# ---------------------------------------------------------------------------
# Description, outcome, alert
# ---------------------------------------------------------------------------

class Description:
    """What a playbook says about itself: `describe()` returns one."""

    def __init__(self, name, version):
        self.name, self.version = name, version
        self._summary, self.alerts, self.capabilities = "", [], []

    def summary(self, text):
        self._summary = text
        return self

    def answers(self, alert):
        self.alerts.append(alert)
        return self

    def db_read(self, conn):
        return self._needs(_t.Capability_DbRead(conn))

    def db_write(self, conn):
        return self._needs(_t.Capability_DbWrite(conn))

    def rpc(self, endpoint, method):
        return self._needs(_t.Capability_Rpc(_t.RpcMethod(endpoint, method)))

    def http(self, endpoint, route):
        """An HTTP route on an endpoint, e.g. `"POST /admin/dlq/replay"`."""
        return self.rpc(endpoint, route)

    def flag_read(self, glob):
        return self._needs(_t.Capability_FlagRead(glob))

    def flag_write(self, glob):
        return self._needs(_t.Capability_FlagWrite(glob))

    def page(self, target):
        return self._needs(_t.Capability_Page(target))

    def notify(self, channel):
        return self._needs(_t.Capability_Notify(channel))

    def _needs(self, capability):
        self.capabilities.append(capability)
        return self

    def to_wit(self):
        return _t.Description(self.name, self.version, self._summary, list(self.alerts), list(self.capabilities))


class Outcome:
    """What a playbook reports when it finishes."""

    def __init__(self, summary):
        self.summary, self._severity, self.fields, self.checklist = summary, None, [], []

    def severity(self, severity):
        self._severity = severity
        return self

    def field(self, name, value):
        """A named figure; money as `Decimal`."""
        self.fields.append((name, value))
        return self

    def todo(self, item):
        """Something a human must still do."""
        self.checklist.append(item)
        return self

    def to_wit(self):
        return _t.Outcome(
            self.summary, self._severity, [(k, _to_value(v)) for k, v in self.fields], list(self.checklist)
        )


_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


class Alert:
    """The alert that started the run."""

    def __init__(self, wit):
        self.name = wit.name
        self.resolved = wit.status == _t.AlertStatus.RESOLVED
        self.labels = dict(wit.labels)
        self.annotations = dict(wit.annotations)
        self.starts_at = wit.starts_at
        self.fingerprint = wit.fingerprint

    def label(self, key):
        return self.labels.get(key)

    def annotation(self, key):
        return self.annotations.get(key)

    def address(self, key):
        """An Ethereum address from the label `key`, lower-cased. A missing
        or malformed one raises a playbook error: there is no default
        address (a test chain's must never stand in)."""
        value = self.labels.get(key)
        if value is None:
            raise Error.failed(
                f"the alert has no `{key}` label: add the address to the alert rule's labels "
                "(stepgate has no default address)"
            )
        digits = value[2:] if value.startswith("0x") else ""
        if len(digits) != 40 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise Error.failed(f"`{key}` = `{value}` is not an address")
        return value.lower()

    def setting(self, key, default):
        """A named setting: the annotation `key` as a positive whole number,
        or `default` without it. Anything else raises a playbook error."""
        text = self.annotations.get(key)
        if text is None:
            return default
        digits = text.strip()
        # At most 19 digits: within a signed 64-bit integer, as the host's.
        if digits.isascii() and digits.isdigit() and len(digits) <= 19 and 0 < int(digits) < 2**63:
            return int(digits)
        raise Error.failed(
            f"the annotation `{key}` is `{text}`, not a positive whole number (leave it out for the default, {default})"
        )

    def starts_at_ms(self):
        """When the alert started firing, in milliseconds since the Unix
        epoch (`startsAt`, RFC 3339 in UTC), or None. Compare with
        `runbook.now_millis()` for how long it has fired."""
        if not self.starts_at or not _UTC.fullmatch(self.starts_at):
            return None
        try:
            parsed = datetime.datetime.fromisoformat(self.starts_at[:-1] + "+00:00")
        except ValueError:
            return None
        return round(parsed.timestamp() * 1000)


class Playbook:
    """Subclass it: `describe()` returns a `Description`, `run(alert)` an
    `Outcome`. Then `WitWorld = stepgate.export(YourPlaybook)`."""

    def describe(self):
        raise NotImplementedError("describe()")

    def run(self, alert):
        raise NotImplementedError("run(alert)")


def export(playbook_class):
    """The class componentize-py exports, wrapping your playbook: an
    exception escaping `run` becomes the WIT error (`failed` unless it is a
    `stepgate.Error`)."""
    import wit_world

    playbook = playbook_class()

    class WitWorld(wit_world.WitWorld):
        def describe(self):
            return playbook.describe().to_wit()

        def run(self, alert):
            try:
                outcome = playbook.run(Alert(alert))
                if not isinstance(outcome, Outcome):
                    raise Error.failed(f"run() returned {type(outcome).__name__}, not an Outcome")
                return outcome.to_wit()
            except Error as e:
                raise Err(e.to_wit()) from None
            except Exception as e:  # noqa: BLE001 - every failure becomes a clean playbook error
                raise Err(_t.Error_Failed(f"{type(e).__name__}: {e}")) from None

    return WitWorld


# ---------------------------------------------------------------------------
# Steps and the run itself
# ---------------------------------------------------------------------------

class step:
    """Marks a step: `with step("Triage"): ...`. Every call in it is shown
    and journaled under that name."""

    def __init__(self, name):
        _runbook.step(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class runbook:
    """Logs, time, waits and human decisions."""

    @staticmethod
    def log(level, message):
        _runbook.log(getattr(_runbook.Level, level.upper()), message)

    @staticmethod
    def info(message):
        _runbook.log(_runbook.Level.INFO, message)

    @staticmethod
    def warn(message):
        _runbook.log(_runbook.Level.WARN, message)

    @staticmethod
    def now_millis():
        """Milliseconds since the Unix epoch, from the host (a replay sees the same time)."""
        return _runbook.now()

    @staticmethod
    def now():
        """The run's time as a `datetime` in UTC, to bind in a query where it
        would say `now()`: journaled, so a resumed run (and the re-check of
        an approval) asks the same question."""
        # Whole milliseconds added, never a float of seconds (that rounds).
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return epoch + datetime.timedelta(milliseconds=_runbook.now())

    @staticmethod
    def sleep(millis):
        _wit(_runbook.sleep, millis)

    @staticmethod
    def confirm(question):
        return _wit(_runbook.confirm, question)

    @staticmethod
    def dry_run():
        """Whether this run is a dry run (writes planned, none made). For
        wording only: say "planned", not "done"; decide the same way."""
        return _runbook.dry_run()


# ---------------------------------------------------------------------------
# Capabilities
# ---------------------------------------------------------------------------

class Row:
    """One row, values by column name: `row["held"]`, or typed with
    `row.int("n")`, `row.decimal("amount")`, `row.text("id")`."""

    def __init__(self, columns, values):
        self._columns, self._values = columns, values

    def value(self, column):
        try:
            return self._values[self._columns.index(column)]
        except ValueError:
            raise Error("invalid", f"no column `{column}`; the row has {', '.join(self._columns)}") from None

    def __getitem__(self, column):
        return _from_value(self.value(column))

    def _typed(self, column, expected, convert):
        v = self.value(column)
        try:
            out = convert(v)
        except (ValueError, ArithmeticError):
            out = None
        if out is None:
            raise Error("invalid", f"column `{column}` holds {_debug(v)}, expected {expected}")
        return out

    def int(self, column):
        def convert(v):
            if isinstance(v, _t.Value_Int):
                return v.value
            if isinstance(v, (_t.Value_Decimal, _t.Value_Text)) and _INTEGER.fullmatch(v.value):
                n = int(v.value)
                return n if _I64[0] <= n <= _I64[1] else None
            return None
        return self._typed(column, "an integer", convert)

    def decimal(self, column):
        """An exact decimal; a float is refused (money is never a float)."""
        def convert(v):
            if isinstance(v, (_t.Value_Decimal, _t.Value_Text)):
                d = Decimal(v.value)
                return d if d.is_finite() else None
            if isinstance(v, _t.Value_Int):
                return Decimal(v.value)
            return None
        return self._typed(column, "an exact decimal (a float is refused: money is never a float)", convert)

    def text(self, column):
        def convert(v):
            if isinstance(v, (_t.Value_Text, _t.Value_Decimal, _t.Value_Timestamp)):
                return v.value
            return None
        return self._typed(column, "text", convert)

    def bool(self, column):
        def convert(v):
            if isinstance(v, _t.Value_Boolean):
                return v.value
            if isinstance(v, _t.Value_Int):
                return v.value != 0
            return None
        return self._typed(column, "a boolean", convert)


class Rows:
    """The rows a query returned."""

    def __init__(self, wit):
        self.columns = list(wit.columns)
        self._rows = [Row(self.columns, values) for values in wit.rows]

    def __len__(self):
        return len(self._rows)

    def __iter__(self):
        return iter(self._rows)

    def first(self):
        """The first row; `invalid` if there is none."""
        if not self._rows:
            raise Error("invalid", "the query returned no rows")
        return self._rows[0]


class db:
    """Databases named in the operator's config. Parameters are bound by
    the host: `$1` (PostgreSQL) or `?1` (SQLite), never spliced in."""

    @staticmethod
    def query(conn, sql, params=()):
        return Rows(_wit(_db.query, conn, sql, [_to_value(p) for p in params]))

    @staticmethod
    def execute(conn, sql, params, reason):
        """A write: rows changed (in a dry run, the rows it would change)."""
        return _wit(_db.execute, conn, sql, [_to_value(p) for p in params], reason)


def with_query(path, query):
    """`path` with `query` (a dict or (name, value) pairs; values are made
    text) appended, each part percent-encoded: `/jobs?state=failed`."""
    if not query:
        return path
    pairs = query.items() if isinstance(query, dict) else query
    encoded = "&".join(f"{_encode(str(k))}={_encode(str(v))}" for k, v in pairs)
    return f"{path}{'&' if '?' in path else '?'}{encoded}"


def _encode(text):
    keep = "-._~"
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in keep) else f"%{b:02X}"
        for b in text.encode()
    )


def json_text(value):
    """JSON as the Rust SDK writes it (compact, keys sorted, a Decimal as its
    text; NaN and infinities refused): for bodies, logs and comparisons."""
    return _json(value)


def _json(value):
    """JSON as the Rust SDK writes it: compact, keys sorted, a Decimal as
    its text; NaN and infinities refused."""

    def decimal(v):
        if isinstance(v, Decimal):
            return _decimal_text(v)
        raise Error("invalid", f"cannot write a {type(v).__name__} as JSON")

    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False, default=decimal)
    except ValueError as e:
        raise Error("invalid", f"JSON: {e}") from None


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _parse_json(text):
    """JSON as strictly as the Rust SDK reads it (serde_json): no NaN, no
    byte-order mark, no nesting past 128. A failure is `invalid`."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if text.startswith("\ufeff"):
            raise ValueError("a byte-order mark")
        if text.count("[") + text.count("{") > 128 and _depth(text) > 128:
            raise ValueError("nested too deep")
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise Error("invalid", f"JSON: {e}") from None


def _depth(text):
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


class rpc:
    """JSON-RPC methods on endpoints named in the config."""

    @staticmethod
    def call(endpoint, method, params=None):
        """A read method; its decoded `result`."""
        return rpc.send(endpoint, method, params, "")

    @staticmethod
    def send(endpoint, method, params, reason):
        """A method the config classes as a write; `reason` is required."""
        text = _wit(_rpc.call, endpoint, method, "[]" if params is None else _json(params), reason)
        return _parse_json(text)


class Fate:
    """What became of a write, in words an outcome or a page may use: no
    message claims a write that was refused, failed or only planned in a
    dry run. `kind`: "made", "planned", "refused" or "failed"."""

    def __init__(self, kind, why=None, value=None):
        self.kind, self.why, self.value = kind, why, value

    @staticmethod
    def of(write):
        """Makes one write (`write()`) and returns its fate; anything raised
        that is not a stepgate Error is raised again."""
        try:
            value = write()
        except Error as e:
            return Fate("refused" if e.is_denied() else "failed", e.message())
        return Fate("planned" if runbook.dry_run() else "made", None, value)

    def passed(self):
        """Made, or planned in a dry run: decide on this."""
        return self.kind in ("made", "planned")

    def why_not(self):
        return None if self.passed() else self.why

    def say(self, done):
        """For "halted": "halted", "would be halted (dry run)",
        "NOT halted (refused: …)", "NOT halted (failed: …)"."""
        if self.kind == "made":
            return done
        if self.kind == "planned":
            return f"would be {done} (dry run)"
        return f"NOT {done} ({self.kind}: {self.why})"


class Response:
    """An HTTP answer: its status and its body as JSON (None when empty or
    not JSON). `dry_run`: a write in a dry run, nothing was sent."""

    def __init__(self, status, body, dry_run):
        self.status, self.body, self.dry_run = status, body, dry_run

    def ok(self):
        """Whether the status is 2xx, or the write was planned in a dry run."""
        return self.dry_run or 200 <= self.status < 300


class http:
    """HTTP admin APIs named in the config, with JSON bodies."""

    @staticmethod
    def get(endpoint, path, query=None):
        """A read; `query` (a dict or (name, value) pairs) is encoded for you.
        The granted route must end in `?*` to allow a query string."""
        return http._request(endpoint, "GET", with_query(path, query), None, "")

    @staticmethod
    def post(endpoint, path, body, reason):
        return http._request(endpoint, "POST", path, body, reason)

    @staticmethod
    def put(endpoint, path, body, reason):
        return http._request(endpoint, "PUT", path, body, reason)

    @staticmethod
    def patch(endpoint, path, body, reason):
        return http._request(endpoint, "PATCH", path, body, reason)

    @staticmethod
    def delete(endpoint, path, reason):
        return http._request(endpoint, "DELETE", path, None, reason)

    @staticmethod
    def _request(endpoint, method, path, body, reason):
        headers, raw = [], b""
        if body is not None:
            headers, raw = [("content-type", "application/json")], _json(body).encode()
        answer = _wit(_rpc.http, endpoint, _rpc.HttpRequest(method, path, headers, raw), reason)
        try:
            parsed = _parse_json(answer.body) if answer.body else None
        except Error:
            parsed = None
        dry_run = any(k.lower() == "x-stepgate-dry-run" and v == "true" for k, v in answer.headers)
        return Response(answer.status, parsed, dry_run)


class flags:
    """Feature flags and kill switches."""

    @staticmethod
    def get(name):
        return _wit(_flags.get, name)

    @staticmethod
    def set(name, value, reason):
        """Sets a flag; returns the value it had before."""
        return _wit(_flags.set, name, value, reason)


class pager:
    """Paging humans and posting to channels."""

    @staticmethod
    def page(target, severity, summary, details):
        """Pages `target`; returns the page id."""
        return _wit(_pager.page, target, severity, summary, details)

    @staticmethod
    def notify(channel, message):
        _wit(_pager.notify, channel, message)

    @staticmethod
    def page_or_note(target, severity, summary, details, checklist):
        """Pages `target`; if the page does not go out, says so on
        `checklist`, so a failing pager never costs a run its outcome."""
        try:
            pager.page(target, severity, summary, details)
        except Error as e:
            checklist.append(f"{target} was NOT told ({e.message()}): tell them by hand: {summary}")

    @staticmethod
    def notify_or_note(channel, message, checklist):
        """Posts `message` to `channel`, or says on `checklist` that it did not go out."""
        try:
            pager.notify(channel, message)
        except Error as e:
            checklist.append(f"{channel} was NOT told ({e.message()}): tell them by hand: {message}")
