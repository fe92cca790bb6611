"""What changed between two reports' environments (pure): kernel, NIC driver and firmware, MTU,
offloads, package versions, and the host pair the cases ran on.

A gate verdict is only as fair as the comparison: a different pair (a netns pair against
loopback, another lab host) changes the figures as much as a firmware upgrade does, so the
pair difference is a warning of its own, printed above the verdicts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

IFACE_FIELDS = ("driver", "driver_version", "firmware", "mtu")
_NETNS_TAG = re.compile(r"^netns:[^-]+-\d+$")  # netns:<creator pid>-<index>: the pid changes every run


@dataclass(frozen=True)
class Difference:
    what: str  # "kernel", "interface[0].firmware", "packages.numpy", "pairs"...
    old: Any
    new: Any
    warning: bool = False  # the comparison itself is suspect (different pair)

    def line(self) -> str:
        mark = "WARNING: " if self.warning else ""
        return f"{mark}{self.what}: {_show(self.old)} -> {_show(self.new)}"


def _show(v: Any) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, (list, tuple, set, frozenset)):
        return ", ".join(sorted(map(str, v))) or "(none)"
    return str(v)


def pair_label(name: str | None) -> str | None:
    """A pair's name without the per-run namespace tag (netns:1234-0 -> netns)."""
    if name and _NETNS_TAG.match(name):
        return "netns"
    return name


def _pairs(report: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(filter(None, (pair_label(r.get("pair")) for r in report.get("results", []))))


def _iface_key(iface: Mapping[str, Any], i: int) -> str:
    # Namespace interfaces are named per run; match them by position, real NICs by name.
    return f"interface[{i}]" if iface.get("netns") else f"interface {iface.get('name')}"


def _flat_ifaces(env: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, iface in enumerate(env.get("interfaces") or ()):
        key = _iface_key(iface, i)
        for f in IFACE_FIELDS:
            out[f"{key}.{f}"] = iface.get(f)
        for k, v in (iface.get("offloads") or {}).items():
            out[f"{key}.offload {k}"] = v
    return out


def host_label(name: str) -> str:
    """A host fingerprint's key without the per-run namespace tag (netns:1234-0/decode -> netns/decode)."""
    head, sep, role = name.partition("/")
    return f"{pair_label(head)}{sep}{role}"


def _host_nics(fp: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A host's data-plane NICs as its probe saw them: `nic`, then each rail's (fabric/_probe.py).
    Its `interfaces` is only the list of names present."""
    nics = [fp["nic"]] if isinstance(fp.get("nic"), Mapping) else []
    return nics + [r for r in fp.get("rails") or () if isinstance(r, Mapping)]


def _flat_hosts(env: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for host, fp in (env.get("hosts") or {}).items():
        if not isinstance(fp, Mapping):
            continue
        host = host_label(host)
        out[f"host {host}.kernel"] = fp.get("kernel")
        for i, nic in enumerate(_host_nics(fp)):
            key = f"host {host}.nic[{i}]" if host.startswith("netns") else f"host {host}.nic {nic.get('name')}"
            for f in IFACE_FIELDS:
                out[f"{key}.{f}"] = nic.get(f)
            for k, v in (nic.get("offloads") or {}).items():
                out[f"{key}.offload {k}"] = v
    return out


def _changed(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterable[Difference]:
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            yield Difference(f"{prefix}{k}", old.get(k), new.get(k))


def diff(old_report: Mapping[str, Any], new_report: Mapping[str, Any]) -> list[Difference]:
    """Every environment difference, pair differences first (they are warnings)."""
    out: list[Difference] = []
    so, sn = old_report.get("session") or {}, new_report.get("session") or {}
    if so.get("fabric") != sn.get("fabric"):
        out.append(Difference("fabric", so.get("fabric"), sn.get("fabric"), warning=True))
    if (so.get("netns") or {}) != (sn.get("netns") or {}):
        out.append(Difference("netns pair options", so.get("netns") or {}, sn.get("netns") or {}, warning=True))
    po, pn = _pairs(old_report), _pairs(new_report)
    if po and pn and po != pn:
        out.append(Difference("pairs", po, pn, warning=True))
    eo, en = old_report.get("environment") or {}, new_report.get("environment") or {}
    for f in ("kernel", "virtualized", "cpu_model", "cpus", "python"):
        if eo.get(f) != en.get(f):  # another machine, or emulation (the lab's TCG), moves every timing
            out.append(Difference(f, eo.get(f), en.get(f), warning=f in ("virtualized", "cpu_model", "cpus")))
    out += _changed("", _flat_ifaces(eo), _flat_ifaces(en))
    out += _changed("", _flat_hosts(eo), _flat_hosts(en))
    out += _changed("package ", eo.get("packages") or {}, en.get("packages") or {})
    return sorted(out, key=lambda d: not d.warning)


def ran_under_tcg(*reports: Mapping[str, Any]) -> bool:
    return any((r.get("environment") or {}).get("virtualized") == "tcg" for r in reports)


def render(diffs: list[Difference], tcg: bool = False) -> str:
    """The differences, one per line; `tcg`: a side ran under software emulation (the lab)."""
    if tcg:
        note = ("  WARNING: a side ran under TCG (software emulation): its timings are not meaningful, "
                "so timing verdicts are undecided (not judged)")
        return render(diffs) + "\n" + note
    if not diffs:
        return "environment: no difference from the baseline (kernel, NIC, MTU, offloads, packages, pair)"
    lines = ["environment changes since the baseline:"] + [f"  {d.line()}" for d in diffs]
    if any(d.warning for d in diffs):
        lines.append("  WARNING: the baseline ran on a different pair or machine: "
                     "its figures may differ for that reason alone")
    return "\n".join(lines)
