"""A run with a store: three agents (prefill, decode, store) plus the store's client process.

The prefill and decode agents run the scenario exactly as AgentPair does (its plan already
times a hit request's prefill as its suffix only: emulator/storeplan.py). Beside them:
- the store agent (endpoint/store_server.py) on the host across the link from the client:
  the decode host for prefix hits, the prefill host for resume and offload (on netns the
  store's traffic crosses the same veth as the prefill-to-decode transfers);
- the client (endpoint/store_client.py) on the fetching host, started when the pair starts
  its run, so fetches and offloads overlap the prefill-to-decode traffic.
The Result is the pair's, with a `store` block (measure/store_stats.py); pages the client
verified (fetched) or the store verified (offloaded) count in its integrity figures.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

import execnet

from ..core.scenario import Scenario
from ..emulator.plan import build_plan
from ..emulator.storeplan import build_store_plan, suffix_ready_ns
from ..endpoint.agent import unpack_array
from ..errors import IntegrityError, KvFabricError, TransportError
from ..fabric.base import HostPair
from ..fabric.bootstrap import remote_source
from ..fabric.mailbox import Closed, Mailbox, Timeout
from ..measure.result import Result
from ..measure.store_stats import summarize_store
from .runner import FLOOR_BYTES_PER_S, RUN_MARGIN_S, SETUP_MARGIN_S, AgentPair, derive_timeout_s

STORE_BOOTSTRAP = remote_source("""
from pytest_kvfabric.endpoint.store_agent import serve
serve(channel)
""")
ROLES = ("store", "client")


def read_reason(transport: str, params: Any = None) -> str | None:
    """Why this transport cannot run a store scenario here (no one-sided READ), or None."""
    from ..transports.registry import get_transport

    cap = get_transport(transport).probe_read(dict(params or {}))
    return None if cap.available else f"{transport}: {cap.reason}"


class StoreAgents:
    """AgentPair's interface (context manager, run(scenario) -> Result) for store scenarios."""

    def __init__(self, pair: HostPair | None = None, timeout_s: float | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.agents = AgentPair(pair, timeout_s, options)
        self.pair = self.agents.pair
        self.timeout_s = timeout_s
        self._group: execnet.Group | None = None
        self._ch: dict[str, Any] = {}
        self._box = Mailbox()
        self._store_ns: dict[str, Any] = {}  # netns fabric: the store's own namespace, per side it hangs off

    @property
    def on_progress(self) -> Any:
        return self.agents.on_progress

    @on_progress.setter
    def on_progress(self, fn: Any) -> None:  # the prefill agent's progress, as AgentPair reports it
        self.agents.on_progress = fn

    def __enter__(self) -> "StoreAgents":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hosts(self, scenario: Scenario) -> tuple[Any, Any]:
        """(store host, client host): across the pair's link from each other. On the netns fabric
        the store gets its own namespace behind the pair's far side (fabric/netns_store.py)."""
        if scenario.store is not None and scenario.store.fetch_side == "prefill":
            via, client = "decode", self.pair.prefill
        else:
            via, client = "prefill", self.pair.decode
        own = self.pair.details.get("store_host")  # hosts fabric: the inventory named a third host
        if own:
            from ..fabric.base import Host

            return Host(**own), client
        if self.pair.fabric != "netns":
            return getattr(self.pair, via), client
        if via not in self._store_ns:
            from ..fabric.netns_store import StoreNetns

            self._store_ns[via] = StoreNetns(self.pair, via).create()
        return self._store_ns[via].host, client

    def _start(self, scenario: Scenario) -> None:
        self._close_store()  # a repeat starts fresh store processes (placement depends on the mode)
        self._group = execnet.Group()
        self._box = Mailbox()
        for role, host in zip(ROLES, self.hosts(scenario)):
            try:
                gw = self._group.makegateway(host.gateway_spec)
            except Exception as exc:  # noqa: BLE001 - execnet raises plain errors
                raise TransportError(f"{role} agent could not start on {host.name}: {exc}") from None
            self._ch[role] = gw.remote_exec(STORE_BOOTSTRAP)
            self._box.attach(role, self._ch[role])

    def close(self) -> None:
        self._close_store()
        self.agents.close()
        namespaces, self._store_ns = self._store_ns, {}
        for ns in namespaces.values():
            ns.destroy()

    def _close_store(self) -> None:
        group, self._group = self._group, None
        chans, self._ch = self._ch, {}
        for ch in chans.values():
            try:
                ch.send({"cmd": "exit"})
            except Exception:  # noqa: BLE001 - it may already be gone
                pass
        if group is not None:
            try:
                group.terminate(timeout=1.0)
            except Exception:  # noqa: BLE001
                pass

    def _recv(self, role: str, deadline: float, phase: str) -> dict[str, Any]:
        try:
            msg = self._box.take(role, deadline)
        except Timeout:
            raise TransportError(f"{role} agent did not answer {phase} within its timeout") from None
        except Closed as exc:
            raise TransportError(f"{role} agent {exc.how} during {phase}" + (f": {exc.detail}" if exc.detail else "")) from None
        if not isinstance(msg, dict) or not msg.get("ok"):
            err = msg.get("error") if isinstance(msg, dict) else msg
            raise TransportError(f"{role} agent{_pid(msg)} failed during {phase}: {err}")
        return msg

    def run(self, scenario: Scenario, check_integrity: bool = True) -> Result:
        if scenario.store is None:
            return self.agents.run(scenario, check_integrity)
        why = read_reason(scenario.transport, scenario.transport_params)
        if why:
            raise TransportError(f"a store scenario needs one-sided READs: {why}")
        plan = build_plan(scenario)
        sp = build_store_plan(scenario, plan)
        baseline = None
        if sp.mode != "offload":  # TTFT without the store: the same workload, no store, same agents, first
            baseline = self.agents.run(scenario.replace(store=None, id=f"{scenario.id}/without-store"))
        store_bytes = sp.total_objects * sp.obj_bytes
        timeout = (self.timeout_s if self.timeout_s is not None else derive_timeout_s(plan)) \
            + int(sp.act_ns.max(initial=0)) / 1e9 + store_bytes / FLOOR_BYTES_PER_S
        token = secrets.token_hex(16)
        spec = scenario.to_spec()
        store_host, _ = self.hosts(scenario)
        ok = False
        try:
            self._start(scenario)
            setup_deadline = time.monotonic() + SETUP_MARGIN_S + 2 * store_bytes / FLOOR_BYTES_PER_S
            base = {"cmd": "setup", "spec": spec, "token": token, "options": {"setup_timeout_s": SETUP_MARGIN_S}}
            self._ch["store"].send({**base, "role": "store", "bind": store_host.data_addr})
            self._ch["client"].send({**base, "role": "client"})
            ssetup = self._recv("store", setup_deadline, "setup")
            self._recv("client", setup_deadline, "setup")
            self._ch["store"].send({"cmd": "run", "timeout_s": timeout + RUN_MARGIN_S})
            client_run = {"cmd": "run", "timeout_s": timeout, "descriptor": ssetup["descriptor"],
                          "lookup_addr": ssetup["lookup_addr"]}
            self.agents.on_run_started = lambda: self._ch["client"].send(client_run)
            try:
                result = self.agents.run(scenario, check_integrity=False)
            finally:
                self.agents.on_run_started = None
            deadline = time.monotonic() + timeout + RUN_MARGIN_S
            client = self._recv("client", deadline, "the run")
            store = self._recv("store", deadline, "the run")
            ok = True
        finally:
            if not ok:
                self.close()
        return self._finish(scenario, sp, result, client, store, check_integrity, baseline)

    def _finish(self, scenario: Scenario, sp: Any, result: Result, client: dict[str, Any],
                store: dict[str, Any], check_integrity: bool, baseline: Result | None = None) -> Result:
        client = {**client, "took_ns": unpack_array(client["took_ns"]), "served": unpack_array(client["served"])}
        exposed = _per_request_exposed(result, len(sp.isl))
        exposed_without = _per_request_exposed(baseline, len(sp.isl)) if baseline is not None else None

        def suffix_ns_for(r: int, served: int) -> int:
            if served <= 0:
                return int(sp.full_ns[r])
            return int(suffix_ready_ns(scenario, int(sp.isl[r]), served)[1][-1, -1])

        block = summarize_store(sp, client, store, exposed, suffix_ns_for, exposed_without)
        if baseline is not None:
            block["without_store_run"] = {"ttft_ms": baseline.ttft_ms, "exposed_ms": baseline.exposed_ms,
                                          "integrity": baseline.integrity}
        checked = int(client.get("pages_checked", 0)) + int(store.get("pages_checked", 0))
        errors = int(client.get("errors", 0)) + int(store.get("errors", 0))
        first = (client.get("error_list") or store.get("error_list") or [None])[0]
        block["integrity"] = {"pages_checked": checked, "errors": errors, "first_error": first}
        block["data_path"] = {"client": client.get("data_path"), "store": store.get("data_path")}
        store_host, client_host = self.hosts(scenario)
        own = [ns.describe() for ns in self._store_ns.values() if ns.host is store_host]
        block["placement"] = {"store": store_host.name, "client": client_host.name,
                              "store_netns": own[0] if own else None}
        block["late_ms_max"] = float(unpack_array(client["late_ns"]).max(initial=0)) / 1e6
        result.store = block
        integ = dict(result.integrity)
        integ["pages_checked"] = int(integ.get("pages_checked", 0)) + checked
        if errors:
            integ["errors"] = int(integ.get("errors", 0)) + errors
            integ["first_error"] = integ.get("first_error") or first
        result.integrity = integ
        if check_integrity and integ.get("errors"):
            exc = IntegrityError(f"{integ['errors']} page(s) failed verification; first: {integ['first_error']}")
            exc.result = result  # type: ignore[attr-defined]
            raise exc
        return result


def _per_request_exposed(result: Result | None, n: int) -> Any:
    """A run's exposed transfer per request (ms), if it kept every request's (stride 1), else None."""
    ex = (result.exposed_ms_requests if result is not None else None) or {}
    values = ex.get("values") or []
    if ex.get("stride") != 1 or len(values) != n:
        return None
    import numpy as np

    return np.asarray(values, dtype=np.float64)


def _pid(msg: Any) -> str:
    return f" (pid {msg['pid']})" if isinstance(msg, dict) and "pid" in msg else ""


def run_store_scenario(scenario: Scenario, pair: HostPair | None = None, timeout_s: float | None = None,
                       options: dict[str, Any] | None = None) -> Result:
    """Start the agents (three plus the store's client) on `pair`, run the scenario, tear them down."""
    with StoreAgents(pair, timeout_s, options) as agents:
        return agents.run(scenario)


__all__ = ["StoreAgents", "run_store_scenario", "read_reason", "STORE_BOOTSTRAP", "KvFabricError"]
