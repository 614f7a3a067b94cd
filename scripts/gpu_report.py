#!/usr/bin/env python3
"""What scripts/gpu-check.sh found, read from its REPORT_DIR: bench.jsonl (elmo's rows beside
PyTorch's), tests.log and device.txt.

    python3 scripts/gpu_report.py best REPORT_DIR
        the fastest wgmma GEMM kernel whose tests passed (nothing when none did)
    python3 scripts/gpu_report.py summary REPORT_DIR BUILD TESTS SANITIZER NODE
        REPORT_DIR/summary.json, then every row against its PyTorch baseline and a verdict per
        opt-in kernel: its tests and its speed against what runs without it
    python3 scripts/gpu_report.py markdown REPORT_DIR
        the rows as markdown tables in the layout of docs/benchmarks-gpu.md

Every number comes from those files; where one side lacks a row, "-".
"""
import json
import math
import sys
from pathlib import Path


# ---- reading a report --------------------------------------------------------------------------

def bench_rows(report):
    out = []
    path = report / "bench.jsonl"
    for line in (path.read_text().splitlines() if path.exists() else []):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_verdicts(report):
    """(cases, kernels) from tests.log. cases: name -> PASS / FAIL (FAIL in any section wins),
    plus "cuda_test_bert(opt-ins forced)" -> its exit as PASS / SKIP / FAIL. kernels: each wgmma
    kernel's own section ("--- cuda_test_gemm wgmma=NAME") -> PASS, SKIP, "FAIL <case>" or
    "exit N"."""
    cases, kernels, section = {}, {}, ""
    path = report / "tests.log"
    for line in (path.read_text(errors="replace").splitlines() if path.exists() else []):
        w = line.split()
        if line.startswith("--- "):
            section = line[4:].strip()
        kernel = section.split("wgmma=")[1] if section.startswith("cuda_test_gemm wgmma=") else None
        if len(w) == 2 and w[0] in ("PASS", "FAIL"):
            cases[w[1]] = "FAIL" if cases.get(w[1]) == "FAIL" else w[0]
            if kernel and w[0] == "FAIL":
                kernels.setdefault(kernel, "FAIL " + w[1])
        elif len(w) == 2 and w[0] == "exit":
            status = {"0": "PASS", "77": "SKIP"}.get(w[1])
            if kernel:
                kernels.setdefault(kernel, status or f"exit {w[1]}")
            if "ELMO_CUDA_WGMMA=force" in section:
                cases["cuda_test_bert(opt-ins forced)"] = status or "FAIL"
    return cases, kernels


def gemm_rows(rows):
    """elmo's GEMM TFLOP/s by (m, n, k, op) and kernel, and cuBLAS's by (m, n, k, op)."""
    ours, cublas = {}, {}
    for r in rows:
        key = (r.get("m"), r.get("n"), r.get("k"), r.get("op"))
        if r.get("bench") == "cuda_gemm":
            ours.setdefault(key, {})[r.get("kernel", "mma")] = r.get("tflops")
        elif r.get("bench") == "torch_gemm":
            cublas[key] = r.get("tflops")
    return ours, cublas


def kernel_ranking(ours, cublas=None):
    """[(kernel, geometric mean, lowest, rows)] over the NT rows at T >= 4096, best first: of the
    TFLOP/s against cuBLAS's where cublas is given (rows without it left out), else of the
    TFLOP/s themselves (the same order when every kernel has every row)."""
    per = {}
    for key, ks in ours.items():
        if key[3] != "NT" or (key[0] or 0) < 4096:
            continue
        base = 1.0 if cublas is None else cublas.get(key)
        for k, v in ks.items():
            if v and base:
                per.setdefault(k, []).append(v / base)
    ranked = [(k, math.exp(sum(map(math.log, vs)) / len(vs)), min(vs), len(vs)) for k, vs in per.items()]
    return sorted(ranked, key=lambda t: -t[1])


def attention_rows(rows):
    """elmo's attention TFLOP/s by (B, S) and query rows per warp, and SDPA's by (B, S)."""
    ours, sdpa = {}, {}
    for r in rows:
        if r.get("bench") == "cuda_attention":
            ours.setdefault((r["B"], r["S"]), {})[r.get("rows", 16)] = r.get("tflops")
        elif r.get("bench") == "torch_sdpa":
            sdpa[(r["B"], r["S"])] = r.get("tflops")
    return ours, sdpa


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


# ---- best --------------------------------------------------------------------------------------

def best(report):
    _, kernels = test_verdicts(report)
    ours, _ = gemm_rows(bench_rows(report))
    for k, *_ in kernel_ranking(ours):
        if k.startswith("wgmma") and kernels.get(k) == "PASS":
            print(k)
            return


# ---- summary -----------------------------------------------------------------------------------

def summary(report, build, tests, san, node):
    rows = bench_rows(report)
    (report / "summary.json").write_text(json.dumps(
        {"build": build, "tests": tests, "sanitizer": san, "node": node, "bench": rows}, indent=1))
    print(f"build={build} tests={tests} sanitizer={san} node={node}")

    def key(r):
        return tuple(r.get(k) for k in ("m", "n", "k", "op", "B", "S", "NH", "HD", "model", "batch", "seq"))

    def value(r):
        return r.get("tflops") or r.get("seq_per_s") or r.get("tokens_per_s")

    theirs = {key(r): value(r) for r in rows if r.get("bench", "").startswith("torch") and "error" not in r}
    for r in rows:
        if "error" in r:
            print("ERROR", r)
        elif not r.get("bench", "").startswith("torch"):
            val, base = value(r), theirs.get(key(r))
            desc = " ".join(f"{k}={r[k]}" for k in ("m", "n", "k", "op", "B", "S", "HD", "model", "batch", "seq",
                                                    "dtype", "kernel", "rows", "variant") if k in r)
            print(f"{r['bench']:16s} {desc:64s} {val if val is not None else '-':>10} vs torch "
                  f"{base if base is not None else '-':>10} {ratio(val, base) + 'x' if val and base else '-'}")

    # The opt-ins, each against what runs without it, and their tests: whether to turn them on.
    cases, kernels = test_verdicts(report)

    def verdict(names):
        got = [cases.get(n, "not run") for n in names]
        return "PASS" if all(g == "PASS" for g in got) else ",".join(f"{n}={g}" for n, g in zip(names, got))

    ours, cublas = gemm_rows(rows)
    print("opt-in wgmma GEMM: tests " + verdict(["gemm_wgmma_occupancy", "gemm_nt_bf16_wgmma", "gemm_nt_f16_wgmma",
                                                  "gemm_wgmma_operand_layout", "cuda_test_bert(opt-ins forced)"]))
    for key_, ks in sorted((k, v) for k, v in ours.items() if k[3] == "NT" and (k[0] or 0) >= 4096):
        wg = {k: v for k, v in ks.items() if k.startswith("wgmma") and v}
        m, cb = ks.get("mma"), cublas.get(key_)
        if not wg or not m:
            continue
        bk = max(wg, key=wg.get)
        print(f"  {key_[:3]}: best {bk} {wg[bk]:.1f} TFLOP/s = {wg[bk] / m:.2f}x mma"
              + (f", {wg[bk] / cb:.2f}x cuBLAS (goal 0.70)" if cb else "")
              + " | " + " ".join(f"{k[5:]}={v:.0f}" for k, v in sorted(wg.items())))
    ranked = kernel_ranking(ours, cublas)
    for k, g, low, n in ranked:
        print(f"  {k:12s} geomean {g:.2f}x cuBLAS, min {low:.2f}x over {n} shapes"
              + (f"; tests {kernels.get(k, 'not run')}" if k.startswith("wgmma") else ""))
    for k, v in sorted(kernels.items()):
        if k not in {r[0] for r in ranked}:
            print(f"  {k:12s} tests {v} (no benchmark rows)")

    att, _ = attention_rows(rows)
    print("opt-in attention rows=32: tests " + verdict(["attention_forward_bf16_rows_per_warp",
                                                         "cuda_test_bert(opt-ins forced)"]))
    for shape, rs in sorted(att.items()):
        if rs.get(16) and rs.get(32):
            print(f"  B,S={shape}: rows=32 {rs[32]:.1f} vs rows=16 {rs[16]:.1f} TFLOP/s = {rs[32] / rs[16]:.2f}x")

    # bf16 hidden states: BERT-base rows tagged "wgmma:K+hidden" against the same kernel's "wgmma:K".
    print("opt-in bf16 hidden states: tests " + verdict(["bert_bf16_hidden_states_match_transformers"]))
    bert = {(r.get("variant"), r.get("batch"), str(r.get("seq"))): r.get("seq_per_s")
            for r in rows if r.get("bench") == "bert" and r.get("device") == "cuda"}
    for (v, batch, seq), sps in sorted(bert.items(), key=lambda kv: str(kv[0])):
        plain = bert.get((v[:-len("+hidden")], batch, seq)) if v and v.endswith("+hidden") else None
        if sps and plain:
            print(f"  base batch={batch} seq={seq}: {sps:.0f} vs {plain:.0f} seq/s with f32 hidden states "
                  f"({v[len('wgmma:'):-len('+hidden')]}) = {sps / plain:.2f}x")


# ---- markdown ----------------------------------------------------------------------------------

def table(title, columns, lines):
    """A markdown table under `title` (a heading, or a plain sentence when it ends in ':')."""
    print(f"\n{title}\n" if title.endswith(":") else f"\n## {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for line in lines:
        print("| " + " | ".join(str(c) for c in line) + " |")


def markdown(report):
    rows = bench_rows(report)
    device = (report / "device.txt").read_text().strip() if (report / "device.txt").exists() else "(no device.txt)"
    print("## Device\n\n```\n" + device + "\n```")

    ours, cublas = gemm_rows(rows)
    lines = []
    for key in sorted(ours, key=lambda k: (k[3] != "NT", k[0], k[1], k[2])):
        ks = ours[key]
        wg = {k: v for k, v in ks.items() if k.startswith("wgmma") and v}
        bk = max(wg, key=wg.get) if wg else None
        cb = cublas.get(key)
        lines.append([*key, fmt(ks.get("mma")), fmt(wg.get(bk)) if bk else "-", bk or "-", fmt(cb),
                      ratio(ks.get("mma"), cb), ratio(wg.get(bk), cb) if bk else "-"])
    table("GEMM, bf16 operands, fp32 accumulate (TFLOP/s)",
          ["M", "N", "K", "op", "mma.sync", "best wgmma", "its kernel", "cuBLAS", "mma / cuBLAS", "wgmma / cuBLAS"],
          lines)
    _, kernels = test_verdicts(report)
    ranked = kernel_ranking(ours, cublas)
    if ranked:
        table("Each kernel over the NT rows at T >= 4096 against cuBLAS (geometric mean, lowest), and its tests:",
              ["kernel", "geomean", "lowest", "tests"],
              [[k, f"{g:.2f}", f"{low:.2f}", kernels.get(k, "-") if k != "mma" else "-"] for k, g, low, _ in ranked])

    att, sdpa = attention_rows(rows)
    if att:
        table("Flash attention forward, bf16 (TFLOP/s)",
              ["B", "S", "16 rows/warp", "32 rows/warp", "SDPA flash", "16 / SDPA", "32 / SDPA"],
              [[*key, fmt(att[key].get(16)), fmt(att[key].get(32)), fmt(sdpa.get(key)),
                ratio(att[key].get(16), sdpa.get(key)), ratio(att[key].get(32), sdpa.get(key))] for key in sorted(att)])

    torch_bert = {(r["model"], r["batch"], str(r["seq"])): r for r in rows
                  if r.get("bench") == "torch_bert" and "model" in r}
    bert = [r for r in rows if r.get("bench") == "bert" and r.get("device") == "cuda"]
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
    cpu = [r for r in rows if r.get("bench") == "bert" and r.get("device") == "cpu"]
    if cpu:
        table("BERT on the host CPU (sequences/s)", ["model", "precision", "batch", "seq", "seq/s", "ms"],
              [[r["model"], r.get("precision", "-"), r["batch"], r["seq"], fmt(r.get("seq_per_s"), 0), fmt(r.get("ms"), 2)]
               for r in cpu])
    errors = [r for r in rows if "error" in r]
    if errors:
        print("\nBenchmarks that failed: " + ", ".join(f"{r.get('bench')} ({r.get('error')})" for r in errors))


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "best":
        best(Path(args[1]))
    elif len(args) == 6 and args[0] == "summary":
        summary(Path(args[1]), *args[2:])
    elif len(args) == 2 and args[0] == "markdown":
        markdown(Path(args[1]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
