"""The eval report: a folder a person opens in a browser.

index.html shows the run's settings, the headline metrics (every template set side by side), the
confusion matrix and per-class recall as plots, the most confused class pairs and the failed
images; metrics.json and predictions.csv hold the same numbers for machines.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import matplotlib

from .atomic import atomic_path, write_atomically
from .evalfiles import write_json
from .text import utf8_safe

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

#: Beyond this many classes the confusion plot shows the most-confused classes only.
MAX_MATRIX_CLASSES = 50


def confused_pairs(confusion: list[list[int]], classnames: list[str], top: int = 20) -> list[dict]:
    """The largest off-diagonal counts: (true class, predicted class, images), most first."""
    pairs = [(count, t, p) for t, row in enumerate(confusion) for p, count in enumerate(row) if t != p and count]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    return [{"true": classnames[t], "predicted": classnames[p], "count": c} for c, t, p in pairs[:top]]


def classes_to_show(confusion: list[list[int]], limit: int = MAX_MATRIX_CLASSES) -> list[int]:
    """All classes, or beyond ``limit`` the ``limit`` classes most involved in confusions, in order."""
    import numpy as np

    matrix = np.asarray(confusion, dtype=float)
    if len(matrix) <= limit:
        return list(range(len(matrix)))
    off_diagonal = matrix - np.diag(np.diag(matrix))
    mass = off_diagonal.sum(axis=0) + off_diagonal.sum(axis=1)
    return sorted(np.argsort(-mass, kind="stable")[:limit].tolist())


def write_report(folder: str | os.PathLike, record: dict, settings: dict) -> Path:
    """Write metrics.json, confusion.png, per_class_recall.png and index.html into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record, settings = utf8_safe(record), utf8_safe(settings)
    names, confusion = record["classnames"], record["confusion_matrix"]
    pairs = confused_pairs(confusion, names)
    write_json(folder / "metrics.json", {**record, "confused_pairs": pairs})
    shown = _confusion_plot(folder / "confusion.png", confusion, names)
    _recall_plot(folder / "per_class_recall.png", record["per_class"]["per_class_recall"], names)
    if (record.get("calibration") or {}).get("ece") is not None:
        reliability_plot(folder / "reliability.png", record["calibration"])
        risk_coverage_plot(folder / "risk_coverage.png", record["calibration"])
    write_atomically(folder / "index.html", _page(record, settings, pairs, shown))
    return folder / "index.html"


def _confusion_plot(path: Path, confusion: list[list[int]], names: list[str]) -> int:
    """Row-normalised confusion matrix; for many classes, the sub-matrix of the most confused ones."""
    import numpy as np

    matrix = np.asarray(confusion, dtype=float)
    keep = classes_to_show(confusion)
    sub = matrix[np.ix_(keep, keep)]
    rows = sub.sum(axis=1, keepdims=True)
    normalised = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
    size = max(5.0, 0.28 * len(keep) + 2)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    labels = [names[i] for i in keep]
    axes.set_xticks(range(len(keep)), labels, rotation=90, fontsize=8)
    axes.set_yticks(range(len(keep)), labels, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    title = "confusion (row-normalised)"
    if len(keep) < len(names):
        title += f": the {len(keep)} most confused of {len(names)} classes"
    axes.set_title(title)
    if len(keep) <= 20:
        for (r, c), value in np.ndenumerate(sub):
            if value:
                axes.text(c, r, int(value), ha="center", va="center", fontsize=7,
                          color="white" if normalised[r, c] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    _save_figure(figure, path)
    return len(keep)


def _recall_plot(path: Path, recall: list[float | None], names: list[str]) -> None:
    """Per-class recall, worst first (classes without images are left out)."""
    present = sorted(((r, n) for r, n in zip(recall, names, strict=True) if r is not None), key=lambda x: x[0])
    shown = present[:60]
    figure, axes = plt.subplots(figsize=(7, max(2.5, 0.22 * len(shown) + 1)))
    axes.barh(range(len(shown)), [r for r, _ in shown], color="#4477aa")
    axes.set_yticks(range(len(shown)), [n for _, n in shown], fontsize=8)
    axes.invert_yaxis()  # worst class on top
    axes.set_xlim(0, 1)
    axes.set_xlabel("recall")
    title = "per-class recall" + (f" (the {len(shown)} lowest of {len(present)})" if len(shown) < len(present) else "")
    axes.set_title(title)
    figure.tight_layout()
    _save_figure(figure, path)


def reliability_plot(path: Path, calibration: dict, what: str = "top-1 confidence", outcome: str = "accuracy",
                     counted: str = "images") -> None:
    """The reliability diagram: accuracy against mean confidence per confidence bin (bars), the diagonal of
    perfect calibration, and the share of images per bin; ECE in the title. Multi-label probabilities name
    their axes through ``what`` / ``outcome`` / ``counted``."""
    bins = calibration["reliability"]
    width = 1.0 / len(bins)
    figure, (axes, counts) = plt.subplots(2, 1, figsize=(5.5, 6.5), height_ratios=[3, 1], sharex=True)
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    axes.bar(centres, [b["accuracy"] or 0.0 for b in bins], width=width * 0.95, color="#4477aa", label=outcome)
    axes.bar(centres, [(b["confidence"] or 0.0) - (b["accuracy"] or 0.0) if b["count"] else 0.0 for b in bins],
             bottom=[b["accuracy"] or 0.0 for b in bins], width=width * 0.95, color="#ee6677", alpha=0.5,
             label="gap to confidence")
    axes.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_ylabel(outcome)
    axes.legend(loc="upper left", fontsize=8)
    axes.set_title(f"reliability ({len(bins)} bins): ECE {calibration['ece']:.4f}")
    total = max(sum(b["count"] for b in bins), 1)
    counts.bar(centres, [b["count"] / total for b in bins], width=width * 0.95, color="#999999")
    counts.set_xlabel(what)
    counts.set_ylabel(f"share of {counted}")
    figure.tight_layout()
    _save_figure(figure, path)


def risk_coverage_plot(path: Path, calibration: dict) -> None:
    """The risk-coverage curve (selective classification): error rate of the most confident images kept."""
    curve = calibration["risk_coverage"]
    figure, axes = plt.subplots(figsize=(5.5, 4))
    axes.plot([p["coverage"] for p in curve], [p["risk"] for p in curve], color="#4477aa")
    axes.set_xlim(0, 1)
    axes.set_ylim(bottom=0)
    axes.set_xlabel("coverage (share of images accepted, most confident first)")
    axes.set_ylabel("risk (error rate of those accepted)")
    axes.set_title(f"risk-coverage: AURC {calibration['aurc']:.4f}")
    figure.tight_layout()
    _save_figure(figure, path)


def write_multilabel_report(folder: str | os.PathLike, record: dict) -> Path:
    """metrics.json, per_label_ap.png (worst labels first) and index.html for a multi-label eval."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = utf8_safe(record)
    write_json(folder / "metrics.json", record)
    present = sorted(((ap, name) for name, ap in record["per_label_ap"].items() if ap is not None), key=lambda x: x[0])
    shown = present[:60]
    figure, axes = plt.subplots(figsize=(7, max(2.5, 0.22 * len(shown) + 1)))
    axes.barh(range(len(shown)), [ap for ap, _ in shown], color="#4477aa")
    axes.set_yticks(range(len(shown)), [name for _, name in shown], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("average precision")
    axes.set_title("per-label AP" + (f" (the {len(shown)} lowest of {len(present)})" if len(shown) < len(present)
                                     else f" (mAP {record['metrics']['mAP']:.3f})"))
    figure.tight_layout()
    _save_figure(figure, folder / "per_label_ap.png")
    calibration = record.get("calibration") or {}
    if calibration.get("ece") is not None:
        reliability_plot(folder / "reliability.png", calibration, "per-label probability", "observed frequency",
                         "(image, label) pairs")
    escape = html.escape
    metrics = "".join(f"<tr><td>{escape(k)}</td><td>{_number(v)}</td></tr>" for k, v in record["metrics"].items())
    compared = "".join(f"<tr><td>{escape(k)}</td><td>{_number(v)}</td></tr>"
                       for k, v in record["score_comparison"].items())
    labels = "".join(f"<tr><td>{escape(name)}</td><td>{_number(record['per_label_ap'][name])}</td>"
                     f"<td>{_number(record['per_label_threshold'][name])}</td>"
                     f"<td>{_number(entry['precision'])}</td><td>{_number(entry['recall'])}</td>"
                     f"<td>{_number(entry['f1'])}</td><td>{entry['support']}</td></tr>"
                     for name, entry in record["per_label"].items())
    page = (f"<!doctype html><meta charset='utf-8'><title>zsclip multi-label eval</title>"
            f"<h1>{escape(str(record['dataset']))}: multi-label, score {escape(record['score'])}</h1>"
            f"<p>model {escape(str(record['model']))}, {record['num_images']} images, thresholds "
            f"{escape(str(record['thresholds'].get('thresholds', 'fixed')))}</p>"
            f"<table border=1><tr><th>metric</th><th>value</th></tr>{metrics}</table>"
            f"<h2>mAP by way of scoring</h2><table border=1>{compared}</table>"
            + _label_calibration_section(calibration) +
            f"<h2>per-label AP</h2><img src='per_label_ap.png' alt='per-label AP'>"
            f"<table border=1><tr><th>label</th><th>AP</th><th>threshold</th><th>precision</th><th>recall</th>"
            f"<th>F1</th><th>support</th></tr>{labels}</table>")
    return write_atomically(folder / "index.html", page)


def _label_calibration_section(calibration: dict) -> str:
    """ECE, Brier and NLL of the per-label probabilities with their reliability diagram, or why there are none."""
    if calibration.get("ece") is None:
        note = calibration.get("note")
        return f"<h2>calibration</h2><p>{html.escape(note)}</p>" if note else ""
    return (f"<h2>calibration of the per-label probabilities</h2><table border=1><tr><th>ECE</th><th>Brier</th>"
            f"<th>NLL</th></tr><tr><td>{_number(calibration['ece'])}</td><td>{_number(calibration['brier'])}</td>"
            f"<td>{_number(calibration['nll'])}</td></tr></table>"
            "<img src='reliability.png' alt='reliability diagram of the per-label probabilities'>")


def _save_figure(figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)


def _page(record: dict, settings: dict, pairs: list[dict], shown: int) -> str:
    escape = html.escape
    comparison = record.get("template_comparison") or {record["templates"]: record["metrics"]}
    rows = "".join(
        f"<tr><td>{escape(name)}</td>" + "".join(f"<td>{_percent(m[k])}</td>" for k in
                                                 ("acc1", "acc5", "mean_per_class_recall")) + "</tr>"
        for name, m in comparison.items())
    settings_rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in settings.items())
    pair_rows = "".join(f"<tr><td>{escape(p['true'])}</td><td>{escape(p['predicted'])}</td><td>{p['count']}</td></tr>"
                        for p in pairs) or "<tr><td colspan=3>no confusions</td></tr>"
    failures = "".join(f"<li><code>{escape(f['path'])}</code>: {escape(f['error'])}</li>" for f in record["failures"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zsclip eval: {escape(str(record['dataset']))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem}}
table{{border-collapse:collapse;margin:1rem 0}} td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}
img{{max-width:100%;border:1px solid #eee}}</style>
</head><body>
<h1>Zero-shot evaluation: {escape(str(record['dataset']))}</h1>
<p>{record['num_images']} images, {len(record['classnames'])} classes, {record['num_failed']} failed to decode,
{record['images_per_second']} images/s.</p>
<h2>Metrics</h2>
<table><tr><th>templates</th><th>acc1</th><th>acc5</th><th>mean per-class recall</th></tr>{rows}</table>
<h2>Confusion matrix ({escape(record['templates'])})</h2>
<img src="confusion.png" alt="confusion matrix of {shown} classes">
<h2>Per-class recall</h2><img src="per_class_recall.png" alt="per-class recall">
{_calibration_section(record)}
<h2>Most confused pairs</h2><table><tr><th>true</th><th>predicted as</th><th>images</th></tr>{pair_rows}</table>
<h2>Run</h2><table>{settings_rows}</table>
<h2>Failed images</h2><ul>{failures or "<li>none</li>"}</ul>
<p>Numbers: <a href="metrics.json">metrics.json</a>, <a href="predictions.csv">predictions.csv</a>.</p>
</body></html>
"""


def _calibration_section(record: dict) -> str:
    """ECE, NLL, Brier, AURC with the reliability diagram and risk-coverage curve; the figures after a
    collection-level correction beside them when eval ran with --transductive."""
    measured = record.get("calibration") or {}
    if measured.get("ece") is None:
        return ""
    keys = ("ece", "nll", "brier", "aurc")
    rows = "<tr><td>as scored</td>" + "".join(f"<td>{_number(measured[k])}</td>" for k in keys) + "</tr>"
    corrected = record.get("transductive")
    if corrected:
        rows += (f"<tr><td>--transductive {html.escape(corrected['method'])}</td>"
                 + "".join(f"<td>{_number(corrected['calibration'][k])}</td>" for k in keys) + "</tr>")
        rows += ("<tr><td>acc1 without / with correction</td>"
                 f"<td colspan=4>{_percent(corrected['without']['acc1'])} / {_percent(corrected['metrics']['acc1'])}"
                 "</td></tr>")
    return ("<h2>Calibration</h2><table><tr><th></th><th>ECE (15 bins)</th><th>NLL</th><th>Brier</th><th>AURC</th>"
            f"</tr>{rows}</table><img src='reliability.png' alt='reliability diagram'> "
            "<img src='risk_coverage.png' alt='risk-coverage curve'>")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def tree_page(record: dict, tpr: float = 0.95) -> str:
    """The report page of a label-tree / open-set eval: accuracy per level and mistake severity per
    mode, the open-set figures, the per-node recall plot and the failed images."""
    record = utf8_safe(record)
    escape = html.escape
    modes = record["modes"]
    levels = [entry["level"] for entry in next(iter(modes.values()))["levels"]]
    head = "".join(f"<th>{escape(level)}</th>" for level in levels)
    rows = ""
    for mode, metrics in modes.items():
        cells = "".join(f"<td>{_percent(entry['accuracy'])}</td>" for entry in metrics["levels"])
        rows += f"<tr><td>{escape(mode)}</td>{cells}<td>{_number(metrics['mistake_severity'])}</td></tr>"
    openset = record.get("openset") or {}
    fpr_key = f"fpr{round(tpr * 100)}"
    open_rows = "".join(
        f"<tr><td>{escape(score)}</td><td>{_number(entry.get('auroc'))}</td><td>{_number(entry.get(fpr_key))}</td>"
        f"<td>{entry.get('num_known', 0)}</td><td>{entry.get('num_unknown', 0)}</td></tr>"
        for score, entry in openset.items())
    open_table = (f"<h2>Open set</h2><table><tr><th>score</th><th>AUROC</th><th>FPR at {tpr:.0%} TPR</th>"
                  f"<th>known</th><th>unknown</th></tr>{open_rows}</table>") if openset else ""
    failures = "".join(f"<li><code>{escape(f['path'])}</code>: {escape(f['error'])}</li>" for f in record["failures"])
    style = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto}"
             "td,th{padding:4px 10px;text-align:right}td:first-child{text-align:left}"
             "table{border-collapse:collapse}tr:nth-child(even){background:#f4f4f4}")
    title = escape(str(record["dataset"]))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>zsclip tree eval: {title}</title><style>{style}</style></head>
<body><h1>Label-tree evaluation: {title}</h1>
<p>Model {escape(str(record['model']))} {escape(str(record['pretrained']))}, templates
{escape(str(record['templates']))}. Mistake severity: the mean tree distance from a wrong answer to the truth
at the leaf level (lower is better).</p>
<h2>Accuracy per level</h2><table><tr><th>mode</th>{head}<th>mistake severity</th></tr>{rows}</table>
{open_table}
<h2>Per-node recall</h2><img src="node_recall.png" alt="per-node recall" style="max-width:100%">
<h2>Failed images ({len(record['failures'])})</h2><ul>{failures or '<li>none</li>'}</ul>
<p>Numbers: <a href="metrics.json">metrics.json</a>.</p></body></html>
"""


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
