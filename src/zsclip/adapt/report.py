"""The adaptation report: WiSE-FT's figure (accuracy on one set against another across alpha).

metrics.json holds the sweep and how the head was made; alpha_sweep.png plots, for two eval sets,
the first (the adaptation distribution) on x against the second (the shifted one) on y, one point
per alpha joined in order, zero-shot (alpha 0) and the adapted model (alpha 1) marked; with one
eval set, accuracy against alpha. index.html shows both.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

from ..outputs.atomic import write_atomically

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def plot_sweep(rows: Sequence[dict], names: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Draw the alpha sweep ``rows`` ([{"alpha": a, NAME: acc, ...}]) for eval sets ``names``."""
    path = Path(path)
    alphas = [row["alpha"] for row in rows]
    figure, axes = plt.subplots(1, 2 if len(names) >= 2 else 1, figsize=(11 if len(names) >= 2 else 6, 4.6))
    axes = list(axes) if len(names) >= 2 else [axes]
    if len(names) >= 2:
        x = [100 * row[names[0]] for row in rows]
        y = [100 * row[names[1]] for row in rows]
        ax = axes[0]
        ax.plot(x, y, "-o", color="tab:blue", markersize=4, zorder=2)
        ax.scatter([x[0]], [y[0]], s=110, marker="*", color="tab:green", zorder=3,
                   label=f"zero-shot (alpha {alphas[0]:g})")
        ax.scatter([x[-1]], [y[-1]], s=80, marker="D", color="tab:red", zorder=3,
                   label=f"adapted (alpha {alphas[-1]:g})")
        for xi, yi, a in zip(x, y, alphas, strict=True):
            ax.annotate(f"{a:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(f"accuracy on {names[0]} (%)")
        ax.set_ylabel(f"accuracy on {names[1]} (%)")
        ax.set_title("WiSE-FT: each point is one mixing weight alpha")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    ax = axes[-1]
    for name in names:
        ax.plot(alphas, [100 * row[name] for row in rows], "-o", markersize=4, label=name)
    ax.set_xlabel("alpha (0 = zero-shot, 1 = adapted)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_report(folder: str | os.PathLike, record: dict, names: Sequence[str]) -> Path:
    """metrics.json, alpha_sweep.png (when there is a sweep) and index.html in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_text(folder / "metrics.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    rows = record.get("sweep") or []
    figure = ""
    if rows and names:
        plot_sweep(rows, names, folder / "alpha_sweep.png", title=f"{record['method']}, data {record['data']}")
        figure = '<img src="alpha_sweep.png" alt="accuracy across alpha">'
    header = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join("<tr><td>" + f"{row['alpha']:g}" + "</td>"
                   + "".join(f"<td>{100 * row[n]:.1f}%</td>" for n in names) + "</tr>" for row in rows)
    settings = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                       for k, v in record.items() if k not in ("sweep", "failures"))
    failures = "".join(f"<li>{html.escape(f['path'])}: {html.escape(f['error'])}</li>"
                       for f in record.get("failures", []))
    page = (f"<!doctype html><meta charset='utf-8'><title>zsclip adapt report</title>"
            f"<h1>zsclip adapt: {html.escape(record['method'])}</h1>{figure}"
            f"<h2>Accuracy across alpha</h2><table border=1 cellpadding=4><tr><th>alpha</th>{header}</tr>{body}</table>"
            f"<h2>Settings</h2><table border=1 cellpadding=4>{settings}</table>"
            + (f"<h2>Skipped images</h2><ul>{failures}</ul>" if failures else ""))
    _atomic_text(folder / "index.html", page)
    return folder / "index.html"


def _atomic_text(path: Path, text: str) -> None:
    write_atomically(path, text)
