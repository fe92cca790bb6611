"""The plugin's options: one table drives the command-line flags and their ini keys, and
`resolve()` turns raw values into a validated Selection (bad values name what is valid)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ProfileError
from ..core.limits import MAX_POOL_MIB, MAX_SEED, MAX_TIMEOUT_S, check_number
from ..core.outpath import check_output_path
from ..core.profiles import GpuProfile, ModelProfile
from ..core.scenario import DEFAULT_POOL_MIB, PACINGS
from ..fabric.netns_options import parse_offloads
from ..fabric.select import FABRICS, known_fabric
ON_COPY = ("fail", "skip")
MAX_REPEAT = 1000


@dataclass(frozen=True)
class Opt:
    flag: str  # "--kv-transport"
    help: str
    metavar: str = "VALUE"
    append: bool = False  # repeatable flag; its ini key is a line list

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest


OPTIONS: tuple[Opt, ...] = (
    Opt("--kv-transport", "transports to run: comma list or 'all' (default: tcp)", "NAMES"),
    Opt("--kv-model", "models: comma list of profile ids/aliases, paths to profile YAML, or 'all' "
        "(default: each suite's models, else llama3.1-8b)", "NAMES"),
    Opt("--kv-gpu", "GPU profile id or path (default: the suite's gpu, else h100)", "NAME"),
    Opt("--kv-suite", "shipped or user suites to collect by name, comma list (e.g. smoke,chat)", "NAMES"),
    Opt("--kv-fabric", "where agents run: local (loopback), netns (two namespaces + veth, root), "
        "hosts (inventory of real host pairs)", "NAME"),
    Opt("--kv-hosts", "host-pair inventory YAML for --kv-fabric=hosts", "PATH"),
    Opt("--kv-slo", "SLO threshold KEY=VALUE, overrides suites and markers (repeatable)", "KEY=VALUE", append=True),
    Opt("--kv-seed", "seed for workloads and page patterns (default: the suite's, else 0)", "N"),
    Opt("--kv-json", "write the session's JSON report here", "PATH"),
    Opt("--kv-html", "write a self-contained HTML report (figures embedded) here, beside --kv-json", "PATH"),
    Opt("--kv-baseline", "fail cases that regressed against this earlier JSON report, or several reports "
        "(comma list), one per session, so the verdict knows the spread between sessions (README, gating an upgrade)",
        "PATH[,PATH...]"),
    Opt("--kv-max-regression", "allowed regression vs the baseline in percent: one number for every gated metric "
        "and/or METRIC=PCT items, e.g. throughput=5,latency_p99=10 (defaults per metric: README, gating an upgrade)",
        "PCT|METRIC=PCT,..."),
    Opt("--kv-save-baseline", "also write the JSON report here, to serve as a later baseline", "PATH"),
    Opt("--kv-profiles", "extra profile directory, searched before the shipped ones (repeatable)", "DIR", append=True),
    Opt("--kv-pool-mib", f"emulated HBM pool per agent in MiB (overrides suites and tests; default {DEFAULT_POOL_MIB})", "MIB"),
    Opt("--kv-pacing", "override pacing: emulated (layer by layer as the GPU computes) or none (as fast as possible)", "MODE"),
    Opt("--kv-timeout", "seconds a single case may take before it fails (default: derived from the scenario)", "SECONDS"),
    Opt("--kv-transport-param", "transport parameter KEY=VALUE, e.g. connections=2 or mode=send_zc (repeatable)",
        "KEY=VALUE", append=True),
    Opt("--kv-inject", "inject one fault per case to prove the checks catch it: corrupt, misplace, drop "
        "(integrity), kill, stall (agent death, timeout); every case should then fail", "FAULT"),
    Opt("--kv-on-copy", "when a scenario requires zero-copy and the kernel copied: fail (default) or skip", "fail|skip"),
    Opt("--kv-rdma-device", "RDMA device for the rdma transport (default: first active)", "DEVICE"),
    Opt("--kv-rdma-gid-index", "RoCE GID index (default: the RoCE v2 GID of the data-plane address)", "N"),
    Opt("--kv-rdma-tc", "RoCE traffic class (DSCP << 2) for QoS", "N"),
    Opt("--kv-netns-mtu", "MTU of the namespace veth pair (default 9000)", "N"),
    Opt("--kv-netns-rate-mbit", "shape the veth to this rate (tbf) to emulate a slower NIC", "MBIT"),
    Opt("--kv-netns-offloads", "veth offload toggles, e.g. gro=off,tso=on", "LIST"),
    Opt("--kv-repeat", "run each case N times on its pair; reports keep every repeat, the gate judges "
        "all of them (default 1; 5 or more for a gate that can decide)", "N"),
    Opt("--kv-gate-undecided", "what a baseline verdict of 'undecided' (noise wider than the threshold) does: "
        "pass (default, reported) or fail", "pass|fail"),
    Opt("--kv-default-suites", "suites collected when --kv-transport or --kv-model is given and the collection "
        "holds no KV-transfer case (comma list; default smoke; --kv-suite overrides)", "NAMES"),
    Opt("--kv-require-transport", "transports that must be available, else their cases fail instead of skipping: "
        "comma list, or 'named' for every transport named in --kv-transport (default: none)", "NAMES|named"),
    Opt("--kv-rails", "agents per instance and side, each on its own interface (rank k on rail k mod N); "
        "overrides suites (default: the scenario's rails, else 1)", "N"),
    Opt("--kv-netns-cpu-split", "on: each namespace gets half the CPUs, for its agent and its receive "
        "processing, as two hosts would (default off)", "on|off"),
)


@dataclass(frozen=True)
class Selection:
    transports: tuple[str, ...]
    models: tuple[ModelProfile, ...] | None  # None: not chosen by the user (suites decide)
    gpu: GpuProfile | None
    suites: tuple[Path, ...]
    fabric: str
    hosts: str | None
    slo: Mapping[str, Any]
    seed: int | None
    json_path: str | None
    baseline_path: str | None  # as given (one path or a comma list)
    max_regression_pct: float
    save_baseline: str | None
    profile_dirs: tuple[str, ...]
    pool_mib: float | None
    pacing: str | None
    timeout_s: float | None
    transport_params: Mapping[str, Any] = field(default_factory=dict)
    on_copy: str = "fail"
    netns: Mapping[str, Any] = field(default_factory=dict)
    repeat: int = 1  # --kv-repeat
    thresholds: Mapping[str, float] = field(default_factory=dict)  # --kv-max-regression, per gated metric
    gate_undecided: str = "pass"
    default_suites: tuple[str, ...] = ("smoke",)  # --kv-default-suites
    kv_asked: bool = False  # --kv-transport or --kv-model was given (CLI or ini)
    named_transports: tuple[str, ...] = ()  # named by the user, not by 'all' or the default
    require_transports: frozenset[str] = frozenset()  # --kv-require-transport, resolved to names
    warnings: tuple[str, ...] = ()  # options given that do not apply to this run (shown, not fatal)
    rails: int | None = None  # --kv-rails (None: each scenario's own)

    def header(self) -> str:
        models = ",".join(m.id for m in self.models) if self.models else "per suite (default llama3.1-8b)"
        gpu = self.gpu.id if self.gpu else "per suite (default h100)"
        return f"kvfabric: transports={','.join(self.transports)} models={models} gpu={gpu} fabric={self.fabric}"


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _number(name: str, text: Any, kind: Callable[[Any], Any], minimum: float | None = None,
            maximum: float | None = None) -> Any:
    """A typed option value; NaN, infinity and out-of-range values are refused naming the flag."""
    try:
        value = kind(text)
    except (TypeError, ValueError, OverflowError):
        raise ProfileError("<options>", name, f"expected {kind.__name__}, got {str(text)[:40]!r}") from None
    why = check_number(value, minimum, maximum)
    if why:
        raise ProfileError("<options>", name, why)
    return value


def transport_params(items: Sequence[str], name: str) -> dict[str, Any]:
    """KEY=VALUE texts -> typed values (YAML scalars: 2 -> int, true -> bool)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ProfileError("<options>", name, f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = _scalar(value.strip())
    return out


def _scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


Get = Callable[[str], Any]  # get(dest): the flag's value, else the ini value, else None


def resolve(get: Get, *, metrics: Any = None, fabrics: Sequence[str] = FABRICS) -> Selection:
    """Build the Selection. `get(dest)` returns the flag's value, else the ini value, else None.
    `metrics` (measure.metrics.MetricSet) and `fabrics` are the run's, plug-ins' included: they
    decide which SLO keys, --kv-max-regression keys and --kv-fabric names are valid.

    Each helper below validates one concern and returns the Selection fields it owns."""
    profile_dirs = _profile_dirs(get)
    fields: dict[str, Any] = {"profile_dirs": profile_dirs}
    fields.update(_transports(get))
    fields.update(_profiles(get, profile_dirs))
    fields.update(_fabric(get, fabrics))
    fields.update(_gate(get, metrics))
    fields.update(_run_knobs(get, metrics))
    _check_outputs(get)
    notes: list[str] = []
    fields["transport_params"] = _params(get, fields["transports"], notes)
    fields["netns"] = _netns(get)
    if fields["netns"] and fields["fabric"] != "netns":  # e.g. an ini file shared by netns and local runs: say so
        given = ", ".join(f"--kv-netns-{k.replace('_', '-')}" for k in fields["netns"])
        notes.append(f"kvfabric: {given} applies only to --kv-fabric=netns; ignored with --kv-fabric={fields['fabric']}")
    fields.update(_suites(get, profile_dirs, fields["named_transports"]))
    return Selection(warnings=tuple(notes), **fields)


def _profile_dirs(get: Get) -> tuple[str, ...]:
    dirs = tuple(get("kv_profiles") or ())
    for d in dirs:
        if not Path(d).is_dir():
            raise ProfileError("--kv-profiles", d, "not a directory")
    return dirs


def _transports(get: Get) -> dict[str, Any]:
    from ..transports.registry import available_names

    known = available_names()
    transports = _split(get("kv_transport")) or ["tcp"]
    named = [] if transports == ["all"] or not get("kv_transport") else list(transports)
    if transports == ["all"]:
        transports = known
    for t in transports:
        if t not in known:
            raise ProfileError("--kv-transport", t, f"unknown transport; valid: {', '.join(known)}, all")
    return {"transports": tuple(dict.fromkeys(transports)), "named_transports": tuple(dict.fromkeys(named)),
            "kv_asked": bool(get("kv_transport") or get("kv_model"))}


def _profiles(get: Get, profile_dirs: tuple[str, ...]) -> dict[str, Any]:
    from ..core.profiles import list_models, load_gpu, load_model

    model_names = _split(get("kv_model"))
    models: tuple[ModelProfile, ...] | None = None
    if model_names == ["all"]:
        models = tuple(list_models(profile_dirs))
    elif model_names:
        models = tuple(load_model(n, profile_dirs) for n in model_names)
    gpu_name = get("kv_gpu")
    return {"models": models, "gpu": load_gpu(gpu_name, profile_dirs) if gpu_name else None}


def _fabric(get: Get, fabrics: Sequence[str]) -> dict[str, Any]:
    fabric = get("kv_fabric") or FABRICS[0]
    if fabric not in fabrics:
        raise ProfileError("--kv-fabric", fabric, f"unknown fabric; valid: {', '.join(fabrics)}")
    hosts = get("kv_hosts")
    known = known_fabric(fabric)  # None: a plug-in's hook fabric, which checks its own inputs
    if known is not None and known.needs_inventory and not hosts:
        raise ProfileError("--kv-fabric", fabric, "needs --kv-hosts PATH (the host-pair inventory)")
    if hosts and not Path(hosts).is_file():
        raise ProfileError("--kv-hosts", hosts, "no such file")
    return {"fabric": fabric, "hosts": hosts}


def _gate(get: Get, metrics: Any) -> dict[str, Any]:
    """--kv-baseline and what judges against it."""
    from ..report.gate_metrics import parse_thresholds

    thresholds = parse_thresholds(get("kv_max_regression"), "--kv-max-regression", metrics)
    repeat = get("kv_repeat")
    repeat = 1 if repeat in (None, "") else _number("--kv-repeat", repeat, int, 1)
    if repeat > MAX_REPEAT:  # every repeat is a full run: keep a typo from running for days
        raise ProfileError("--kv-repeat", str(repeat), f"must be <= {MAX_REPEAT}")
    gate_undecided = get("kv_gate_undecided") or "pass"
    if gate_undecided not in ("pass", "fail"):
        raise ProfileError("--kv-gate-undecided", gate_undecided, "valid: pass, fail")
    baseline = get("kv_baseline")
    for path in baseline_list(baseline):
        if not Path(path).is_file():
            raise ProfileError("--kv-baseline", path, "no such file")
    return {"thresholds": thresholds, "max_regression_pct": thresholds["throughput"], "repeat": repeat,
            "gate_undecided": gate_undecided, "baseline_path": baseline or None}


def baseline_list(text: str | None) -> tuple[str, ...]:
    """--kv-baseline's reports: one path, or a comma list (one report per session). A path that
    is itself a file wins, so a name with a comma still works."""
    if not text:
        return ()
    if Path(text).is_file():
        return (text,)
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _run_knobs(get: Get, metrics: Any) -> dict[str, Any]:
    """What every case of the run is forced to (layer 6 of harness/resolve.py), and the outputs."""
    from ..measure import slo as slo_mod

    from ..emulator.flows import MAX_RAILS

    seed = get("kv_seed")
    rails = get("kv_rails")
    pool = get("kv_pool_mib")
    pacing = get("kv_pacing") or None
    if pacing and pacing not in PACINGS:
        raise ProfileError("--kv-pacing", pacing, f"valid: {', '.join(PACINGS)}")
    timeout = get("kv_timeout")
    on_copy = get("kv_on_copy") or "fail"
    if on_copy not in ON_COPY:
        raise ProfileError("--kv-on-copy", on_copy, f"valid: {', '.join(ON_COPY)}")
    return {
        "slo": slo_mod.parse_assignments(list(get("kv_slo") or ()), "--kv-slo", metrics),
        "seed": None if seed in (None, "") else _number("--kv-seed", seed, int, 0, MAX_SEED),
        "rails": None if rails in (None, "") else _number("--kv-rails", rails, int, 1, MAX_RAILS),
        "pool_mib": None if pool in (None, "") else _number("--kv-pool-mib", pool, float, 1, MAX_POOL_MIB),
        "pacing": pacing,
        "timeout_s": None if timeout in (None, "") else _number("--kv-timeout", timeout, float, 0.1, MAX_TIMEOUT_S),
        "on_copy": on_copy,
        "json_path": get("kv_json") or None,
        "save_baseline": get("kv_save_baseline") or None,
    }


def _check_outputs(get: Get) -> None:
    for dest in ("kv_json", "kv_save_baseline"):  # checked now, not after every test has run
        if get(dest):
            check_output_path(str(get(dest)), f"--{dest.replace('_', '-')}")


def _params(get: Get, transports: Sequence[str], notes: list[str]) -> dict[str, Any]:
    """--kv-transport-param, the rdma flags and --kv-inject, checked against the transports."""
    params = transport_params(list(get("kv_transport_param") or ()), "--kv-transport-param")
    # (dest, param, type, min, max): GID table index < 256 per port; traffic class is one byte
    rdma_given = []
    for dest, key, kind, lo, hi in (("kv_rdma_device", "device", str, None, None),
                                    ("kv_rdma_gid_index", "gid_index", int, 0, 255),
                                    ("kv_rdma_tc", "traffic_class", int, 0, 255)):
        if get(dest) not in (None, ""):
            value = _number(f"--{dest.replace('_', '-')}", get(dest), kind, lo, hi)  # checked either way
            if "rdma" in transports:
                params[key] = value
            else:
                rdma_given.append(f"--{dest.replace('_', '-')}")
    if rdma_given:  # e.g. an ini file shared by rdma and tcp runs: say so, do not pass them on
        notes.append(f"kvfabric: {', '.join(rdma_given)} applies only to the rdma transport; ignored "
                     f"with --kv-transport={','.join(transports)}")
    inject = get("kv_inject")
    if inject:
        from ..core.scenario import FAULTS, INJECT_PARAM

        if inject not in FAULTS:
            raise ProfileError("<options>", "--kv-inject", f"unknown fault {inject!r}; valid: {', '.join(FAULTS)}")
        params[INJECT_PARAM] = inject  # travels with the scenario; agents strip "_" keys for transports
    from ..transports.registry import check_params

    why = check_params(list(transports), params)  # unknown names and bad values, before anything runs
    if why:
        raise ProfileError("<options>", "--kv-transport-param", why)
    return params


def _netns(get: Get) -> dict[str, Any]:
    netns: dict[str, Any] = {}
    if get("kv_netns_mtu") not in (None, ""):
        # veth takes 68..65535 (ETH_MIN_MTU..ETH_MAX_MTU); the kernel would refuse mid-setup
        netns["mtu"] = _number("--kv-netns-mtu", get("kv_netns_mtu"), int, 68, 65535)
    if get("kv_netns_rate_mbit") not in (None, ""):
        netns["rate_mbit"] = _number("--kv-netns-rate-mbit", get("kv_netns_rate_mbit"), float, 0.001, 1e7)
    offloads = ",".join(_split(get("kv_netns_offloads")))
    if offloads:
        try:
            netns["offloads"] = parse_offloads(offloads)
        except ValueError as exc:
            raise ProfileError("--kv-netns-offloads", offloads, str(exc)) from None
    split = get("kv_netns_cpu_split")
    if split not in (None, ""):
        if str(split).lower() not in ("on", "off", "true", "false", "1", "0"):
            raise ProfileError("--kv-netns-cpu-split", split, "expected on or off")
        netns["cpu_split"] = str(split).lower() in ("on", "true", "1")
    return netns


def _suites(get: Get, profile_dirs: tuple[str, ...], named: Sequence[str]) -> dict[str, Any]:
    """--kv-suite, --kv-default-suites and --kv-require-transport (which may say 'named')."""
    from ..transports.registry import available_names
    from .suites import find_suite

    suites = tuple(find_suite(n, profile_dirs) for n in _split(get("kv_suite")))
    default_suites = tuple(_split(get("kv_default_suites"))) or ("smoke",)
    for name in default_suites:  # a typo is a usage error now, not a collection surprise later
        find_suite(name, profile_dirs)
    required = _split(get("kv_require_transport"))
    if required == ["named"]:
        required = list(named)
    known = available_names()
    for t in required:
        if t not in known:
            raise ProfileError("--kv-require-transport", t, f"unknown transport; valid: {', '.join(known)}, named")
    return {"suites": suites, "default_suites": default_suites, "require_transports": frozenset(required)}
