"""A Python playbook that misbehaves on purpose, by the alert's `mode`
label: `raise` (an exception escapes run), `page` (pages, and lets any
error escape), `spin` (never returns),
anything else finishes. It declares a page to `ceo`: loaded without that
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
        return Outcome("all good")


WitWorld = stepgate.export(Hostile)
