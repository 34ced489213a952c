"""Static charts for the reports people read: SVG files drawn at build time with matplotlib (no
browser, no network), linked from reports/report.md, the monitor's report and each deploy package's
model card. `dvc plots show` draws the interactive counterparts from the CSV/TSV files.

Deterministic: the same data gives the same bytes. Every chart is drawn with matplotlib's own
defaults (a user's matplotlibrc does not count), text as paths from matplotlib's bundled DejaVu Sans
(no system font is involved), a fixed ``svg.hashsalt`` for the clip-path ids and no date in the
metadata.

matplotlib is imported when the first chart is drawn, not with this module.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .io import write_text_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RC = {"svg.hashsalt": "slmake-charts", "svg.fonttype": "path", "font.family": ["DejaVu Sans"], "font.size": 9,
      "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
      "figure.dpi": 100, "timezone": "UTC"}
SIZE = (6.4, 3.8)   # inches: 640 x 380 px
OK, BAD, NEUTRAL, LIVE, BASE = "#2b8a3e", "#c92a2a", "#868e96", "#1c7ed6", "#adb5bd"


def svg(draw, size: tuple[float, float] = SIZE) -> str:
    """Call ``draw(fig)`` on a fresh Figure and return its SVG text (deterministic bytes)."""
    import matplotlib  # here, not at the top: importing slmake.charts costs nothing until a chart is drawn
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        matplotlib.rcdefaults()          # matplotlib's defaults, whatever the user's matplotlibrc says
        matplotlib.rcParams.update(RC)
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasSVG(fig)
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue().decode("utf-8")


def _empty(fig: Figure, title: str, text: str) -> None:
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", color=NEUTRAL, transform=ax.transAxes, wrap=True)


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _name(r: dict) -> str:
    return f"{r['target']}/{r['artifact']}" if r.get("target") else str(r.get("artifact"))


# ---------------------------------------------------------------- build: report.md and model cards

def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (size, accuracy) points no other point beats: none smaller-or-equal and at least as
    accurate with one of the two strictly better. Sorted by size."""
    front: list[tuple[float, float]] = []
    for size, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((size, acc))
    return front


def _place_labels(fig: Figure, ax, x: list[float], y: list[float], labels: list[str], size: float = 7
                  ) -> None:
    """Annotate each point on the side (up/down, right/left) that overlaps the labels placed so far
    and the points least: a deterministic greedy placement, boxes estimated from the text length at
    the axes' position before layout (close enough to keep labels apart)."""
    px = fig.dpi / 72 * size
    pos = ax.transData.transform(list(zip(x, y)))
    dots = [(a - 5, b - 5, a + 5, b + 5) for a, b in pos]
    placed: list[tuple[float, float, float, float]] = []

    def overlap(box, others) -> float:
        return sum(max(0.0, min(box[2], o[2]) - max(box[0], o[0]))
                   * max(0.0, min(box[3], o[3]) - max(box[1], o[1])) for o in others)

    order = sorted(range(len(x)), key=lambda i: (pos[i][0], pos[i][1]))
    for i in order:
        lines = labels[i].split("\n")
        w, h = max(map(len, lines)) * 0.55 * px, len(lines) * 1.25 * px
        a, b = pos[i]
        best = None
        for dx, dy, ha, va in ((6, 6, "left", "bottom"), (6, -6, "left", "top"), (-6, 6, "right", "bottom"),
                               (-6, -6, "right", "top")):
            x0 = a + dx if ha == "left" else a + dx - w
            y0 = b + dy if va == "bottom" else b + dy - h
            box = (x0, y0, x0 + w, y0 + h)
            cost = overlap(box, placed) + overlap(box, dots)
            if best is None or cost < best[0] - 1e-6:
                best = (cost, dx, dy, ha, va, box)
        _, dx, dy, ha, va, box = best
        placed.append(box)
        ax.annotate(labels[i], (x[i], y[i]), xytext=(dx * 72 / fig.dpi, dy * 72 / fig.dpi),
                    textcoords="offset points", ha=ha, va=va, fontsize=size)


def accuracy_size(rows: list[dict], reference: float | None = None, highlight: str | None = None) -> str:
    """Accuracy vs artifact size, colour = decode tok/s, each point labelled with its tok/s; the
    dashed step is the Pareto front; ``reference`` (the fine-tuned fp32 model's accuracy) a line;
    ``highlight`` (target/artifact) ringed."""
    pts = [r for r in rows if r.get("status", "ok") == "ok"
           and _num(r.get("size_mb")) is not None and _num(r.get("exact_match")) is not None]
    title = "Accuracy vs size (colour: decode tokens/s)"

    def draw(fig: Figure) -> None:
        if not pts:
            return _empty(fig, title, "no benchmarked artifact")
        ax = fig.add_subplot()
        x = [float(r["size_mb"]) for r in pts]
        y = [float(r["exact_match"]) for r in pts]
        tps = [_num(r.get("decode_tok_s")) for r in pts]
        known = [t for t in tps if t is not None]
        if known:
            lo, hi = min(known), max(known)
            sc = ax.scatter([a for a, t in zip(x, tps) if t is not None],
                            [b for b, t in zip(y, tps) if t is not None], c=known, cmap="viridis",
                            vmin=lo, vmax=hi if hi > lo else lo + 1, s=70, zorder=3, edgecolors="black",
                            linewidths=0.5)
            fig.colorbar(sc, ax=ax, label="decode tok/s")
        if len(known) < len(pts):
            ax.scatter([a for a, t in zip(x, tps) if t is None], [b for b, t in zip(y, tps) if t is None],
                       c=NEUTRAL, s=70, zorder=3, edgecolors="black", linewidths=0.5, label="no tok/s")
        front = pareto(list(zip(x, y)))
        if len(front) > 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", ls="--", c=NEUTRAL, zorder=2,
                    label="Pareto front (smaller and at least as accurate)")
        if reference is not None:
            ax.axhline(reference, c=BAD, lw=1, ls=":", label=f"fine-tuned fp32: {reference:.3f}")
        for i, r in enumerate(pts):
            if highlight and _name(r) == highlight:
                ax.scatter([x[i]], [y[i]], s=260, facecolors="none", edgecolors=BAD, linewidths=1.5, zorder=4,
                           label="this artifact")
        if max(x) / max(min(x), 1e-9) > 8:
            ax.set_xscale("log")
        else:
            xpad = max((max(x) - min(x)) * 0.15, 0.1 * max(x))
            ax.set_xlim(max(0.0, min(x) - xpad), max(x) + xpad)
        ys = y + ([reference] if reference is not None else [])
        pad = max((max(ys) - min(ys)) * 0.25, 0.02)
        ax.set_ylim(max(0.0, min(ys) - pad), max(ys) + pad)
        labels = [_name(r) + ("" if t is None else f"\n{t:,.0f} tok/s") for r, t in zip(pts, tps)]
        _place_labels(fig, ax, x, y, labels)
        ax.set_xlabel("artifact size (MB)")
        ax.set_ylabel("accuracy (exact match, test split)")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    return svg(draw)


def delta(rows: list[dict]) -> str:
    """Δ accuracy vs the fine-tuned fp32 model per artifact with its paired 95 % interval: red when
    the whole interval is below 0 (a real loss), green above, grey when it straddles 0."""
    pts = [r for r in rows if r.get("status", "ok") == "ok" and _num(r.get("delta")) is not None]
    title = "Δ accuracy vs fp32, 95 % paired interval"

    def draw(fig: Figure) -> None:
        if not pts:
            return _empty(fig, title, "no artifact with a Δ vs fp32")
        ax = fig.add_subplot()
        for i, r in enumerate(pts):
            d, ci = float(r["delta"]), _num(r.get("delta_ci95"))
            lo, hi = (d - ci, d + ci) if ci is not None else (d, d)
            colour = BAD if hi < 0 else OK if lo > 0 else NEUTRAL
            ax.errorbar([d], [i], xerr=None if ci is None else [[ci], [ci]], fmt="o", color=colour, capsize=4,
                        ms=6)
            ax.annotate(f"{d:+.3f}" + ("" if ci is None else f" ±{ci:.3f}"), (d, i), xytext=(0, 7),
                        textcoords="offset points", ha="center", fontsize=7)
        ax.axvline(0, c="black", lw=0.8)
        ax.set_yticks(range(len(pts)), [_name(r) for r in pts])
        ax.set_ylim(-0.7, len(pts) - 0.3)
        ax.invert_yaxis()
        ax.set_xlabel("accuracy − fine-tuned fp32 accuracy (same prompts)")
        ax.set_title(title)
    return svg(draw, (6.4, 1.4 + 0.45 * max(len(pts), 1)))


def read_tsv(path: Path, field: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one dvclive TSV (header ``step<TAB>field``); empty when the file is absent."""
    steps: list[float] = []
    values: list[float] = []
    if not path.is_file():
        return steps, values
    with open(path, encoding="utf-8", newline="") as f:
        for rec in csv.DictReader(f, delimiter="\t"):
            try:
                steps.append(float(rec["step"]))
                values.append(float(rec[field]))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}: expected the columns 'step' and '{field}' with numbers, "
                                 f"got {rec}") from None
    return steps, values


def loss_curves(metrics_dir: Path) -> str:
    """Training and validation loss per step from the train stage's dvclive files
    (<metrics_dir>/train/loss.tsv, <metrics_dir>/val/loss.tsv)."""
    curves = [(split, *read_tsv(Path(metrics_dir) / split / "loss.tsv", "loss"))
              for split in ("train", "val")]
    title = "Loss per step"

    def draw(fig: Figure) -> None:
        if not any(steps for _, steps, _ in curves):
            return _empty(fig, title, f"no loss curves in {metrics_dir}")
        ax = fig.add_subplot()
        for (split, steps, values), colour in zip(curves, (LIVE, BAD)):
            if steps:
                ax.plot(steps, values, marker="o" if split == "val" else None, ms=3, c=colour, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.legend()
    return svg(draw)


REPORT_CHARTS = ("accuracy_size.svg", "loss.svg", "delta.svg")


def report_charts(rows: list[dict], reference: float | None, metrics_dir: Path, out_dir: Path,
                  link: str = "charts/") -> str:
    """Write REPORT_CHARTS under ``out_dir``; return report.md's Charts section (links start with
    ``link``, the path from the report to ``out_dir``)."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "accuracy_size.svg", accuracy_size(rows, reference))
    write_text_atomic(out_dir / "loss.svg", loss_curves(metrics_dir))
    write_text_atomic(out_dir / "delta.svg", delta(rows))
    return ("## Charts\n\n"
            f"![Accuracy vs size, colour: decode tokens/s, dashed: Pareto front]({link}accuracy_size.svg)\n\n"
            f"![Δ accuracy vs fp32 with its 95 % paired interval per artifact]({link}delta.svg)\n\n"
            f"![Training and validation loss per step]({link}loss.svg)\n\n"
            "Interactive versions: `dvc plots show` (offline page: `dvc_plots/index.html`).\n")


# ---------------------------------------------------------------- monitor

def input_length(table: list[dict], psi: float | None, unit: str) -> str:
    """Share of requests per input-length bin (the train split's quantile bins): train vs live."""
    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        idx = range(len(table))
        ax.bar([i - 0.2 for i in idx], [r["train"] for r in table], 0.4, color=BASE, label="train split")
        ax.bar([i + 0.2 for i in idx], [r["live"] for r in table], 0.4, color=LIVE, label="live")
        ax.set_xticks(list(idx), [r["range"] for r in table], rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(f"input length ({unit})")
        ax.set_ylabel("share of requests")
        ax.set_title("Input length drift" + ("" if psi is None else f" (PSI {psi:.3f})"))
        ax.legend()
    return svg(draw)


def label_shares(labels: dict[str, dict], baseline: str) -> str:
    """Share of each label in the served answers vs the baseline."""
    names = sorted(labels)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        idx = range(len(names))
        ax.barh([i - 0.2 for i in idx], [labels[n]["baseline"] for n in names], 0.4, color=BASE,
                label=baseline)
        ax.barh([i + 0.2 for i in idx], [labels[n]["live"] for n in names], 0.4, color=LIVE, label="served")
        ax.set_yticks(list(idx), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("share of answers")
        ax.set_title("Label shares")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / (len(names) + 2)),
                  ncols=2)
    return svg(draw, (6.4, 1.6 + 0.3 * max(len(names), 1)))


def _ts(value) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


Point = tuple[datetime, float, float | None, float | None]   # time, latency, TTFT, service time (ms)


def latency_series(window: list[dict]) -> list[Point]:
    """(time, latency ms, TTFT ms, service ms) of every logged request with a time and a latency,
    by time; TTFT and service time (latency less the wait for the runner) are None when not logged."""
    out = []
    for r in window:
        t, lat = _ts(r.get("ts")), _num(r.get("latency_ms"))
        if t is not None and lat is not None:
            out.append((t, lat, _num(r.get("ttft_ms")), _num(r.get("service_ms"))))
    return sorted(out, key=lambda p: p[0])


def latency(series: list[Point], bench_ms: float | None, ratio: float | None) -> str:
    """Latency, service time and TTFT of each request over time, with the bench's expected latency
    and the p95 alert line (bench × monitor.thresholds.latency_p95_ratio; the monitor judges service
    time where the log has it, else the whole latency)."""
    def draw(fig: Figure) -> None:
        import matplotlib.dates as mdates

        ax = fig.add_subplot()
        ax.plot([p[0] for p in series], [p[1] for p in series], ".", ms=4, c=LIVE, label="request latency")
        service = [(p[0], p[3]) for p in series if p[3] is not None]
        if service:
            ax.plot([p[0] for p in service], [p[1] for p in service], "x", ms=3, c=OK, label="service time")
        ttft = [(p[0], p[2]) for p in series if p[2] is not None]
        if ttft:
            ax.plot([p[0] for p in ttft], [p[1] for p in ttft], ".", ms=3, c=BASE, label="TTFT")
        if bench_ms:
            ax.axhline(bench_ms, c=OK, lw=1, ls="--", label=f"bench: {bench_ms:.1f} ms")
            if ratio:
                judged = "service time" if service else "latency"
                ax.axhline(bench_ms * ratio, c=BAD, lw=1, ls=":",
                           label=f"{judged} p95 alert: {ratio:g} × bench")
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("time (UTC)")
        ax.set_ylabel("ms")
        ax.set_title("Latency over time")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=3)
    return svg(draw, (6.4, 4.2))


MONITOR_CHARTS = ("input_length.svg", "label_share.svg", "latency.svg")


def monitor_charts(result: dict, context: dict, window: list[dict], out_dir: Path,
                   link: str = "plots/") -> str:
    """Write the monitor's charts that have data under ``out_dir`` (a chart without data is
    removed, so none is left from an earlier window); return the report's Charts section."""
    out_dir = Path(out_dir)
    m, t = result["metrics"], result["tables"]
    charts: dict[str, tuple[str, str]] = {}
    if t.get("input_length"):
        chart = input_length(t["input_length"], m.get("input_length_psi"), context["unit"])
        charts["input_length.svg"] = ("Input length: train vs live", chart)
    if t.get("labels"):
        charts["label_share.svg"] = ("Label shares: baseline vs served",
                                     label_shares(t["labels"], context.get("label_baseline", "baseline")))
    series = latency_series(window)
    if series:
        charts["latency.svg"] = ("Latency over time", latency(series, m.get("latency_bench_ms"),
                                                              context["thresholds"].get("latency_p95_ratio")))
    for name in MONITOR_CHARTS:
        if name in charts:
            write_text_atomic(out_dir / name, charts[name][1])
        else:
            (out_dir / name).unlink(missing_ok=True)
    if not charts:
        return ""
    return "\n## Charts\n\n" + "".join(f"![{alt}]({link}{name})\n\n" for name, (alt, _) in charts.items())
