"""Host probe sent through an execnet gateway (remote_exec of this module's source).

Self-contained on purpose: the remote host needs only a Python 3 interpreter, not this
package. Receives {"interface": NAME}; sends back the host fingerprint as a dict of plain
types. Also runnable in-process via probe(interface). Where the package is importable (netns
pairs, hosts with it installed) the SIOCETHTOOL ioctl stands in for a missing `ethtool` CLI.
"""
import os
import platform
import shutil
import subprocess

try:
    from pytest_kvfabric.transports import ethtool_ioctl
except ImportError:  # a bare remote Python: the ethtool CLI or nothing
    ethtool_ioctl = None

OFFLOAD_NAMES = {
    "generic-receive-offload": "gro",
    "generic-segmentation-offload": "gso",
    "tcp-segmentation-offload": "tso",
    "large-receive-offload": "lro",
    "rx-checksumming": "rx_csum",
    "tx-checksumming": "tx_csum",
    "scatter-gather": "sg",
}


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _run(args):
    if shutil.which(args[0]) is None:
        return None
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def _cpu_model():
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _nic(ifname):
    base = "/sys/class/net/" + ifname
    info = {"name": ifname, "mtu": None, "driver": None, "driver_version": None,
            "firmware": None, "bus_info": None, "speed_mbit": None, "offloads": {}}
    mtu = _read(base + "/mtu")
    info["mtu"] = int(mtu) if mtu and mtu.isdigit() else None
    speed = _read(base + "/speed")
    info["speed_mbit"] = int(speed) if speed and speed.lstrip("-").isdigit() and int(speed) > 0 else None
    out = _run(["ethtool", "-i", ifname])
    if out:
        keys = {"driver": "driver", "version": "driver_version",
                "firmware-version": "firmware", "bus-info": "bus_info"}
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in keys and v.strip():
                info[keys[k.strip()]] = v.strip()
    ioctl = _ioctl_facts(ifname) if out is None or shutil.which("ethtool") is None else None
    if info["driver"] is None and ioctl:
        info["driver"] = ioctl[0].get("driver") or None
        info["driver_version"] = ioctl[0].get("version") or None
        info["firmware"] = ioctl[0].get("firmware-version") or None
    if info["driver"] is None:
        drv = base + "/device/driver"
        if os.path.islink(drv):
            info["driver"] = os.path.basename(os.readlink(drv))
    out = _run(["ethtool", "-k", ifname])
    if out:
        for line in out.splitlines():
            k, _, v = line.partition(":")
            short = OFFLOAD_NAMES.get(k.strip())
            if short and v.strip():
                info["offloads"][short] = v.split()[0]
    elif ioctl:
        info["offloads"] = dict(ioctl[1])
    else:
        info["offloads_error"] = "ethtool -k unavailable"
    return info


def _rail(ifname, interfaces):
    if ifname not in interfaces:
        return None
    info = _nic(ifname)
    node = _read("/sys/class/net/" + ifname + "/device/numa_node")
    info["numa_node"] = int(node) if node and node.lstrip("-").isdigit() and int(node) >= 0 else None
    if info["numa_node"] is not None:
        info["numa_cpus"] = _read("/sys/devices/system/node/node%d/cpulist" % info["numa_node"])
    return info


def _ioctl_facts(ifname):
    if ethtool_ioctl is None:
        return None
    try:
        with ethtool_ioctl.socket_in_netns(None) as s:
            return ethtool_ioctl.drvinfo(s, ifname), ethtool_ioctl.get_offloads(s, ifname)
    except (OSError, ValueError):
        return None


def probe(interface, rails=None):
    ifname = interface or "lo"
    try:
        interfaces = sorted(os.listdir("/sys/class/net"))
    except OSError:
        interfaces = []
    found = ifname in interfaces
    result = {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "interfaces": interfaces,
        "interface_found": found,
        "nic": _nic(ifname) if found else None,
        "cpus_allowed": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    if rails:  # every rail's NIC (driver, firmware, MTU, NUMA node); None for one not found
        result["rails"] = [_rail(name, interfaces) for name in rails]
    return result


if __name__ == "__channelexec__":
    request = channel.receive()  # noqa: F821 - provided by execnet
    channel.send(probe(request.get("interface"), request.get("rails")))  # noqa: F821
