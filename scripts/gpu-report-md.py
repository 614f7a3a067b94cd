#!/usr/bin/env python3
"""Markdown tables of a scripts/gpu-check.sh report, in the layout of docs/benchmarks-gpu.md.

    python3 scripts/gpu-report-md.py REPORT_DIR > REPORT_DIR/report.md

Reads REPORT_DIR/bench.jsonl (elmo's rows beside PyTorch's), device.txt and tests.log. Every
number comes from those files; rows that one side lacks show "-".
"""
import json
import math
import sys
from pathlib import Path


def rows(path):
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def table(title, columns, lines):
    """A markdown table under `title` (a heading, or a plain sentence when it ends in ':')."""
    print(f"\n{title}\n" if title.endswith(":") else f"\n## {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for line in lines:
        print("| " + " | ".join(str(c) for c in line) + " |")


def wgmma_verdicts(tests_log):
    """wgmma kernel -> PASS / FAIL <case> / exit N, from its own section of tests.log."""
    verdict, kernel = {}, None
    if not tests_log.exists():
        return verdict
    for line in tests_log.read_text(errors="replace").splitlines():
        if line.startswith("--- "):
            section = line[4:].strip()
            kernel = section.split("wgmma=")[1] if section.startswith("cuda_test_gemm wgmma=") else None
        elif kernel and line.startswith("FAIL "):
            verdict.setdefault(kernel, line.strip())
        elif kernel and line.startswith("exit "):
            code = line.split()[1]
            verdict.setdefault(kernel, {"0": "PASS", "77": "SKIP"}.get(code, f"exit {code}"))
    return verdict


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    report = Path(sys.argv[1])
    data = rows(report / "bench.jsonl")
    device = (report / "device.txt").read_text().strip() if (report / "device.txt").exists() else "(no device.txt)"
    print("## Device\n\n```\n" + device + "\n```")

    # ---- GEMM ----
    cublas = {(r["m"], r["n"], r["k"], r["op"]): r.get("tflops") for r in data if r.get("bench") == "torch_gemm"}
    ours = {}
    for r in data:
        if r.get("bench") == "cuda_gemm":
            ours.setdefault((r["m"], r["n"], r["k"], r["op"]), {})[r.get("kernel", "mma")] = r.get("tflops")
    lines = []
    for key in sorted(ours, key=lambda k: (k[3] != "NT", k[0], k[1], k[2])):
        ks = ours[key]
        wg = {k: v for k, v in ks.items() if k.startswith("wgmma") and v}
        best = max(wg, key=wg.get) if wg else None
        cb = cublas.get(key)
        lines.append([*key[:4], fmt(ks.get("mma")), fmt(wg.get(best)) if best else "-", best or "-", fmt(cb),
                      ratio(ks.get("mma"), cb), ratio(wg.get(best), cb) if best else "-"])
    table("GEMM, bf16 operands, fp32 accumulate (TFLOP/s)",
          ["M", "N", "K", "op", "mma.sync", "best wgmma", "its kernel", "cuBLAS", "mma / cuBLAS", "wgmma / cuBLAS"],
          lines)
    verdicts = wgmma_verdicts(report / "tests.log")
    per = {}
    for key, ks in ours.items():
        for k, v in ks.items():
            if v and cublas.get(key) and key[0] >= 4096 and key[3] == "NT":
                per.setdefault(k, []).append(v / cublas[key])
    if per:
        lines = []
        for k, rs in sorted(per.items(), key=lambda kv: -sum(map(math.log, kv[1])) / len(kv[1])):
            g = math.exp(sum(map(math.log, rs)) / len(rs))
            lines.append([k, f"{g:.2f}", f"{min(rs):.2f}", verdicts.get(k, "-") if k != "mma" else "-"])
        table("Each kernel over the NT rows at T >= 4096 against cuBLAS (geometric mean, lowest), and its tests:",
              ["kernel", "geomean", "lowest", "tests"], lines)

    # ---- attention ----
    sdpa = {(r["B"], r["S"]): r.get("tflops") for r in data if r.get("bench") == "torch_sdpa"}
    att = {}
    for r in data:
        if r.get("bench") == "cuda_attention":
            att.setdefault((r["B"], r["S"]), {})[r.get("rows", 16)] = r.get("tflops")
    if att:
        table("Flash attention forward, bf16 (TFLOP/s)",
              ["B", "S", "16 rows/warp", "32 rows/warp", "SDPA flash", "16 / SDPA", "32 / SDPA"],
              [[*key, fmt(att[key].get(16)), fmt(att[key].get(32)), fmt(sdpa.get(key)),
                ratio(att[key].get(16), sdpa.get(key)), ratio(att[key].get(32), sdpa.get(key))] for key in sorted(att)])

    # ---- BERT ----
    torch_bert = {(r["model"], r["batch"], str(r["seq"])): r for r in data if r.get("bench") == "torch_bert" and "model" in r}
    bert = [r for r in data if r.get("bench") == "bert" and r.get("device") == "cuda"]
    if bert:
        lines = []
        for r in bert:
            t = torch_bert.get((r["model"], r["batch"], str(r["seq"])), {})
            variant = (r.get("variant", "default").replace("wgmma:1", "wgmma (size rule)").replace("wgmma:", "")
                       .replace("+hidden", " + bf16 hidden states"))
            lines.append([r["model"], r["batch"], r["seq"], variant, fmt(r.get("seq_per_s"), 0), fmt(r.get("ms"), 2),
                          fmt(t.get("seq_per_s"), 0), fmt(t.get("ms"), 2), ratio(r.get("seq_per_s"), t.get("seq_per_s"))])
        table("BERT inference, bf16 (sequences/s)",
              ["model", "batch", "seq", "variant", "elmo seq/s", "elmo ms", "PyTorch seq/s", "PyTorch ms", "ratio"], lines)
    cpu = [r for r in data if r.get("bench") == "bert" and r.get("device") == "cpu"]
    if cpu:
        table("BERT on the host CPU (sequences/s)", ["model", "precision", "batch", "seq", "seq/s", "ms"],
              [[r["model"], r.get("precision", "-"), r["batch"], r["seq"], fmt(r.get("seq_per_s"), 0), fmt(r.get("ms"), 2)]
               for r in cpu])
    errors = [r for r in data if "error" in r]
    if errors:
        print("\nBenchmarks that failed: " + ", ".join(f"{r.get('bench')} ({r.get('error')})" for r in errors))


if __name__ == "__main__":
    main()
