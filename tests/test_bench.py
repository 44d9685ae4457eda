"""A smoke run of the benchmark with tiny numbers, so that it never rots (full runs stay out of CI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_quick_run_produces_every_figure_and_chart(tmp_path):
    scratch = tmp_path / "tmp"  # the run's TMPDIR, to see what it leaves there
    scratch.mkdir()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(tmp_path / "results.json"),
         "--charts", str(tmp_path / "charts")],
        capture_output=True, text=True, timeout=240, env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(scratch.iterdir()) == []
    assert "wrote" in run.stderr  # the progress display
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["cpus"] >= 1
    assert results["a_idle"]["devices"] == 200 and results["a_idle"]["kib_per_connection"] > 0
    assert results["a_idle"]["logins_per_s"] > 0
    for scenario in ("b_all_in_one", "c_cluster"):
        figures = results[scenario]
        assert figures["demand_window"]["per_s"] > 0 and figures["http_window"]["per_s"] > 0
        assert 0 < figures["demand_sequential"]["p50_ms"] <= figures["demand_sequential"]["max_ms"]
        assert [point["offered_per_s"] for point in figures["demand_offered"]] == [200, 500]
    sweep = results["b_all_in_one"]["demand_window_sweep"]
    assert [point["window"] for point in sweep] == [10, 50, 200] and all(point["acked"] > 0 for point in sweep)
    assert results["b_all_in_one"]["demand_window"] == sweep[2]
    assert results["c_cluster"]["broker_cpu_us_per_command"] > 0
    assert [point["nodes"] for point in results["d_nodes"]] == [1, 2, 4]
    assert all(point["broker_cpu_us_per_command"] > 0 for point in results["d_nodes"])
    for point in results["d_nodes"]:
        runs = [point["demand_fixed_rate"]] + ([point["demand_fixed_rate_one_node_loaded"]] if point["nodes"] > 1 else [])
        assert all(run["broker_cpu_us_per_command"] > 0 and run["broker_wakeups_per_command"] > 0 for run in runs)
    assert results["e_transports"]["zmq_echo_per_s"] > 0 and results["e_transports"]["line_echo_per_s"] > 0
    assert 0 < results["ratios"]["b_demand_window_vs_zmq_echo"]
    protocols = results["f_protocols"]
    for name in ("jsonl", "watch", "gt06", "teltonika"):
        figures = protocols[name]
        assert figures["devices"] == 20 and figures["logins_per_s"] > 0
        assert figures["commands"]["acked"] == figures["commands"]["sent"] > 0
        assert figures["commands"]["hub_cpu_us_per_command"] > 0
        assert figures["uplink"]["frames"] == 3200 and figures["uplink"]["hub_cpu_us_per_frame"] > 0
        assert figures["vs_jsonl"]["hub_cpu_per_uplink_frame"] > 0
    assert results["ratios"]["f_protocols_vs_jsonl"]["jsonl"]["hub_cpu_per_command"] == 1.0
    peers = results["g_peers"]  # devicehub, Mosquitto and NATS in the same shape (bench/peers.py)
    for name in ("mosquitto", "nats", "devicehub"):
        figures = peers[name]
        assert figures["window"]["acked"] == figures["window"]["sent"] == 500 and figures["window"]["per_s"] > 0
        assert figures["window"]["window"] == 200 and figures["one_at_a_time"]["window"] == 1
        assert 0 < figures["one_at_a_time"]["p50_ms"] <= figures["one_at_a_time"]["max_ms"]
        assert figures["memory"]["devices"] == 200 and figures["memory"]["kib_per_device"] > 0
        assert figures["memory"]["runs_kib_per_device"] == [figures["memory"]["kib_per_device"]]  # --quick: one run
        for role in ("server", "fleet", "caller"):  # CPU is read in 10 ms ticks: 500 commands may take none
            assert figures["window"][f"{role}_cpu_us_per_command"] >= 0
    ratios = results["ratios"]["g_peers"]
    assert ratios == peers["ratios"]
    for peer in ("mosquitto", "nats"):
        assert ratios[f"rate_vs_{peer}"] > 0 and ratios[f"p50_one_at_a_time_vs_{peer}"] > 0
        assert ratios[f"memory_per_device_vs_{peer}"] > 0
    assert len(ratios["targets"]) == 5 and all(isinstance(met, bool) for met in ratios["targets"].values())
    floor = peers["transport_floor"]  # bench/floor.py: the transports alone
    assert 0 < floor["tcp"]["p50_ms"] <= floor["tcp"]["p99_ms"] and 0 < floor["zmq"]["p50_ms"] <= floor["zmq"]["p99_ms"]
    assert floor["devicehub_floor_ms"] == round(floor["tcp"]["p50_ms"] + floor["zmq"]["p50_ms"], 3)
    assert ratios["p50_floor_vs_mosquitto"] > 0
    # bench/relay.py in the hub's place, bare, on Twisted, and with a Deferred and a deadline per
    # command: the floors of a Python hub, for commands only
    relays = ("relay", "relay_twisted", "relay_deferred")
    for name in relays:
        relay = peers[name]
        assert relay["window"]["acked"] == relay["window"]["sent"] == 500 and relay["window"]["per_s"] > 0
        assert 0 < relay["one_at_a_time"]["p50_ms"] <= relay["one_at_a_time"]["max_ms"] and "memory" not in relay
        assert ratios[f"{name}_p50_one_at_a_time_vs_mosquitto"] > 0 and ratios[f"p50_one_at_a_time_vs_{name}"] > 0
    assert set(ratios["cpu_us_per_command_window"]) == {"mosquitto", "nats", "devicehub", *relays}
    for chart in ("latency_vs_offered.png", "throughput.png", "memory.png", "protocols.png"):
        assert (tmp_path / "charts" / chart).read_bytes().startswith(b"\x89PNG")


def test_scale_benchmark_quick_run_produces_every_figure_and_chart(tmp_path):
    """bench/scale.py --quick: a real broker, 10 simulated nodes, 10 000 and 50 000 devices (~15 s)."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--out", str(tmp_path / "scale.json"),
         "--chart", str(tmp_path / "scale.png")],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "scale.json").read_text())
    assert [point["online"] for point in results["levels"]] == [10_000, 50_000]
    for point in results["levels"]:
        assert point["logins_per_s"] > 0 and point["logouts_per_s"] > 0 and point["broker_rss_bytes_per_device"] > 0
        assert point["commands"]["acked"] == point["commands"]["sent"] == 1000
        assert point["broker_cpu_us_per_login"] > 0 and point["commands"]["broker_cpu_us_per_command"] > 0
    events = results["responsiveness"]
    assert events["release_node"]["devices"] == 5000 and events["snapshot_big"]["devices"] == 20_000
    assert all(events[name]["finds"] > 0 for name in ("quiet", "release_node", "snapshot_node", "release_big"))
    assert results["restart"]["devices"] == 50_000 and results["restart"]["total_answers_every_device_s"] > 0
    assert (tmp_path / "scale.png").read_bytes().startswith(b"\x89PNG")


def test_every_micro_benchmark_case_runs_and_checks_its_own_answers():
    """bench/micro.py's cases (each asserts what it got back: every call acked, every byte read)."""
    cases = ["decode-send", "decode-reply", "demand", "demand-window", "device", "broker", "dispatch-epoll",
             "dispatch-lean"]
    runs = {case: subprocess.Popen([sys.executable, str(ROOT / "bench" / "micro.py"), case, "400"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for case in cases}
    for case, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, (case, err[-2000:])
        assert out.endswith(" us per round\n") and float(out.split()[0]) > 0, (case, out)
