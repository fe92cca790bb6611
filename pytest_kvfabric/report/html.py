"""The self-contained HTML report (pure apart from matplotlib rendering): runs in, one HTML string
and the figures' PNG bytes out. Every figure is a data: URI; no script, font, stylesheet or link
leaves the file, so it reads the same offline, attached to a CI run or mailed."""
from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any, Callable, Mapping, Sequence

from ..measure.capacity import explains, from_record
from . import fig_cases, fig_compare, fig_latency
from . import plotting as P
from .runs import Run, all_cases, failed_verdicts, get
from .table import data_path_label

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1240px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px}nav a{margin-right:12px;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:8px 0;width:100%}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}table.summary td:first-child{min-width:230px}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.passed td.verdict{color:#137333;font-weight:600}tr.failed td.verdict,tr.error td.verdict{color:#b3261e;font-weight:600}
tr.skipped td{color:#888}figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.note{font-size:12px;color:#555}details summary{cursor:pointer;font-size:13px}
"""


@dataclass
class Figure:
    name: str  # file stem for --png
    section: str
    png: bytes


def _num(v: float | None, fmt: str = ".3g") -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 1000 else format(v, fmt)  # 12,400 µs, not 1.24e+04


def _worst(m: Mapping[str, Any] | None, group: str) -> float | None:
    vals = [get(m, f"{group}.{s}") for s in ("sender", "receiver")]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def _verdict_text(c: Mapping[str, Any]) -> str:
    bad = failed_verdicts(c)
    if bad:
        text = "; ".join(f"{v['key']}: {_num(_f(v.get('measured')))} vs {_num(_f(v.get('threshold')))}"
                         + (f" ({v['note']})" if v.get("note") else "") for v in bad)
        cap = from_record(c.get("capacity"))
        if explains(cap, [v["key"] for v in bad]) and cap is not None:
            text += f". Capacity: {cap.sentence()}"
        return text
    return str(c.get("reason") or "")


def _f(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _capacity_cell(c: Mapping[str, Any]) -> str:
    cap = c.get("capacity") or (c.get("metrics") or {}).get("capacity") or {}
    need, have = _f(cap.get("needed_gbps")), _f(cap.get("carried_gbps"))
    if need is None and have is None:
        return "–"
    return f"{_num(need)} / {_num(have)}" + (" short" if cap.get("short") else "")


def summary_table(cases: Sequence[Mapping[str, Any]]) -> str:
    head = ("case", "pair", "Gb/s", "p50 µs", "p99 µs", "exposed p99 ms", "CPU s/GB (worst side)",
            "needs / carried Gb/s", "data path", "verdict", "why")
    rows = []
    for c in sorted(cases, key=lambda c: (c["run"], c["case"])):
        m = c.get("metrics")
        outcome = str(c.get("outcome") or "")
        cells = [
            escape(c["label"]), escape(str(c.get("pair") or "–")),
            _num(get(m, "throughput_gbps")), _num(get(m, "latency_us.p50")), _num(get(m, "latency_us.p99")),
            _num(get(m, "exposed_ms.p99")), _num(_worst(m, "cpu_s_per_gb")), _capacity_cell(c),
            escape(data_path_label(m) if m else "–"), escape(outcome), escape(_verdict_text(c)),
        ]
        tds = "".join(f'<td class="{"num" if 2 <= i <= 7 else "verdict" if i == 9 else ""}">{v}</td>'
                      for i, v in enumerate(cells))
        rows.append(f'<tr class="{escape(outcome)}">{tds}</tr>')
    ths = "".join(f"<th>{escape(h)}</th>" for h in head)
    counts: dict[str, int] = {}
    for c in cases:
        counts[str(c.get("outcome"))] = counts.get(str(c.get("outcome")), 0) + 1
    tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f'<p class="note">{len(cases)} case(s): {escape(tally)}</p><table class="summary"><tr>{ths}</tr>{"".join(rows)}</table>'


def environment_table(runs: Sequence[Run]) -> str:
    rows = []
    for r in runs:
        env = r.environment
        if not env:
            continue
        ifaces = ", ".join(f"{i.get('name')}{'@' + i['netns'] if i.get('netns') else ''} mtu {i.get('mtu', '?')}"
                           + (f" {i['driver']}" if i.get("driver") else "")
                           + (f" fw {i['firmware']}" if i.get("firmware") else "")
                           for i in env.get("interfaces") or ())
        pk = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)
        hosts = ", ".join(sorted((env.get("hosts") or {}).keys()))
        sess = r.session
        cells = [r.label, r.created or "–", env.get("kernel", "–"), f"{env.get('cpu_model', '–')} ×{env.get('cpus', '?')}",
                 env.get("python", "–"), ifaces, hosts or "–", sess.get("fabric", "–"), pk]
        rows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in cells) + "</tr>")
    if not rows:
        return '<p class="note">No environment fingerprint in these inputs.</p>'
    head = ("run", "created", "kernel", "CPU", "Python", "interfaces", "remote hosts", "fabric", "packages")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def sweep_table(sweep: Mapping[str, Any]) -> str:
    head = ("transport", "size", "batch", "transfers", "Gb/s", "p50 µs", "p99 µs", "CPU s/GB S / R", "spin S / R",
            "pages checked", "errors")
    rows = []
    for p in sorted(sweep.get("points") or (), key=lambda p: (p["transport"], p.get("batch") or 1, p["size_bytes"])):
        integ = p.get("integrity") or {}
        cells = [p["transport"], fig_compare.human_size(p["size_bytes"]), p.get("batch", 1), p.get("transfers", "–"),
                 _num(_f(p.get("throughput_gbps"))), _num(get(p, "latency_us.p50")), _num(get(p, "latency_us.p99")),
                 f"{_num(get(p, 'cpu_s_per_gb.sender'))} / {_num(get(p, 'cpu_s_per_gb.receiver'))}",
                 f"{_num(get(p, 'spin_s_per_gb.sender'))} / {_num(get(p, 'spin_s_per_gb.receiver'))}",
                 integ.get("pages_checked", "–"), integ.get("errors", "–")]
        rows.append("<tr>" + "".join(f'<td class="{"num" if i > 0 else ""}">{escape(str(v))}</td>'
                                     for i, v in enumerate(cells)) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


# (section id, heading, caption, figure builder over cases)
CASE_SECTIONS: tuple[tuple[str, str, str, Callable[[Sequence[Mapping[str, Any]]], list[Any]]], ...] = (
    ("throughput", "Throughput per case", "Decimal Gb/s over each case's transfer window (first post to last "
     "completion), grouped by model, one bar per transport.", fig_cases.throughput),
    ("latency", "Write latency CDF", "Post → completion of every write, from each case's compact histogram "
     "(20 buckets per decade: exact to 12 %).", fig_latency.latency_cdf),
    ("exposed", "Exposed transfer time per request", "What the network adds to TTFT: last byte acknowledged "
     "after the emulated prefill end, per request.", fig_latency.exposed),
    ("timeline", "One request's timeline", "Each layer's ready time (emulated GPU) against when its writes were "
     "posted, placed at the decode side (same-clock fabrics only) and acknowledged.", fig_latency.timeline),
    ("cpu", "CPU cost per side", "user+sys CPU seconds per GB moved; the hatched part is busy-waiting (pacing "
     "spin and transport polling), the solid part the work.", fig_cases.cpu),
)


def build(runs: Sequence[Run], baseline: Sequence[Run] = (), title: str = "pytest-kvfabric report") -> tuple[str, list[Figure]]:
    """The HTML page and its figures (also returned as PNG bytes for --png)."""
    cases = all_cases([r for r in runs if r.kind != "sweep"])
    figures: list[Figure] = []
    body: list[str] = []
    nav: list[tuple[str, str]] = []

    def add_figs(section: str, figs: list[Any], caption: str) -> str:
        out = []
        for i, fig in enumerate(figs):
            data = P.png(fig)
            name = f"{len(figures) + 1:02d}-{section}{'-' + str(i + 1) if len(figs) > 1 else ''}"
            figures.append(Figure(name, section, data))
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            out.append(f'<figure id="fig-{name}"><img alt="{escape(section)} figure {i + 1}" src="{uri}">'
                       f"<figcaption>{escape(caption)}</figcaption></figure>")
        return "".join(out)

    if cases:
        nav.append(("summary", "Summary"))
        body.append(f'<h2 id="summary">Summary and verdicts</h2>{summary_table(cases)}')
    nav.append(("environment", "Environment"))
    body.append(f'<h2 id="environment">Environment fingerprint</h2>{environment_table(runs)}')
    for sid, heading, caption, builder in CASE_SECTIONS:
        figs = builder(cases) if cases else []
        if figs:
            nav.append((sid, heading))
            body.append(f'<h2 id="{sid}">{escape(heading)}</h2>' + add_figs(sid, figs, caption))
    if baseline:
        matched = fig_compare.pairs(all_cases(baseline), cases)
        figs = fig_compare.baseline(matched)
        nav.append(("baseline", "Baseline"))
        if figs:
            body.append('<h2 id="baseline">Baseline against current</h2>' + add_figs(
                "baseline", figs, "Per case and metric: the baseline and the current figure; where a case was "
                "repeated, the point is the median and the bar the range of the repeats."))
        else:
            body.append('<h2 id="baseline">Baseline against current</h2><p class="note">No case was measured in '
                        "both the baseline and these runs.</p>")
    for r in runs:
        if r.kind != "sweep" or r.sweep is None:
            continue
        sid = f"sweep-{len(nav)}"
        nav.append((sid, f"Sweep {r.label}"))
        figs = fig_compare.sweep(r.sweep)
        body.append(f'<h2 id="{sid}">Transfer-size sweep: {escape(r.label)}</h2>'
                    + add_figs("sweep", figs, "Throughput and p50/p99 write latency against transfer size, "
                               "per transport; every page verified.") + sweep_table(r.sweep))
    inputs = ", ".join(escape(r.label) for r in runs)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    links = "".join(f'<a href="#{sid}">{escape(h)}</a>' for sid, h in nav)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
            f'<h1>{escape(title)}</h1><p class="meta">from {inputs} · generated {created}</p><nav>{links}</nav>'
            + "".join(body) + "</body></html>\n")
    return page, figures
