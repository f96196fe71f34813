"""Where onnxruntime spends a real model's forward + backward: bench_models.py's graphs
(tp.to_onnx of the value_and_grad of a torch-exported ResNet-style CNN or GPT) run in one
InferenceSession with onnxruntime's profiler on, reported per op type and per node.

Each node's time is its minimum over the runs (a load spike from another process inflates
some runs, not the minimum), so the per-type sums add up to less than one run's wall time
(what the nodes do not account for: the executor, the profiler). One thread by default:
the per-node times then do not depend on how busy the other cores are. Not a test, and it
compares against no peer: it says where to look (bench_models.py says how fast it is).

    python bench/profile_ort_models.py [resnet|gpt] [--threads N] [--top K] [--runs R]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))


def profile(name: str, threads: int, runs: int):
    """(per-node minimum microseconds, op type, input shapes) for each node, and the node count."""
    import onnxruntime as ort

    import bench_models
    import tapeir as tp

    _, _, _, vg, args, _, _ = bench_models._imported(name)
    model = tp.to_onnx(vg)
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder:
        opts.profile_file_prefix = os.path.join(folder, name)
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feeds = {i.name: a for i, a in zip(model.graph.input, args)}
        for _ in range(runs):
            sess.run(None, feeds)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    best: dict = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            shapes = [list(s.values())[0] for s in e["args"].get("input_type_shape", [])]
            old = best.get(e["name"])
            if old is None or e["dur"] < old[0]:
                best[e["name"]] = (e["dur"], e["args"]["op_name"], shapes)
    return best, len(model.graph.node)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default="resnet", choices=["resnet", "gpt"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=15, help="also list the K slowest nodes")
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    try:
        import onnxruntime  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        print(f"{e.name or e} not installed: the models come from torch.onnx.export and run in onnxruntime; skipped")
        return 0
    best, exported = profile(a.model, a.threads, a.runs)
    total = sum(t for t, _, _ in best.values())
    by_type = collections.defaultdict(lambda: [0.0, 0])
    for t, op, _ in best.values():
        by_type[op][0] += t
        by_type[op][1] += 1
    print(f"{a.model} fwd+bwd, {a.threads} thread(s): {exported} exported nodes, {len(best)} after onnxruntime's "
          f"optimizations, sum of per-node minima {total / 1e3:.2f} ms\n")
    print("| op type | nodes | us | share |\n|---|---|---|---|")
    for op, (t, k) in sorted(by_type.items(), key=lambda kv: -kv[1][0]):
        print(f"| {op} | {k} | {t:.0f} | {100 * t / total:.1f}% |")
    if a.top:
        print(f"\nslowest {a.top} nodes (us, op type, input shapes):")
        for node, (t, op, shapes) in sorted(best.items(), key=lambda kv: -kv[1][0])[:a.top]:
            print(f"  {t:6.0f}  {op:14s} {node.rsplit('/', 1)[0][:28]:28s} {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
