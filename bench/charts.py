"""Charts of a bench/run.py result (matplotlib, PNG): `python bench/charts.py RESULTS.json DIR`."""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def draw(results: dict, directory: Path) -> list[Path]:
    """Write latency_vs_offered.png, throughput.png, memory.png (protocols.png with scenario f); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []

    figure, axes = plt.subplots(figsize=(9, 4))
    for scenario, where, style in (("b_all_in_one", "one process", "-"), ("c_cluster", "cluster", "--")):
        offered = results[scenario]["demand_offered"]
        rates = [point["offered_per_s"] for point in offered]
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
            axes.plot(rates, [point[key] for point in offered], style, marker="o", label=f"{label}, {where}")
    sweep = results["b_all_in_one"].get("demand_window_sweep", [])
    if sweep:  # a closed loop: x is what a window of calls achieved
        axes.plot([point["per_s"] for point in sweep], [point["p99_ms"] for point in sweep], ":", marker="s",
                  label="p99, one process, windows " + "/".join(str(point["window"]) for point in sweep))
    axes.set_yscale("log")
    axes.set(xlabel="offered (or, for windows, achieved) commands/s (Demand)", ylabel="latency (ms, log scale)",
             title="Command latency under load")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    paths.append(_save(figure, directory / "latency_vs_offered.png"))

    b, c, e = results["b_all_in_one"], results["c_cluster"], results["e_transports"]
    bars = {
        "bare ZeroMQ echo": e["zmq_echo_per_s"],
        "bare Twisted line echo": e["line_echo_per_s"],
        "b Demand (1 process)": b["demand_window"]["per_s"],
        "b HTTP (1 process)": b.get("http_window", {}).get("per_s", 0),
        "b HTTP (+1 api process)": b.get("http_two_api_processes", {}).get("per_s", 0),
        "c Demand (cluster)": c["demand_window"]["per_s"],
        "c HTTP (cluster)": c.get("http_window", {}).get("per_s", 0),
    }
    for point in results["d_nodes"]:
        bars[f"d {point['nodes']} node(s)"] = point["demand_window"]["per_s"]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.barh(list(bars), [max(value, 1) for value in bars.values()])
    for row, value in enumerate(bars.values()):
        axes.text(max(value, 1), row, f" {value:,}", va="center", fontsize=8)
    axes.set_xscale("log")
    axes.set(xlabel="acked commands/s, log scale (window of 200; HTTP 50 in flight)", title="Throughput per scenario")
    axes.invert_yaxis()
    paths.append(_save(figure, directory / "throughput.png"))

    points = results["a_idle"]["memory_points"]
    figure, axes = plt.subplots(figsize=(6, 4))
    points = sorted(points, key=lambda point: point["devices"])
    axes.plot([p["devices"] for p in points], [p["rss_kib"] / 1024 for p in points], marker=".")
    axes.set(xlabel="idle devices connected to one node", ylabel="node process RSS (MiB)", title="Memory vs devices")
    paths.append(_save(figure, directory / "memory.png"))

    protocols = results.get("f_protocols")
    if protocols:
        names = [name for name in ("jsonl", "watch", "gt06", "teltonika") if name in protocols]
        measures = (("hub_cpu_per_login", "per login"), ("hub_cpu_per_command", "per command"),
                    ("hub_cpu_per_uplink_frame", "per uplink frame"))
        figure, axes = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(measures)
        for i, (key, label) in enumerate(measures):
            values = [protocols[name]["vs_jsonl"][key] or 0 for name in names]
            positions = [j + (i - 1) * width for j in range(len(names))]
            axes.bar(positions, values, width, label=label)
            for x, value in zip(positions, values):
                axes.text(x, value, f"{value:.2f}", ha="center", va="bottom", fontsize=7)
        axes.axhline(protocols.get("limit_vs_jsonl", 1.5), color="red", linestyle="--", linewidth=1, label="limit")
        axes.set_xticks(range(len(names)), names)
        axes.set(ylabel="hub CPU, JSON Lines = 1", title="Hub CPU per protocol, against JSON Lines (same run)")
        axes.legend(fontsize=8)
        paths.append(_save(figure, directory / "protocols.png"))
    return paths


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


if __name__ == "__main__":
    for written in draw(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])):
        print(written)
