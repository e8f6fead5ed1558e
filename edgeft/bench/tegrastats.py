"""Jetson memory and power from ``tegrastats``: on Jetson, NVML and nvidia-smi report no memory, and the GPU
shares system RAM, so RAM in use sampled during a run is the memory figure that matters.

Formats differ by JetPack: Orin (JetPack 5/6) prints rails as ``VDD_IN 5251mW/8535mW`` and temperatures
in lower case (``cpu@48.5C``); Xavier/Nano on JetPack 4 print ``POM_5V_IN 2164/2164`` and ``GR3D_FREQ 0%@76``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Any

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"(\d+)%@(\d+)")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL_MW = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW")
_RAIL_PLAIN = re.compile(r"\b((?:POM_|VDD_)?[A-Z][A-Z0-9_]*) (\d+)/(\d+)(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}


def parse_line(line: str) -> dict[str, Any]:
    """One tegrastats line as numbers; fields a module does not print are absent."""
    out: dict[str, Any] = {}
    if m := _RAM.search(line):
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        out["swap_used_mb"], out["swap_total_mb"] = int(m.group(1)), int(m.group(2))
    if m := _CPU.search(line):
        cores = []
        for part in m.group(1).split(","):
            c = _CORE.fullmatch(part.strip())
            cores.append({"load_pct": int(c.group(1)), "freq_mhz": int(c.group(2))} if c else None)  # "off"
        out["cpu"] = cores
    if m := _GR3D.search(line):
        out["gpu_load_pct"] = int(m.group(1))
        if m.group(2):
            out["gpu_freq_mhz"] = [int(f) for f in m.group(2).split(",")]
    temps = {name: float(v) for name, v in _TEMP.findall(line) if not name.isdigit()}
    temps = {k: v for k, v in temps.items() if v > -200}  # -256C marks an absent sensor
    if temps:
        out["temps_c"] = temps
    rails = {name: {"now_mw": int(a), "avg_mw": int(b)} for name, a, b in _RAIL_MW.findall(line)}
    if not rails:  # JetPack 4: no units
        tail = line[line.find("C ", line.rfind("@")) + 1:] if "@" in line else line
        rails = {name: {"now_mw": int(a), "avg_mw": int(b)} for name, a, b in _RAIL_PLAIN.findall(tail)
                 if name not in _NOT_RAILS}
    if rails:
        out["power_mw"] = rails
    return out


@dataclass
class TegrastatsSampler:
    """Runs ``tegrastats --interval MS`` during a benchmark and keeps the parsed lines."""

    interval_ms: int = 100
    executable: str = "tegrastats"
    samples: list[dict[str, Any]] = field(default_factory=list)

    @staticmethod
    def available(executable: str = "tegrastats") -> bool:
        return shutil.which(executable) is not None

    def __enter__(self) -> "TegrastatsSampler":
        self._proc = subprocess.Popen([self.executable, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            parsed = parse_line(line)
            if parsed:
                self.samples.append(parsed)

    def __exit__(self, *exc) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any]:
        ram = [s["ram_used_mb"] for s in self.samples if "ram_used_mb" in s]
        gpu = [s["gpu_load_pct"] for s in self.samples if "gpu_load_pct" in s]
        out: dict[str, Any] = {"samples": len(self.samples)}
        if ram:
            out.update(ram_used_peak_mb=max(ram), ram_used_mean_mb=round(sum(ram) / len(ram), 1),
                       ram_total_mb=self.samples[-1].get("ram_total_mb"))
        if gpu:
            out["gpu_load_mean_pct"] = round(sum(gpu) / len(gpu), 1)
        rails = [s["power_mw"] for s in self.samples if "power_mw" in s]
        if rails:
            names = rails[-1].keys()
            out["power_mean_mw"] = {n: round(sum(r[n]["now_mw"] for r in rails if n in r) /
                                             max(1, sum(n in r for r in rails)), 1) for n in names}
        return out
