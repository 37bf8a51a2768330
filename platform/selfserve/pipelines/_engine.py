"""A run's process: confine it, then hand over to Prefect's engine (``python -m prefect.engine``).

Landlock leaves it reading its working directory (the run's code, read-write), the Python
installation and a few system files; other projects' files, the platform's home and other
processes' ``/proc`` entries are out of reach. Network stays open: the run reports to the API.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

# Name resolution, TLS roots and time zones, which HTTP clients and pandas read.
SYSTEM_READABLE = (
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/usr/share/zoneinfo",
    "/etc/passwd",
    "/etc/group",
    "/etc/mime.types",
)


def main() -> None:
    from selfserve.data._landlock import confine

    confined = confine(Path.cwd(), network=True, readable=SYSTEM_READABLE)
    print(
        f"selfserve: run confined with Landlock: {'yes' if confined else 'no (the kernel has no Landlock)'}",
        file=sys.stderr,
    )
    # Only now, confined, may the run's own modules be imported (started with -I, so not before).
    sys.path.insert(0, str(Path.cwd()))
    sys.argv = ["prefect.engine"]
    runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
