"""A tenant's app that looks for what it should not reach: the platform's files, Ray, other
processes. It reports what it found; the platform must leave it finding nothing but its own."""

import glob
import os
from pathlib import Path

import fal


def _readable(pattern: str) -> list[str]:
    found = []
    for path in glob.glob(pattern, recursive=True):
        try:
            Path(path).read_bytes()[:1]
            found.append(path)
        except OSError:
            continue
    return found


class Snoop(fal.App, keep_alive=60):
    machine_type = "XS"

    @fal.endpoint("/")
    def look(self, home: str = "", ray_temp: str = "") -> dict:
        environment = sorted(os.environ)
        try:
            import ray

            ray.init(address="auto", log_to_driver=False)
            reached_ray = True
        except Exception:
            reached_ray = False
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        return {
            "platform_files": _readable(f"{home}/**") if home else [],
            "ray_files": _readable(f"{ray_temp}/**/*.json") + _readable(os.path.expanduser("~/.ray/*"))
            + _readable("/root/.ray/*"),
            "pids": pids,
            "reached_ray": reached_ray,
            "secret": os.environ.get("SNOOP_SECRET"),
            "environment": environment,
            "data_writable": os.access("/data", os.W_OK),
            "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
            "data_owner": os.stat("/data").st_uid,
            "capabilities": int(next(line for line in open("/proc/self/status") if line.startswith("CapEff")).split()[1], 16),
        }
