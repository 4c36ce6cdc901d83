"""``r1pipe report``: plots and an offline HTML summary of a run directory.

``write_report(run_dir)`` reads the manifest, each ``STAGE/metrics.jsonl``, ``STAGE/eval.json``,
``STAGE/config.yaml`` and the benchmark results under ``RUN_DIR/eval/LABEL/BENCH/eval.json``,
and writes into ``RUN_DIR/report/``:

* one PNG per quantity that some stage logged: each reward, accuracy (with the held-out
  pass@1 measured during RL), response length over RL steps (the R1-Zero figure), reflection
  words, KL, entropy, clip fraction, SFT loss;
* ``index.html``: the per-stage table of held-out and benchmark results, the lineage of
  checkpoints, the plots (by relative path) and each stage's config. It loads nothing from
  the network.

Raises :class:`~r1pipe.errors.UserError` when the directory holds no run.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1pipe.errors import UserError
from r1pipe.evaluation import headline
from r1pipe.run_dir import STAGE_ORDER, RunDir
from r1pipe.training.metrics import read_metrics

# A panel: y label and the metric keys drawn in it (one line per stage and key).
Panel = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    panels: tuple[Panel, ...]
    caption: str
    stages: str = "rl"
    """Which stages are drawn: ``rl`` (those that log rewards) or ``sft`` (the others)."""


PLOTS = (
    Plot(
        "accuracy.png",
        "Accuracy",
        (("accuracy", ("accuracy", "eval/pass@1")),),
        "Share of correct sampled responses per RL step (lines) and held-out pass@1 "
        "measured every stage.rl_reasoning.eval_every steps (markers).",
    ),
    Plot(
        "response_length.png",
        "Response length",
        (("tokens", ("response_length_mean",)), ("truncated share", ("truncation_rate",))),
        "Mean response length over RL steps (the R1-Zero figure): the model learns to think "
        "longer when that pays. Below, the share cut at max_new_tokens.",
    ),
    Plot(
        "reflection.png",
        "Reflection words",
        (
            ("words per response", ("reflection_words_per_response",)),
            ("share of responses", ("reflection_rate",)),
        ),
        "Frequency of reflective words (wait, verify, recheck, ...) in sampled responses.",
    ),
    Plot("kl.png", "KL to the reference", (("KL (k3)", ("kl",)),), "Mean per-token KL."),
    Plot("entropy.png", "Entropy", (("nats/token", ("entropy",)),), "Policy entropy."),
    Plot(
        "clip_fraction.png",
        "Clip fraction",
        (("share of tokens", ("clip_frac", "clip_frac_low", "clip_frac_high")),),
        "Share of tokens whose ratio was clipped (low: advantage < 0, high: > 0).",
    ),
    Plot(
        "sft_loss.png",
        "SFT loss",
        (("loss", ("loss",)),),
        "Cross-entropy on response tokens per optimizer step of the SFT stages.",
        stages="sft",
    ),
)


def _is_rl(rows: list[dict[str, Any]]) -> bool:
    return any("reward" in r for r in rows)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(ys: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _draw(ax: Any, xs: list[float], ys: list[float], label: str, marker: bool) -> None:
    if marker:
        ax.plot(xs, ys, "o", label=label, markersize=5)
    elif len(ys) > 30:  # noisy RL curves: the raw line faint, a moving average on top
        (line,) = ax.plot(xs, ys, alpha=0.25, linewidth=1)
        ax.plot(xs, _smooth(ys, max(3, len(ys) // 20)), color=line.get_color(), label=label)
    else:
        ax.plot(xs, ys, label=label, linewidth=1.5, marker="." if len(ys) < 12 else None)


def _plot(plot: Plot, metrics: dict[str, list[dict[str, Any]]], out: Path) -> bool:
    """Draw one figure; False (no file) when no stage logged any of its keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    stages = {
        s: rows for s, rows in metrics.items() if rows and _is_rl(rows) == (plot.stages == "rl")
    }
    keys = [k for _, ks in plot.panels for k in ks]
    if not any(_series(rows, k)[0] for rows in stages.values() for k in keys):
        return False
    fig, axes = plt.subplots(
        len(plot.panels),
        1,
        figsize=(7.5, 2.2 + 2.3 * len(plot.panels)),
        sharex=True,
        squeeze=False,
    )
    for ax, (ylabel, panel_keys) in zip(axes[:, 0], plot.panels, strict=True):
        for stage, rows in stages.items():
            for key in panel_keys:
                xs, ys = _series(rows, key)
                if xs:
                    label = stage if len(panel_keys) == 1 else f"{stage}: {key}"
                    _draw(ax, xs, ys, label, marker=key.startswith("eval/"))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("step")
    axes[-1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(plot.title)
    fig.tight_layout()
    fig.savefig(out / plot.file, dpi=110)
    plt.close(fig)
    return True


def _reward_plot(metrics: dict[str, list[dict[str, Any]]], out: Path) -> Plot | None:
    """One panel per RL stage with the total reward and each weighted reward component."""
    rl = {s: rows for s, rows in metrics.items() if _is_rl(rows)}
    if not rl:
        return None
    names = sorted({k for rows in rl.values() for r in rows for k in r if k.startswith("reward/")})
    plot = Plot(
        "rewards.png",
        "Rewards",
        tuple((f"{s} reward", ("reward", *names)) for s in rl),
        "Mean reward per RL step: the weighted total and each rule reward (before weights).",
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(rl), 1, figsize=(7.5, 1.2 + 3 * len(rl)), squeeze=False)
    for ax, (stage, rows) in zip(axes[:, 0], rl.items(), strict=True):
        for key in ("reward", *names):
            xs, ys = _series(rows, key)
            if xs:
                _draw(ax, xs, ys, key, marker=False)
        ax.set_title(stage, fontsize=10)
        ax.set_ylabel("reward")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(plot.title)
    fig.tight_layout()
    fig.savefig(out / plot.file, dpi=110)
    plt.close(fig)
    return plot


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def benchmark_results(run_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{label: {benchmark: eval.json}}`` from ``RUN_DIR/eval/LABEL/BENCH/eval.json``."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(run_dir.glob("eval/*/*/eval.json")):
        data = _read_json(path)
        if data is not None:
            found.setdefault(path.parent.parent.name, {})[path.parent.name] = data
    return found


def _when(stamp: Any) -> str:
    """``2026-11-21T04:25:05+0000`` as ``2026-11-21 04:25:05``."""
    return str(stamp)[:19].replace("T", " ") if stamp else "–"


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, int | float) else "–"


def _bench_cell(res: dict[str, Any]) -> str:
    k = res.get("num_samples", 1)
    parts = [f"pass@1 {_pct(res.get('pass@1'))}"]
    if k > 1:
        parts += [
            f"cons@{k} {_pct(res.get(f'cons@{k}'))}",
            f"pass@{k} {_pct(res.get(f'pass@{k}'))}",
        ]
    return "<br>".join(parts) + f"<br><small>{res.get('num_problems', '?')} problems</small>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are HTML already (callers escape text)."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;
color:#1d1d1f;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.muted{color:#666}table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.35em .7em;text-align:left;vertical-align:top}
th{background:#f3f4f6}td.num{text-align:right}
.completed{color:#137333}.failed{color:#b3261e}.running{color:#b06000}
.plots{display:flex;flex-wrap:wrap;gap:1.2em}
figure{margin:0;flex:1 1 480px;max-width:540px}figure img{width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}pre{background:#f6f8fa;padding:.8em;overflow:auto;
font-size:.8em;max-height:30em}details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
"""


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/index.html`` and its PNGs; return the index path."""
    run = RunDir(run_dir)
    if not run.manifest_path.is_file():
        raise UserError(f"run.dir={run_dir}: no manifest.json; is this a run directory?")
    manifest = run.read_manifest()
    entries: dict[str, dict[str, Any]] = manifest["stages"]
    order = [s for s in STAGE_ORDER if s in entries] + [s for s in entries if s not in STAGE_ORDER]
    out = run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    metrics = {s: read_metrics(run.stage_dir(s) / "metrics.jsonl") for s in order}

    figures: list[Plot] = []
    rewards = _reward_plot(metrics, out)
    if rewards:
        figures.append(rewards)
    figures += [p for p in PLOTS if _plot(p, metrics, out)]
    wanted = {p.file for p in figures}
    for stale in out.glob("*.png"):  # plots of an earlier report that no longer apply
        if stale.name not in wanted:
            stale.unlink()

    benches = benchmark_results(run.path)
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>r1pipe report: {esc(run.path.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>r1pipe run report: {esc(run.path.name)}</h1>",
        f"<p class='muted'>{esc(str(run.path))} &middot; generated "
        f"{esc(time.strftime('%Y-%m-%d %H:%M:%S'))}</p>",
        "<h2>Results per stage</h2>",
        "<p class='muted'>Held-out: the task's held-out prompts at the end of each stage "
        "(STAGE/eval.json). Benchmarks: <code>r1pipe eval</code> results under "
        "RUN_DIR/eval/.</p>",
    ]
    parts += _results_section(run, entries, order, benches)
    parts += _lineage_section(entries, order)
    parts += _curves_section(figures)
    parts += _config_section(run, entries, order)
    parts.append(
        "<p class='muted'>TensorBoard: <code>tensorboard --logdir "
        f"{esc(str(run.path))}</code> (event files beside each metrics.jsonl).</p>"
    )
    parts.append("</body></html>\n")
    index = out / "index.html"
    index.write_text("\n".join(parts), encoding="utf-8")
    return index


def _results_section(
    run: RunDir, entries: dict[str, dict[str, Any]], order: list[str], benches: dict[str, Any]
) -> list[str]:
    """The per-stage table (held-out and benchmark results), the other checkpoints evaluated
    into the run, and the benchmarks' details."""
    esc = html.escape
    out: list[str] = []
    bench_names = sorted({b for per in benches.values() for b in per})
    rows = []
    for s in order:
        e = entries[s]
        held = _read_json(run.stage_dir(s) / "eval.json") or {}
        status = esc(str(e.get("status", "?")))
        wall = (e.get("metrics") or {}).get("wall_seconds")
        rows.append(
            [
                f"<b>{esc(s)}</b>",
                f"<span class='{status}'>{status}</span>",
                _pct(held.get("pass@1")),
                _pct(held.get("format_rate")),
                f"{held['mean_response_tokens']:.1f}" if "mean_response_tokens" in held else "–",
                *[
                    _bench_cell(benches[s][b]) if b in benches.get(s, {}) else "–"
                    for b in bench_names
                ],
                f"{wall:.0f} s" if isinstance(wall, int | float) else "–",
            ]
        )
    out.append(
        _table(
            ["stage", "status", "held-out pass@1", "format rate", "mean tokens"]
            + [esc(b) for b in bench_names]
            + ["wall time"],
            rows,
        )
    )
    others = [label for label in benches if label not in entries]
    if others:
        out.append("<p>Other checkpoints and predictions evaluated into this run:</p>")
        out.append(
            _table(
                ["evaluated", *[esc(b) for b in bench_names]],
                [
                    [esc(label)]
                    + [
                        _bench_cell(benches[label][b]) if b in benches[label] else "–"
                        for b in bench_names
                    ]
                    for label in others
                ],
            )
        )
    if benches:
        detail = []
        for label, per in benches.items():
            for b, res in per.items():
                proto = res.get("protocol", {})
                detail.append(
                    [
                        esc(label),
                        esc(b),
                        esc(headline(res)),
                        esc(
                            ", ".join(
                                f"{k}={proto[k]}"
                                for k in ("num_samples", "temperature", "top_p", "max_new_tokens")
                                if k in proto
                            )
                            or "scored predictions"
                        ),
                        f"{res['samples_per_s']:.2f}" if "samples_per_s" in res else "–",
                        f"<a href='../eval/{esc(label)}/{esc(b)}/eval.json'>eval.json</a>",
                    ]
                )
        out.append("<details><summary>Benchmark details</summary>")
        out.append(
            _table(["evaluated", "benchmark", "scores", "protocol", "samples/s", "file"], detail)
        )
        out.append("</details>")
    return out


def _lineage_section(entries: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    """What each stage started from, wrote and when."""
    esc = html.escape
    out: list[str] = []
    out.append("<h2>Lineage</h2>")
    lineage = []
    for s in order:
        e = entries[s]
        lineage.append(
            [
                f"<b>{esc(s)}</b>",
                esc(str(e.get("parent") or "–")),
                esc(str(e.get("checkpoint") or "–")),
                esc(str(e.get("config_hash") or "–")),
                esc(_when(e.get("start_time"))),
                esc(_when(e.get("end_time"))),
                esc(str(e.get("resumed_from") or e.get("error") or "")),
            ]
        )
    out.append(
        _table(
            ["stage", "starts from", "checkpoint", "config hash", "started", "ended", "note"],
            lineage,
        )
    )
    return out


def _curves_section(figures: list[Plot]) -> list[str]:
    """The training-curve plots."""
    esc = html.escape
    out: list[str] = []
    out.append("<h2>Training curves</h2>")
    if figures:
        out.append("<div class='plots'>")
        for p in figures:
            out.append(
                f"<figure><img src='{p.file}' alt='{esc(p.title)}'>"
                f"<figcaption>{esc(p.caption)}</figcaption></figure>"
            )
        out.append("</div>")
    else:
        out.append("<p>No stage has logged metrics yet.</p>")
    return out


def _config_section(run: RunDir, entries: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    """Each stage's final metrics and config.yaml."""
    esc = html.escape
    out: list[str] = []
    out.append("<h2>Configuration of each stage</h2>")
    for s in order:
        cfg_file = run.stage_dir(s) / "config.yaml"
        text = cfg_file.read_text() if cfg_file.is_file() else "(no config.yaml)"
        final = json.dumps(entries[s].get("metrics") or {}, indent=2)
        out.append(
            f"<details><summary>{esc(s)}</summary><p>Final metrics:</p><pre>{esc(final)}</pre>"
            f"<p>{esc(s)}/config.yaml:</p><pre>{esc(text)}</pre></details>"
        )
    return out
