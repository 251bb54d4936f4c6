"""Unit tests of the Python SDK in plain CPython: the real bindings
componentize-py generates from wit/, with the host's functions replaced by
fakes. `python3 sdk/python/test_stepgate.py` (scripts/test runs it)."""

import json
import pathlib
import subprocess
import sys
import tempfile
import unittest
from decimal import Decimal

ROOT = pathlib.Path(__file__).resolve().parents[2]
_bindings = tempfile.TemporaryDirectory()
subprocess.run(
    ["componentize-py", "-d", str(ROOT / "wit"), "-w", "playbook", "bindings", _bindings.name],
    check=True,
    stdout=subprocess.DEVNULL,
)
sys.path[:0] = [_bindings.name, str(ROOT / "sdk" / "python")]

import stepgate  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from stepgate import Decimal as SdkDecimal, Description, Error, Outcome, db, flags, from_units, http  # noqa: E402
from wit_world.imports import types as t  # noqa: E402


class Money(unittest.TestCase):
    def test_units_keep_their_scale_as_text(self):
        self.assertIs(SdkDecimal, Decimal)
        self.assertEqual(str(from_units(5075000000, 6)), "5075.000000")
        self.assertEqual(str(from_units(0, 6)), "0.000000")
        self.assertEqual(str(from_units(5, 6)), "0.000005")
        self.assertEqual(str(from_units(-15, 2)), "-0.15")

    def test_values_are_typed_and_a_float_is_never_money(self):
        self.assertEqual(stepgate._to_value(True), t.Value_Boolean(True))
        self.assertEqual(stepgate._to_value(3), t.Value_Int(3))
        self.assertEqual(stepgate._to_value(Decimal("1.50")), t.Value_Decimal("1.50"))
        self.assertEqual(stepgate._to_value(None), t.Value_Null())
        # A list is one parameter: an array of elements of its items' kinds.
        self.assertEqual(
            stepgate._to_value([1, None, "x", Decimal("2.5")]),
            t.Value_Array([t.Element_Int(1), t.Element_Null(), t.Element_Text("x"), t.Element_Decimal("2.5")]),
        )
        self.assertEqual(stepgate._to_value(()), t.Value_Array([]))
        with self.assertRaises(Error) as raised:
            stepgate._to_value([[1]])
        self.assertIn("lists do not nest", raised.exception.text)
        with self.assertRaises(Error) as raised:
            stepgate._to_value(object())
        self.assertEqual(raised.exception.kind, "invalid")
        row = stepgate.Row(["held", "ratio", "n"], [t.Value_Decimal("12.500000"), t.Value_Float(0.1), t.Value_Int(7)])
        self.assertEqual(row.decimal("held"), Decimal("12.500000"))
        self.assertEqual(row.decimal("n"), Decimal(7))
        with self.assertRaises(Error) as raised:
            row.decimal("ratio")
        self.assertIn("money is never a float", raised.exception.text)
        self.assertEqual(stepgate._to_value(from_units(1, 7)), t.Value_Decimal("0.0000001"))
        with self.assertRaises(Error):
            stepgate._to_value(2**63)
        with self.assertRaises(Error) as raised:
            row.decimal("ratio")
        self.assertEqual(
            raised.exception.message(),
            "invalid: column `ratio` holds Value::Float(0.1), expected an exact decimal (a float is refused: money is never a float)",
        )
        odd = stepgate.Row(["a", "b", "c"], [t.Value_Text(" 1_000 "), t.Value_Text("NaN"), t.Value_Null()])
        for column, get in [("a", odd.int), ("b", odd.decimal), ("c", odd.int)]:
            with self.assertRaises(Error, msg=column):
                get(column)
        with self.assertRaises(Error) as raised:
            odd.text("c")
        self.assertEqual(raised.exception.text, "column `c` holds Value::Null, expected text")
        with self.assertRaises(Error) as raised:
            row.int("nope")
        self.assertEqual(raised.exception.message(), "invalid: no column `nope`; the row has held, ratio, n")


class Calls(unittest.TestCase):
    def setUp(self):
        self.saved = (stepgate._flags.set, stepgate._db.query, stepgate._rpc.http)

    def tearDown(self):
        stepgate._flags.set, stepgate._db.query, stepgate._rpc.http = self.saved

    def test_the_runs_time_binds_as_an_rfc3339_timestamp(self):
        import datetime

        self.addCleanup(setattr, stepgate._runbook, "now", stepgate._runbook.now)
        stepgate._runbook.now = lambda: 1795424400123
        self.assertEqual(stepgate._to_value(stepgate.runbook.now()), t.Value_Timestamp("2026-11-23T09:00:00.123Z"))
        stepgate._runbook.now = lambda: 1795424400250
        now = stepgate.runbook.now()
        self.assertEqual(now.tzinfo, datetime.timezone.utc)
        self.assertEqual(stepgate._to_value(now), t.Value_Timestamp("2026-11-23T09:00:00.250Z"))
        quarter = now - datetime.timedelta(minutes=15, milliseconds=250)
        self.assertEqual(stepgate._to_value(quarter), t.Value_Timestamp("2026-11-23T08:45:00Z"))
        paris = datetime.timezone(datetime.timedelta(hours=1))
        self.assertEqual(
            stepgate._to_value(datetime.datetime(2026, 11, 23, 10, 0, tzinfo=paris)),
            t.Value_Timestamp("2026-11-23T09:00:00Z"),
        )
        with self.assertRaises(Error) as raised:
            stepgate._to_value(datetime.datetime(2026, 11, 23, 9, 0))
        self.assertIn("no time zone", raised.exception.text)

    def test_a_host_error_is_an_exception_with_its_kind(self):
        def refuse(name, value, reason):
            raise Err(t.Error_Denied("needs two approvers"))

        stepgate._flags.set = refuse
        with self.assertRaises(Error) as raised:
            flags.set("X", "1", "why")
        self.assertTrue(raised.exception.is_denied())
        self.assertEqual(raised.exception.message(), "denied: needs two approvers")
        self.assertEqual(raised.exception.to_wit(), t.Error_Denied("needs two approvers"))

    def test_rows_by_column_name_and_params_bound(self):
        seen = []

        def query(conn, sql, params):
            seen.append((conn, sql, params))
            return stepgate._db.Rows(["id", "amount"], [[t.Value_Text("a"), t.Value_Decimal("1.5")]])

        stepgate._db.query = query
        rows = db.query("ledger", "SELECT id, amount FROM t WHERE x = $1", [Decimal("2.0")])
        self.assertEqual(seen[0][2], [t.Value_Decimal("2.0")])
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows.first()["amount"], Decimal("1.5"))
        self.assertEqual(rows.first().text("id"), "a")

    def test_http_bodies_are_written_as_the_rust_sdk_writes_them(self):
        sent = []

        def fake(endpoint, request, reason):
            sent.append(request)
            return stepgate._rpc.HttpResponse(0, [("x-stepgate-dry-run", "true")], b"")

        stepgate._rpc.http = fake
        answer = http.post("admin", "/flags", {"flag": "credits", "enabled": False, "n": [1, "é"]}, "runbook step 1")
        self.assertEqual(sent[0].body, '{"enabled":false,"flag":"credits","n":[1,"é"]}'.encode())
        self.assertEqual(sent[0].headers, [("content-type", "application/json")])
        self.assertTrue(answer.dry_run and answer.ok())
        self.assertEqual(json.loads(sent[0].body)["flag"], "credits")

    def test_every_verb_and_a_query_encoded_for_you(self):
        sent = []

        def fake(endpoint, request, reason):
            sent.append((request, reason))
            return stepgate._rpc.HttpResponse(200, [], b"{}")

        stepgate._rpc.http = fake
        http.get("queue", "/jobs", {"state": "failed", "q": "a b&c=d/é"})
        http.get("queue", "/jobs?x=1", [("y", 2)])
        http.put("queue", "/jobs/1", {"state": "retry"}, "retry it")
        http.patch("queue", "/jobs/1", {"state": "retry"}, "retry it")
        http.delete("queue", "/jobs/1", "drop it")
        self.assertEqual(sent[0][0].path, "/jobs?state=failed&q=a%20b%26c%3Dd%2F%C3%A9")
        self.assertEqual(sent[1][0].path, "/jobs?x=1&y=2")
        self.assertEqual([r.method for r, _ in sent], ["GET", "GET", "PUT", "PATCH", "DELETE"])
        self.assertEqual(sent[4][0].body, b"")
        self.assertEqual(sent[4][1], "drop it")
        self.assertEqual(stepgate.json_text({"b": 1, "a": Decimal("1.50")}), '{"a":"1.50","b":1}')


class Fates(unittest.TestCase):
    def test_a_fate_never_claims_a_write_that_was_not_made(self):
        def refused():
            raise stepgate.Error("denied", "denied by alice: not now")

        def failed():
            raise stepgate.Error("backend", "timeout")

        self.addCleanup(setattr, stepgate._runbook, "dry_run", stepgate._runbook.dry_run)
        for dry_run, write, said in [
            (False, lambda: "old", "halted"),
            (True, lambda: "old", "would be halted (dry run)"),
            (False, refused, "NOT halted (refused: denied: denied by alice: not now)"),
            (False, failed, "NOT halted (failed: backend: timeout)"),
        ]:
            stepgate._runbook.dry_run = lambda d=dry_run: d
            fate = stepgate.Fate.of(write)
            self.assertEqual(fate.say("halted"), said)
            self.assertEqual(fate.passed(), said in ("halted", "would be halted (dry run)"))
        with self.assertRaises(ZeroDivisionError):
            stepgate.Fate.of(lambda: 1 / 0)


class Json(unittest.TestCase):
    def test_read_as_strictly_as_serde_json(self):
        self.assertEqual(stepgate._parse_json(b'{"a":[1,2.5,"x"]}'), {"a": [1, 2.5, "x"]})
        for bad in [b'{"n":NaN}', b"\xef\xbb\xbf{}", b"[" * 200 + b"]" * 200, b"\xff"]:
            with self.assertRaises(Error, msg=bad[:10]) as raised:
                stepgate._parse_json(bad)
            self.assertEqual(raised.exception.kind, "invalid")

    def test_written_as_serde_json_writes_it(self):
        self.assertEqual(stepgate._json({"b": Decimal("1E-7"), "a": [True, None]}), '{"a":[true,null],"b":"0.0000001"}')
        with self.assertRaises(Error):
            stepgate._json({"x": float("nan")})


class Export(unittest.TestCase):
    def world(self, run):
        class P(stepgate.Playbook):
            def describe(self):
                return Description("p", "1").answers("A").db_read("ledger").http("admin", "POST /x").page("ceo")

        P.run = lambda self, alert: run(alert)
        return stepgate.export(P)()

    def alert(self):
        return t.Alert("A", t.AlertStatus.FIRING, [("alertname", "A"), ("severity", "critical")], [], None, "fp")

    def test_alert_start_times_are_utc_milliseconds(self):
        for starts_at, expected in [
            ("2026-11-23T09:00:00Z", 1_795_424_400_000),
            ("2024-02-29T12:30:15.250Z", 1_709_209_815_250),
            ("2026-11-23T09:00:00+02:00", None),
            ("yesterday", None),
            (None, None),
        ]:
            wit = t.Alert("A", t.AlertStatus.FIRING, [], [], starts_at, None)
            self.assertEqual(stepgate.Alert(wit).starts_at_ms(), expected, starts_at)

    def test_an_address_label_is_checked_and_never_defaulted(self):
        def alert(labels):
            return stepgate.Alert(t.Alert("A", t.AlertStatus.FIRING, labels, [], None, None))

        wallet = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"
        self.assertEqual(alert([("wallet", wallet)]).address("wallet"), wallet.lower())
        with self.assertRaises(stepgate.Error) as raised:
            alert([]).address("wallet")
        self.assertIn("no `wallet` label", raised.exception.message())
        for bad in ["0x1234", "ab" * 20, "0x" + "zz" * 20]:
            with self.assertRaises(stepgate.Error):
                alert([("wallet", bad)]).address("wallet")

    def test_a_setting_is_a_positive_whole_annotation_or_its_default(self):
        def alert(annotations):
            return stepgate.Alert(t.Alert("A", t.AlertStatus.FIRING, [], annotations, None, None))

        self.assertEqual(alert([]).setting("lookback", 7), 7)
        self.assertEqual(alert([("lookback", "120")]).setting("lookback", 7), 120)
        for bad in ["0", "-3", "1.5", "²", "many", "9" * 20, "9" * 5000]:
            with self.assertRaises(stepgate.Error) as raised:
                alert([("lookback", bad)]).setting("lookback", 7)
            self.assertIn("`lookback`", raised.exception.message())

    def test_describe_and_an_outcome(self):
        world = self.world(lambda alert: Outcome(f"{alert.label('severity')}").severity("SEV-1").field("held", Decimal("1.50")).todo("x"))
        described = world.describe()
        self.assertEqual(described.alerts, ["A"])
        self.assertEqual(described.capabilities[1], t.Capability_Rpc(t.RpcMethod("admin", "POST /x")))
        self.assertEqual(world.run(self.alert()), t.Outcome("critical", "SEV-1", [("held", t.Value_Decimal("1.50"))], ["x"]))

    def test_every_exception_becomes_a_clean_playbook_error(self):
        def boom(alert):
            raise ValueError("the ledger does not add up")

        def timeout(alert):
            raise Error("timeout", "10s")

        for run, expected in [
            (boom, t.Error_Failed("ValueError: the ledger does not add up")),
            (timeout, t.Error_Timeout("10s")),
            (lambda alert: "done", t.Error_Failed("run() returned str, not an Outcome")),
        ]:
            with self.assertRaises(Err) as raised:
                self.world(run).run(self.alert())
            self.assertEqual(raised.exception.value, expected)


class Sandbox(unittest.TestCase):
    def test_files_sockets_and_processes_raise_permission_errors_naming_the_capability(self):
        # In a process of its own: sealing changes the interpreter.
        program = """
import json, os, socket, subprocess, stepgate
stepgate._seal()
said = {}
for name, attempt in [
    ("open", lambda: open("/etc/hostname")),
    ("listdir", lambda: os.listdir("/")),
    ("connect", lambda: socket.create_connection(("127.0.0.1", 9))),
    ("run", lambda: subprocess.run(["true"])),
    ("system", lambda: os.system("true")),
]:
    try:
        attempt()
        said[name] = "allowed"
    except OSError as e:
        said[name] = f"{type(e).__name__}: {e}"
print(json.dumps(said))
"""
        out = subprocess.run(
            [sys.executable, "-c", program], check=True, capture_output=True, text=True, env={"PYTHONPATH": ":".join(sys.path[:2])}
        ).stdout
        said = json.loads(out)
        self.assertEqual(said["open"], "PermissionError: open(): no files in a playbook: read through db or rpc, keep state in flags")
        self.assertIn("no files in a playbook", said["listdir"])
        self.assertIn("no sockets in a playbook: call endpoints through rpc", said["connect"])
        self.assertIn("no processes in a playbook", said["run"])
        self.assertIn("no processes in a playbook", said["system"])


if __name__ == "__main__":
    unittest.main()
