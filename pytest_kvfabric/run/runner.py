"""The controller: start the two agents, run a scenario between them, return a Result.

Sequence (each step answers over an execnet channel; every receive has a deadline):
1. decode agent: rebuild plan, allocate region, create the Target, listen -> descriptor;
   prefill agent (in parallel): rebuild plan, allocate and pattern-fill its pool.
2. decode agent starts its receive loop; prefill agent connects to the descriptor and
   runs the pacing loop; both answer with raw measurements.
3. stats (pure) turn the prefill agent's measurements into the Result.
On a timeout, an agent's death or an agent error, both gateways are torn down (exit, then
kill) and TransportError names the agent and why.
"""
from __future__ import annotations

import os
import re
import secrets
import time
from typing import Any, Callable, Mapping

import execnet

from ..measure import stats
from ..emulator.memory import check_hbm_fit
from ..emulator.plan import build_plan
from ..emulator.plantypes import TransferPlan
from ..endpoint.agent import unpack_array
from ..errors import IntegrityError, KvFabricError, ProtocolError, TransportError
from ..fabric.base import HostPair
from ..fabric.bootstrap import AGENT_BOOTSTRAP
from ..fabric.mailbox import Closed, Mailbox, Timeout
from ..fabric.select import fabric_for
from ..lab.env import time_scale
from ..measure.result import Result
from ..core.scenario import Scenario

PROGRESS_S = 0.5  # how often a watched run reports progress
# After one agent fails, how long to wait for the other's answer to tell cause from effect (its final
# page verification can take seconds on a busy host); only failures wait.
CAUSE_WAIT_S = 5.0
# Margins grow by the lab's time scale inside an emulated VM (lab/env.py), 1 elsewhere.
SETUP_MARGIN_S = 30.0 * time_scale()  # agent start, plan rebuild, pool allocation and fill
RUN_MARGIN_S = 10.0 * time_scale()
FLOOR_BYTES_PER_S = 100e6 / time_scale()  # timeouts assume at least 100 MB/s, so a slow path is not a hang
def _timed_out(role: str, pid: str, msg: Mapping[str, Any]) -> str:
    done, total = msg.get("complete_requests"), msg.get("requests")
    return (f"{role} agent{pid} timed out: its run reached the deadline with {done} of {total} request(s) "
            "complete (raise --kv-timeout / timeout_s, or see the capacity line)")


# Errors that are the effect of the peer going away, never a cause of their own.
_EFFECT = re.compile(r"broken pipe|connection reset|closed before|peer closed|EOF|did not answer", re.I)
_ERRORS = {"TransportError": TransportError, "ProtocolError": ProtocolError, "IntegrityError": IntegrityError}


def derive_timeout_s(plan: TransferPlan) -> float:
    """Emulated duration (serial prefill of every request after the last arrival)
    + bytes at 100 MB/s + margin."""
    req = plan.requests
    emulated_ns = (int(req["arrival_ns"].max()) if len(req) else 0) + int(req["prefill_ns"].sum())
    return emulated_ns / 1e9 + plan.total_bytes / FLOOR_BYTES_PER_S + RUN_MARGIN_S


class AgentPair:
    """Two agent processes (prefill, decode) kept alive across runs; a context manager."""

    def __init__(self, pair: HostPair | None = None, timeout_s: float | None = None,
                 options: dict[str, Any] | None = None) -> None:
        if pair is None:
            from ..fabric.local import local_pair

            pair = local_pair()
        self.pair = pair
        self.timeout_s = timeout_s
        self.options = dict(options or {})
        self._group: execnet.Group | None = None
        self._ch: dict[str, Any] = {}
        self._box = Mailbox()
        self.pids: dict[str, int] = {}
        # Called with the prefill agent's {"requests_done", "requests", "bytes_done", "bytes_total",
        # "elapsed_s"} about every PROGRESS_S while a run goes on; None: the agent sends none.
        self.on_progress: Callable[[dict[str, Any]], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> "AgentPair":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self._group is not None:
            return
        self._group = execnet.Group()
        self._box = Mailbox()
        try:
            for role, host in (("decode", self.pair.decode), ("prefill", self.pair.prefill)):
                try:
                    gw = self._group.makegateway(host.gateway_spec)
                except Exception as exc:  # noqa: BLE001 - execnet raises plain errors
                    raise TransportError(
                        f"{role} agent could not start on {host.name} ({host.gateway_spec}): {exc}"
                    ) from None
                self._ch[role] = gw.remote_exec(AGENT_BOOTSTRAP)
                self._box.attach(role, self._ch[role])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Tear both agents down: ask them to exit, kill what is still alive after 1 s."""
        group, self._group = self._group, None
        chans, self._ch = self._ch, {}
        for ch in chans.values():
            try:
                ch.send({"cmd": "exit"})
            except Exception:  # noqa: BLE001 - the agent may already be gone
                pass
        if group is not None:
            try:
                group.terminate(timeout=1.0)
            except Exception:  # noqa: BLE001
                pass
        for pid in self.pids.values():
            _reap(pid)

    # -- channel helpers ------------------------------------------------------------------
    def _send(self, role: str, msg: dict[str, Any]) -> None:
        try:
            self._ch[role].send(msg)
        except Exception as exc:  # noqa: BLE001
            raise TransportError(f"{role} agent{self._pid(role)} is gone: {exc}") from None

    def _pid(self, role: str) -> str:
        return f" (pid {self.pids[role]})" if role in self.pids else ""

    def _recv(self, role: str, deadline: float, phase: str) -> dict[str, Any] | None:
        """The agent's answer; None for a progress report (handed to on_progress), which is no answer."""
        try:
            msg = self._box.take(role, deadline)
        except Timeout:
            raise TransportError(f"{role} agent{self._pid(role)} did not answer {phase} within its timeout") from None
        except Closed as exc:
            detail = f": {exc.detail}" if exc.detail else " without answering" if exc.how == "exited" else ""
            raise AgentGone(f"{role} agent{self._pid(role)} {exc.how} during {phase}{detail}") from None
        if isinstance(msg, dict) and "progress" in msg and "ok" not in msg:
            if self.on_progress is not None:
                self.on_progress(msg["progress"])
            return None
        return self._check(role, msg, phase)

    def _check(self, role: str, msg: Any, phase: str) -> dict[str, Any]:
        if not isinstance(msg, dict):
            raise TransportError(f"{role} agent sent an unexpected message during {phase}")
        if "pid" in msg:
            self.pids[role] = int(msg["pid"])
        if not msg.get("ok"):
            err = _ERRORS.get(msg.get("kind", ""), TransportError)
            raise err(f"{role} agent{self._pid(role)} failed during {phase}: {msg.get('error')}")
        return msg

    def _recv_both(self, deadline: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait for both run answers in one blocking wait (no polling: see fabric/mailbox.py);
        whichever agent fails first is named, but when the prefill side reports a broken
        connection and the decode agent is dead, the dead agent is the cause."""
        got: dict[str, dict[str, Any]] = {}
        while len(got) < 2:
            waiting = tuple(r for r in ("decode", "prefill") if r not in got)
            if not self._box.wait_any(waiting, deadline):  # deadline passed: this names who is late
                late = self._recv(waiting[0], deadline, "the run")
                if late is not None:  # (a progress report is no answer: look again)
                    got[waiting[0]] = late
                continue
            for role in waiting:
                if not self._box.has(role):
                    continue
                try:
                    msg = self._recv(role, deadline, "the run")
                    if msg is None:
                        continue  # a progress report
                    got[role] = msg
                except AgentGone:
                    raise  # this agent died: that is the cause
                except TransportError as exc:
                    # A broken connection on one side is usually the other side dying: lead with that.
                    other = "decode" if role == "prefill" else "prefill"
                    if other in got and got[other].get("timed_out"):
                        raise TransportError(f"{_timed_out(other, self._pid(other), got[other])}; "
                                             f"{role} agent reported: {exc}") from None
                    if other not in got:
                        dead = self._dead(other, CAUSE_WAIT_S)
                        if dead:
                            raise AgentGone(f"{dead}; {role} agent reported: {exc}") from None
                        if role == "prefill":
                            raise TransportError(
                                f"{exc}; the decode agent{self._pid('decode')} had not finished its receive loop"
                            ) from None
                    raise
        return got["prefill"], got["decode"]

    def _link_cause(self) -> str | None:
        """What is wrong with the pair's link, e.g. a netns veth end down (a run over a dead link
        only times out)."""
        return fabric_for(self.pair).link_cause(self.pair)

    def _dead(self, role: str, wait_s: float) -> str | None:
        """A message if the agent died (its channel closed) within wait_s, else None. An agent
        that answers, even with its own error, is alive: that error is an effect, not the cause."""
        try:
            msg = self._recv(role, time.monotonic() + wait_s, "the run")
            if msg is not None and msg.get("timed_out"):  # it gave up at its deadline and closed
                return _timed_out(role, self._pid(role), msg)
        except AgentGone as exc:
            return str(exc)
        except TransportError as exc:
            # Its own error is the cause when it is not itself a broken connection (e.g. the
            # decode agent's run timed out and closed the socket the prefill agent was writing to).
            return None if _EFFECT.search(str(exc)) else str(exc)
        return None

    # -- the run --------------------------------------------------------------------------
    def run(self, scenario: Scenario, check_integrity: bool = True) -> Result:
        """Run one scenario; raises TransportError (agent/transport failure) or IntegrityError
        (pages arrived wrong; the Result is attached as `exc.result`)."""
        from ..transports.registry import get_transport

        if scenario.multi_agent:  # one pair would carry every rail's and instance's bytes: not what was asked
            raise KvFabricError(f"scenario {scenario.id} has rails={scenario.rails} topology={scenario.topology.shape}: "
                                "one agent pair cannot run it; run it with run.flows.FlowRunner / run_flows")
        try:
            get_transport(scenario.transport)  # unknown name: UnknownIdError before any agent starts
        except ImportError as exc:
            raise TransportError(f"transport {scenario.transport!r} could not be imported: {exc}") from None
        check_hbm_fit(scenario, scenario.id)  # a deployment no GPU could hold is a usage error, not a run
        plan = build_plan(scenario)
        run_timeout = self.timeout_s if self.timeout_s is not None else derive_timeout_s(plan)
        ok = False
        try:
            psetup, dsetup = self.setup(scenario, plan)
            self.launch(run_timeout, dsetup)
            pre, dec = self.collect(run_timeout)
            ok = True
        finally:
            if not ok:
                self.close()
        result = _build_result(scenario, plan, self.pair, psetup, dsetup, pre, dec)
        if check_integrity and result.integrity["errors"]:
            exc = IntegrityError(
                f"{result.integrity['errors']} page(s) failed verification; first: {result.integrity['first_error']}"
            )
            exc.result = result  # type: ignore[attr-defined]
            raise exc
        return result


    # -- the phases of a run (run() chains them; run/flows.py interleaves them across flows) --------
    def setup(self, scenario: Scenario, plan: TransferPlan,
              extra: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start both agents if needed and set the run up: (prefill, decode) setup answers.
        `plan` is what the agents will run (it sizes the deadline); `extra` joins their options."""
        token = secrets.token_hex(16)
        opts = {"setup_timeout_s": SETUP_MARGIN_S, **self.options, **(extra or {})}
        if self.on_progress is not None:
            opts["progress_s"] = PROGRESS_S
        self._start()
        setup_deadline = time.monotonic() + SETUP_MARGIN_S + plan.src_region_bytes / FLOOR_BYTES_PER_S
        base = {"cmd": "setup", "spec": scenario.to_spec(), "seed": scenario.seed, "token": token, "options": opts}
        self._send("decode", {**base, "role": "decode", "bind": self.pair.decode.data_addr})
        self._send("prefill", {**base, "role": "prefill", "bind": self.pair.prefill.data_addr})
        dsetup = self._recv("decode", setup_deadline, "setup")
        psetup = self._recv("prefill", setup_deadline, "setup")
        return psetup, dsetup  # type: ignore[return-value]

    def launch(self, run_timeout: float, dsetup: Mapping[str, Any], start: Mapping[str, int] | None = None) -> None:
        """Start the run: the decode agent's receive loop, then the prefill agent's pacing loop
        (`start`: {"start_at_ns": ...} or {"start_in_ns": ...}, a multi-agent run's common start)."""
        self._send("decode", {"cmd": "run", "timeout_s": run_timeout})
        self._send("prefill", {"cmd": "run", "timeout_s": run_timeout, "descriptor": dsetup["descriptor"],
                               **(start or {})})

    def collect(self, run_timeout: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both agents' run answers (prefill, decode); a failure leads with the link's fault if any."""
        try:
            return self._recv_both(time.monotonic() + run_timeout + RUN_MARGIN_S)
        except TransportError as exc:
            cause = self._link_cause()
            if cause:  # over a dead link a run only times out: lead with the link
                raise type(exc)(f"{cause}; {exc}") from None
            raise


class AgentGone(TransportError):
    """An agent process died or closed its channel: the first cause of a failed run."""


def _reap(pid: int) -> None:
    """Collect an exited child so it does not linger as a zombie (no-op if not our child)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def _build_result(scenario: Scenario, plan: TransferPlan, pair: HostPair, psetup: dict[str, Any],
                  dsetup: dict[str, Any], pre: dict[str, Any], dec: dict[str, Any]) -> Result:
    m = {k: unpack_array(pre[k]) for k in ("post_ns", "done_ns", "req_arrival_ns", "req_start_ns", "req_done_ns",
                                           "post_call_ns")}
    if fabric_for(pair).shares_clock and "placed_by_layer_ns" in dec:  # decode's clock times prefill's posts
        m["placed_by_layer_ns"] = unpack_array(dec["placed_by_layer_ns"])
    budget = scenario.slo.get("ttft_budget_ms") if scenario.slo else None
    s = stats.summarize(plan.transfers, plan.requests, m, scenario.pacing, budget)
    integrity = integrity_of(s, dec)
    moved = s["bytes"]

    def per_gb(key: str) -> dict[str, float | None]:  # an agent's CPU seconds per GB moved, each side
        return {"sender": stats.cpu_s_per_gb(pre.get(key), moved), "receiver": stats.cpu_s_per_gb(dec.get(key), moved)}

    return Result(
        scenario=scenario.id,
        transport=scenario.transport,
        model=scenario.model.id,
        gpu=scenario.gpu.id,
        pair=pair.name,
        pacing=scenario.pacing,
        retransmits=pre.get("stats", {}).get("retransmits"),
        connect_ms=pre["connect_ns"] / 1e6,
        register_ms=max(int(psetup.get("register_ns", 0)), int(dsetup.get("register_ns", 0))) / 1e6,
        cpu_s_per_gb=per_gb("cpu_s"),
        spin_s_per_gb=per_gb("spin_cpu_s"),
        integrity=integrity,
        data_path={"sender": pre.get("data_path", {}), "receiver": dec.get("data_path", {})},
        notifications=int(dec.get("notifications", 0)),
        **s,
    )


def integrity_of(s: Mapping[str, Any], dec: Mapping[str, Any]) -> dict[str, Any]:
    """{"pages_checked", "errors", "first_error"} of one flow: the decode side verified pages; bytes
    it never received count as missing (s: stats.summarize of the prefill side's measurements)."""
    errors = int(dec["errors"])
    first_error = dec["error_list"][0] if dec["error_list"] else None
    missing = s["requests"] - int(dec["requests_completed"])
    if missing > 0 and errors == 0 and s["requests_completed"] == s["requests"]:
        errors, first_error = missing, f"{missing} request(s) acknowledged but not complete at the decode side"
        named = dec.get("missing_pages") or []
        if named:  # name the pages that never landed, not only the requests they belong to
            more = int(dec.get("missing_count", len(named))) - len(named)
            first_error += f"; never placed: {named[0]}" + (f" and {len(named) - 1 + more} more page(s)"
                                                            if len(named) + more > 1 else "")
    return {"pages_checked": int(dec["pages_checked"]), "errors": errors, "first_error": first_error}


def run_scenario(scenario: Scenario, pair: HostPair | None = None, timeout_s: float | None = None,
                 options: dict[str, Any] | None = None) -> Result:
    """Start two agents on `pair` (default: loopback), run the scenario, tear them down."""
    with AgentPair(pair, timeout_s, options) as agents:
        return agents.run(scenario)


__all__ = ["AgentPair", "run_scenario", "derive_timeout_s", "KvFabricError"]
