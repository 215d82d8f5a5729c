"""CPU accounting per component and for the rest of the (shared) machine."""

from __future__ import annotations

import contextlib
import resource
import time
import urllib.parse
import urllib.request

import psutil


# --- CPU accounting ----------------------------------------------------------------------------
class Cpu:
    """CPU seconds of this benchmark's processes, by component, and of the whole machine."""

    def __init__(self, url: str, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        me = psutil.Process()
        for child in me.children():
            with contextlib.suppress(psutil.Error):
                if "clipembed.testing.fakeopenai" in " ".join(child.cmdline()):
                    self.pids["fake_provider"] = child.pid
        host = urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("host", [""])[0]
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if host and "-D" in cmd and host in cmd:
                self.pids["postgres"] = proc.pid

    @staticmethod
    def _tree(pid: int) -> float:
        try:
            procs = [psutil.Process(pid)]
            procs += procs[0].children(recursive=True)
        except psutil.Error:
            return 0.0
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def snapshot(self) -> dict[str, float]:
        out = {name: self._tree(pid) for name, pid in self.pids.items()}
        me = psutil.Process().cpu_times()
        out["bench_and_load_generator"] = me.user + me.system
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # the clipembed commands, once exited
        out["clipembed_commands"] = ru.ru_utime + ru.ru_stime
        m = psutil.cpu_times()
        out["machine"] = m.user + m.nice + m.system + m.irq + m.softirq + m.steal
        out["t"] = time.monotonic()
        return out

    @staticmethod
    def cores(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        """Average cores used between two snapshots; ``others``: the machine minus this run."""
        seconds = b["t"] - a["t"]
        out = {k: round((b[k] - a[k]) / seconds, 2) for k in a if k != "t"}
        mine = sum(v for k, v in out.items() if k != "machine")
        out["others_on_the_machine"] = round(max(0.0, out["machine"] - mine), 2)
        out["seconds"] = round(seconds, 1)
        return out
