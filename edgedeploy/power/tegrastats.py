"""Parse one line of ``tegrastats`` output into a typed sample.

tegrastats is the only power source on Jetson (NVML does not exist there) and its format
changed with every JetPack: JetPack 4 prints rails without units (``POM_5V_IN 1750/1628``),
JetPack 5/6 print ``current/average`` in mW and newer releases ``current/average/maximum``;
CPU cores can read ``off``; Thor prints ``CPU [0%,5%,off]@2601`` and ``GR3D_FREQ @[..]``
without a utilisation; temperatures may carry two values; a timestamp may lead the line.
No maintained Python library parses all of these without pulling in a daemon (jetson-stats),
so this is a small hand-written tokenizer. Unknown tokens are kept in ``other``, never fatal.

A line cut short (tegrastats killed mid-write, a full disk: ``RAM 4722/30536``) keeps the fields it
holds whole. A rail is a name with ``current/average[/maximum]``, unitless on JetPack 4, so a memory
field cut before its unit looks like one: the fields of :data:`NOT_RAILS` are never rails, and one
whose value is unreadable is dropped (``other``). A line with no whole field left raises ValueError,
and the bundle's helper (device/tegrastats_power.py, whose fallback parser has the same list) skips
it. A rail's value cut after its current (``VDD_IN 5704mW/57``) still gives the right current.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["NOT_RAILS", "CpuCore", "Rail", "TegrastatsSample", "parse_line"]

# fields whose value can read "number/number" with its unit cut off: memory (RAM, SWAP, IRAM: used/total)
# and the clocks; never a power rail, whatever follows them (device/tegrastats_power.py has the same)
NOT_RAILS = frozenset({"RAM", "SWAP", "IRAM", "EMC_FREQ", "GR3D_FREQ"})

_TIMESTAMP = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")
_MEM = re.compile(r"^(\d+)/(\d+)([kKMG]B)$")
_PAREN = re.compile(r"^\((?:lfb|cached)")
_CORE = re.compile(r"^(\d+(?:\.\d+)?)%(?:@(\d+))?$")
_LOAD_AT = re.compile(r"^(?:(\d+(?:\.\d+)?)%)?(?:@\[?([\d,\s]*)\]?)?$")
_TEMP = re.compile(r"^([A-Za-z][\w.-]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?$")
_RAIL_VALUE = re.compile(r"^(\d+(?:\.\d+)?)(mW|W)?/(\d+(?:\.\d+)?)(mW|W)?(?:/(\d+(?:\.\d+)?)(mW|W)?)?$")
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FREQ = re.compile(r"^(?:(\d+)%)?@?(\d+)$")


@dataclass(frozen=True)
class CpuCore:
    online: bool
    load_percent: float | None = None
    freq_mhz: int | None = None


@dataclass(frozen=True)
class Rail:
    """One power rail in milliwatts: the instant value, tegrastats' running average, its maximum."""

    current_mw: float
    average_mw: float
    max_mw: float | None = None
    units: str = "mW"  # "none (mW assumed)" on JetPack 4 lines


@dataclass
class TegrastatsSample:
    timestamp: str | None = None
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    swap_used_mb: float | None = None
    swap_total_mb: float | None = None
    swap_cached_mb: float | None = None
    cpus: list[CpuCore] = field(default_factory=list)
    emc_load_percent: float | None = None
    emc_freq_mhz: int | None = None
    gpu_load_percent: float | None = None  # None where the line has no utilisation (Thor)
    gpu_freq_mhz: list[int] = field(default_factory=list)  # one per GPC on Orin/Thor
    temperatures_c: dict[str, float] = field(default_factory=dict)  # current value
    rails: dict[str, Rail] = field(default_factory=dict)
    engines: dict[str, str] = field(default_factory=dict)  # NVDEC off, APE 200, VIC_FREQ 601 ...
    other: list[str] = field(default_factory=list)  # tokens this parser does not know

    @property
    def cpu_online(self) -> int:
        return sum(1 for c in self.cpus if c.online)


def _mb(value: str, unit: str) -> float:
    scale = {"kB": 1 / 1024, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[unit]
    return float(value) * scale


def _mw(value: str, unit: str | None) -> float:
    return float(value) * (1000.0 if unit == "W" else 1.0)


def _parse_cpus(token: str) -> list[CpuCore]:
    """``[5%@1224,off]`` or Thor's ``[0%,5%,off]@2601`` (one clock for every core)."""
    body, _, shared = token.partition("]")
    shared_freq = int(shared[1:]) if shared.startswith("@") and shared[1:].isdigit() else None
    cores = []
    for part in body.lstrip("[").split(","):
        part = part.strip()
        if part == "off":
            cores.append(CpuCore(online=False))
            continue
        m = _CORE.match(part)
        if not m:
            raise ValueError(f"unreadable CPU core '{part}'")
        freq = int(m.group(2)) if m.group(2) else shared_freq
        cores.append(CpuCore(online=True, load_percent=float(m.group(1)), freq_mhz=freq))
    return cores


def _load_at(token: str) -> tuple[float | None, list[int]] | None:
    """``4%@2133``, ``0%@[305]``, ``87%@[1574,1574]``, ``@[1574]``, ``@4266``, ``99%``."""
    if not token or token == "off":
        return None
    m = _LOAD_AT.match(token)
    if not m or (m.group(1) is None and m.group(2) is None):
        return None
    load = float(m.group(1)) if m.group(1) is not None else None
    freqs = [int(f) for f in (m.group(2) or "").replace(" ", "").split(",") if f.isdigit()]
    return load, freqs


def parse_line(line: str) -> TegrastatsSample:
    """Parse one tegrastats line; raise ValueError for a line that carries no tegrastats field."""
    text = line.strip()
    sample = TegrastatsSample()
    m = _TIMESTAMP.match(text)
    if m:
        sample.timestamp = m.group(1)
        text = text[m.end() :]
    tokens = text.split()
    known = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "IRAM":  # "IRAM 0/252kB(lfb 252kB)": on-chip RAM, not useful for us
            i += 2
            if "(" in nxt and not nxt.endswith(")"):
                i += 1
            continue
        mem = _MEM.match(nxt)
        if tok in ("RAM", "SWAP") and not mem:  # cut short ("RAM 4722/30536"): dropped, not a rail
            sample.other.extend(tokens[i : i + 2])
            i += 2
            continue
        if tok in ("RAM", "SWAP") and mem:
            used, total, unit = mem.groups()
            if tok == "RAM":
                sample.ram_used_mb, sample.ram_total_mb = _mb(used, unit), _mb(total, unit)
            else:
                sample.swap_used_mb, sample.swap_total_mb = _mb(used, unit), _mb(total, unit)
            i += 2
            # "(lfb 3x2MB)" or "(cached 5MB)" follow as two tokens
            if i + 1 < len(tokens) and _PAREN.match(tokens[i]):
                cached = re.match(r"^(\d+)([kKMG]B)\)$", tokens[i + 1])
                if tokens[i] == "(cached" and cached:
                    sample.swap_cached_mb = _mb(cached.group(1), cached.group(2))
                i += 2
            known += 1
            continue
        if tok == "CPU" and nxt.startswith("["):
            sample.cpus = _parse_cpus(nxt)
            known += 1
            i += 2
            continue
        if tok in ("EMC_FREQ", "GR3D_FREQ") and (parsed := _load_at(nxt)) is not None:
            load, freqs = parsed
            if tok == "EMC_FREQ":
                sample.emc_load_percent = load
                sample.emc_freq_mhz = freqs[0] if freqs else None
            else:
                sample.gpu_load_percent = load
                sample.gpu_freq_mhz = freqs
            known += 1
            i += 2
            continue
        tm = _TEMP.match(tok)
        if tm:
            sample.temperatures_c[tm.group(1)] = float(tm.group(2))
            known += 1
            i += 1
            continue
        rv = _RAIL_VALUE.match(nxt)
        if _NAME.match(tok) and rv and tok not in NOT_RAILS:
            cur, cu, avg, au, mx, mu = rv.groups()
            unitless = cu is None and au is None
            sample.rails[tok] = Rail(
                current_mw=_mw(cur, cu),
                average_mw=_mw(avg, au),
                max_mw=_mw(mx, mu) if mx is not None else None,
                units="none (mW assumed)" if unitless else "mW",
            )
            known += 1
            i += 2
            continue
        if _NAME.match(tok) and (nxt == "off" or _FREQ.match(nxt) or nxt.startswith("@")):
            sample.engines[tok] = nxt
            i += 2
            continue
        sample.other.append(tok)
        i += 1
    if known == 0:
        raise ValueError(f"not a tegrastats line: {line.strip()[:80]!r}")
    return sample
