"""`lowbuild doctor`: can each engine build and run here, and if not, why and how to fix it.

- `facts`: what this host is (user, cgroups, rlimits, containers.conf, storage.conf,
  subordinate ids, kernel, network helpers), read once from files; no engine runs.
- `checks`: pure checks over those facts, each a `Check` with its fix.
- `diagnosis`: a table of rules that classify an engine's error message into known causes.
- `probes`: runs each engine (version, base image, a trivial build and run) and collects
  one `EngineReport` per engine.

The table `lowbuild doctor` prints is `lowbuild.run.report.doctor_table`.
"""

from lowbuild.doctor.checks import Check
from lowbuild.doctor.facts import HostFacts, read_host_facts
from lowbuild.doctor.probes import EngineReport, examine_engines, require_working

__all__ = [
    "Check",
    "EngineReport",
    "HostFacts",
    "examine_engines",
    "read_host_facts",
    "require_working",
]
