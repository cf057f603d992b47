"""A sweep's HTML summary: counts, pass/fail maps over pairs of parameters, distributions of the KPIs, and
the failing members with the command that reruns each alone. Plots are inline PNGs (matplotlib, as the run
report); the page is written to a temporary name and renamed, so it is whole or absent."""
from __future__ import annotations

import base64
import html
import io
import itertools
import math
from pathlib import Path

from ..report import write_text_atomic
from ..run_info import package_version
from .results import KPIS

__all__ = ["write_report"]

_COLOURS = {"passed": "#2ca02c", "failed": "#d62728", "incomplete": "#ff7f0e", "error": "#000000",
            "lost": "#9467bd", "pending": "#bbbbbb"}
_MAX_MAPS = 6
_MAX_LISTED = 100


def _numeric(rows, column) -> bool:
    return all(isinstance(r.get(column), (int, float)) and not isinstance(r.get(column), bool) for r in rows)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return f"<img src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _maps(result) -> list[str]:
    import matplotlib.pyplot as plt
    rows, sweep = result.rows, result.sweep
    if sweep.report_map:
        pairs = [sweep.report_map]
    else:
        paths = [p.path for p in sweep.parameters]
        pairs = list(itertools.combinations(paths, 2))[:_MAX_MAPS] or [(paths[0], None)]
    out = []
    for x, y in pairs:
        fig, ax = plt.subplots(figsize=(4.8, 3.8))
        if _repeated(rows, x, y):
            _failure_share(ax, fig, rows, x, y)
            out.append(_png(fig))
            continue
        for status, colour in _COLOURS.items():
            chosen = [r for r in rows if r["status"] == status]
            if chosen:
                ax.scatter([str(r[x]) if not _numeric(rows, x) else r[x] for r in chosen],
                           [(r[y] if _numeric(rows, y) else str(r[y])) if y else 0.0 for r in chosen],
                           c=colour, s=18, label=f"{status} ({len(chosen)})",
                           marker="x" if status in ("error", "lost") else "o")
        ax.set_xlabel(x)
        ax.set_ylabel(y or "")
        if y is None:
            ax.set_yticks([])
        ax.legend(fontsize=7, loc="best")
        ax.set_title(f"pass/fail over {x}" + (f" and {y}" if y else ""), fontsize=9)
        out.append(_png(fig))
    return out


def _repeated(rows, x, y) -> bool:
    """Several members on one point (replicates, a grid over other parameters too): a share, not a dot each."""
    return len({(r[x], r[y] if y else None) for r in rows}) < len(rows)


def _failure_share(ax, fig, rows, x, y) -> None:
    """Each point's share of members that did not pass (finished members only), as a colour."""
    points: dict = {}
    for r in rows:
        if r["status"] != "pending":
            points.setdefault((r[x], r[y] if y else 0.0), []).append(r["status"] != "passed")
    if not points:
        return
    xs, ys = (list(axis) for axis in zip(*points))
    share = [sum(v) / len(v) for v in points.values()]
    if not (_numeric(rows, x) and (y is None or _numeric(rows, y))):
        xs, ys = [str(v) for v in xs], [str(v) for v in ys]
    dots = ax.scatter(xs, ys, c=share, cmap="RdYlGn_r", vmin=0.0, vmax=1.0, s=60, edgecolors="k", linewidths=0.3)
    fig.colorbar(dots, ax=ax, label="share not passed")
    ax.set_xlabel(x)
    ax.set_ylabel(y or "")
    n = max(len(v) for v in points.values())
    ax.set_title(f"share of members not passing over {x}" + (f" and {y}" if y else "") + f" (up to {n} per point)",
                 fontsize=8)


def _distributions(rows) -> list[str]:
    import matplotlib.pyplot as plt
    out = []
    for kpi in KPIS:
        groups = {s: [r[kpi] for r in rows if r["status"] == s and isinstance(r.get(kpi), (int, float))
                      and r.get(kpi) is not None and math.isfinite(r[kpi])] for s in ("passed", "failed")}
        if not any(groups.values()):
            continue
        values = groups["passed"] + groups["failed"]
        if min(values) == max(values):  # a histogram of one bar says less than a line
            out.append(f"<p>{html.escape(kpi)}: {values[0]:g} for all {len(values)} members</p>")
            continue
        fig, ax = plt.subplots(figsize=(4.0, 2.8))
        data = [v for v in groups.values() if v]
        ax.hist(data, bins=20, stacked=True, color=[_COLOURS[s] for s, v in groups.items() if v],
                label=[f"{s} ({len(v)})" for s, v in groups.items() if v])
        ax.set_xlabel(kpi)
        ax.set_ylabel("members")
        ax.legend(fontsize=7)
        out.append(_png(fig))
    return out


def _first_failure(row) -> str:
    for column, value in row.items():
        if column.startswith("pass:") and value is False:
            name = column[len("pass:"):]
            t = row.get(f"t_fail_s:{name}")
            return f"{name}" + (f" at {t:.2f} s" if isinstance(t, (int, float)) else "")
    return ""


def write_report(folder: Path, result) -> dict[str, Path]:
    import matplotlib
    matplotlib.use("Agg")
    sweep, rows = result.sweep, result.rows
    params = [p.path for p in sweep.parameters]
    counts = {s: result.count(s) for s in _COLOURS if result.count(s)}
    bad = [r for r in rows if r["status"] not in ("passed", "pending")]
    e = html.escape
    listed = "".join(
        f"<tr><td>{r['member']}</td><td>{e(r['status'])}</td>"
        + "".join(f"<td>{r[p]:.4g}</td>" if isinstance(r[p], float) else f"<td>{e(str(r[p]))}</td>" for p in params)
        + f"<td>{e(_first_failure(r))}</td><td>{e(r.get('dtcs') or '')}</td><td>{e(r.get('error') or '')}</td>"
          f"<td><code>{e(r['rerun'])}</code></td></tr>" for r in bad[:_MAX_LISTED])
    more = f"<p>… and {len(bad) - _MAX_LISTED} more (results.csv)</p>" if len(bad) > _MAX_LISTED else ""
    state = "complete" if result.complete else f"incomplete: {e(result.stop_reason)}"
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>sweep {e(sweep.name)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} td,th{{padding:2px 8px;border-bottom:1px solid #ddd;font-size:90%}}
img{{max-width:100%}} .maps img,.kpis img{{margin:4px}}</style></head><body>
<h1>sweep {e(sweep.name)}</h1><p>{e(sweep.description)}</p>
<table><tr><th>file</th><td>{e(sweep.source)}</td></tr><tr><th>base scenario</th><td>{e(sweep.base_source)}</td></tr>
<tr><th>design</th><td>{e(sweep.design)}, {sweep.points} points × {sweep.replicates} replicates = {len(rows)} members,
seed {sweep.seed}</td></tr><tr><th>parameters</th><td>{e(', '.join(params))}</td></tr>
<tr><th>members</th><td>{e(', '.join(f'{n} {s}' for s, n in counts.items()))}</td></tr>
<tr><th>this run</th><td>{result.ran} members run, {result.skipped} finished before;
{result.wall_s:.1f} s wall</td></tr>
<tr><th>state</th><td>{state}</td></tr><tr><th>version</th><td>{e(package_version())}</td></tr></table>
<h2>pass/fail maps</h2><div class='maps'>{''.join(_maps(result))}</div>
<h2>KPI distributions</h2><div class='kpis'>{''.join(_distributions(rows))}</div>
<h2>members that did not pass ({len(bad)})</h2>
<table><tr><th>member</th><th>status</th>{''.join(f'<th>{e(p)}</th>' for p in params)}<th>first failure</th>
<th>DTCs / faults</th><th>error</th><th>rerun alone</th></tr>{listed}</table>{more}
</body></html>"""
    path = folder / "report.html"
    write_text_atomic(path, page)
    return {"html": path}
