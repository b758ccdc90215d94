"""A fake CNI plugin for unit tests: records its environment and stdin, answers like a plugin.

ADD appends the plugin's "addr" to the previous result's ips; "fail": "<COMMAND>" makes that
command fail with a CNI error; "hang": true sleeps past any test's time limit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FAKE = """#!{python}
import json, os, sys
conf = json.load(sys.stdin)
with open({log!r}, "a") as f:
    f.write(json.dumps({{"env": {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}, "conf": conf}}) + "\\n")
if conf.get("fail") == os.environ["CNI_COMMAND"]:
    print(json.dumps({{"cniVersion": "1.0.0", "code": 7, "msg": "no way", "details": "fake"}}))
    sys.exit(1)
if conf.get("hang"):
    import time; time.sleep(30)
if os.environ["CNI_COMMAND"] == "ADD":
    prev = conf.get("prevResult") or {{"cniVersion": "1.0.0", "ips": []}}
    prev["ips"] = prev["ips"] + [{{"address": conf["addr"]}}] if "addr" in conf else prev["ips"]
    print(json.dumps(prev))
"""


def install_fake_plugins(directory: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    """Writes one fake plugin for each name; the directory and the call log."""
    log = directory / "calls.log"
    for name in names:
        p = directory / name
        p.write_text(FAKE.format(python=sys.executable, log=str(log)))
        p.chmod(0o755)
    return directory, log


def calls(log: Path) -> list[dict[str, Any]]:
    """Every call the fake plugins received, in order."""
    return [json.loads(line) for line in log.read_text().splitlines()]
