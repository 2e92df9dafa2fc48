"""Power and energy per inference: tegrastats (Jetson), NVML (desktop GPU), RAPL (Linux CPU).

No peer tool measures energy per inference; this package does it beside profiling, and says
"not measurable here" (never zero) where the machine has no readable power source.
"""

from edgedeploy.power.monitor import PowerMonitor, PowerResult
from edgedeploy.power.tegrastats import TegrastatsSample, parse_line

__all__ = ["PowerMonitor", "PowerResult", "TegrastatsSample", "parse_line"]
