// The N-API path of the CPU kernels: caller typed arrays in, results in place, checked against
// float64 references computed here, for every op (each kernel exists: a kernel that fails is a
// failure, never a skip). Argument validation is tested for every op: it happens in the
// bindings before any kernel sees a pointer.
import { DTypeError, InputError, NativeTensor, ShapeError, ops } from '../lib';
import { erf, expectClose, randomF32 } from './helpers';

type Op = 'nn' | 'nt' | 'tn';

function gemmRef(a: Float32Array, b: Float32Array, M: number, N: number, K: number, op: Op): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let acc = 0;
      for (let k = 0; k < K; k++) {
        const av = op === 'tn' ? a[k * M + m] : a[m * K + k];
        const bv = op === 'nt' ? b[n * K + k] : b[k * N + n];
        acc += (av ?? NaN) * (bv ?? NaN);
      }
      out[m * N + n] = acc;
    }
  }
  return out;
}

const geluRef = (x: number): number => x * 0.5 * (1 + erf(x / Math.SQRT2));

const f32 = (n: number): Float32Array => new Float32Array(n);

describe('ops.gemm', () => {
  const [M, N, K] = [5, 7, 3];
  it.each<Op>(['nn', 'nt', 'tn'])('%s matches the float64 reference on [5,7,3]', (op) => {
    const a = randomF32(M * K, 1);
    const b = randomF32(K * N, 2);
    const out = f32(M * N);
    ops.gemm({ out, a, b, m: M, n: N, k: K, op });
    expectClose(out, gemmRef(a, b, M, N, K, op));
  });

  it('bias-gelu epilogue writes preGelu and GELU(acc + bias)', () => {
    const a = randomF32(M * K, 3);
    const b = randomF32(N * K, 4);
    const bias = randomF32(N, 5);
    const out = f32(M * N);
    const preGelu = f32(M * N);
    ops.gemm({ out, a, b, m: M, n: N, k: K, op: 'nt', epilogue: 'bias-gelu', bias, preGelu });
    const acc = gemmRef(a, b, M, N, K, 'nt').map((x, i) => x + (bias[i % N] ?? NaN));
    expectClose(preGelu, acc);
    expectClose(out, acc.map(geluRef));
  });

  it('accumulate adds into out, on a tensor handle', () => {
    const a = randomF32(M * K, 6);
    const b = randomF32(K * N, 7);
    const t = NativeTensor.alloc([M, N]);
    t.data.fill(1);
    ops.gemm({ out: t, a, b, m: M, n: N, k: K, accumulate: true });
    expectClose(
      t.data,
      gemmRef(a, b, M, N, K, 'nn').map((x) => x + 1),
    );
    t.dispose();
  });

  it('validates arguments before the kernel', () => {
    const ok = { out: f32(M * N), a: f32(M * K), b: f32(K * N), m: M, n: N, k: K };
    expect(() => ops.gemm({ ...ok, a: new Float64Array(M * K) as unknown as Float32Array })).toThrow(DTypeError);
    expect(() => ops.gemm({ ...ok, a: new Float64Array(M * K) as unknown as Float32Array })).toThrow(
      'Expected a Float32Array for a but received Float64Array(15)',
    );
    expect(() => ops.gemm({ ...ok, b: f32(K * N - 1) })).toThrow(ShapeError);
    expect(() => ops.gemm({ ...ok, b: f32(K * N - 1) })).toThrow(
      'Expected Float32Array of length 21 [3, 7] for b but received Float32Array(20)',
    );
    expect(() => ops.gemm({ ...ok, out: [1, 2] as unknown as Float32Array })).toThrow(InputError);
    expect(() => ops.gemm({ ...ok, m: -1 })).toThrow(InputError);
    expect(() => ops.gemm({ ...ok, op: 'xx' as Op })).toThrow(InputError);
    expect(() => ops.gemm({ ...ok, epilogue: 'bias', bias: f32(N + 1) })).toThrow(ShapeError);
    expect(() => ops.gemm(null as unknown as Parameters<typeof ops.gemm>[0])).toThrow(InputError);
  });
});

describe('ops.layernormForward', () => {
  const [T, C] = [3, 7];
  it('matches the float64 reference with a residual, saving mean and rstd', () => {
    const inp = randomF32(T * C, 11);
    const residual = randomF32(T * C, 12);
    const weight = randomF32(C, 13, 0.5, 1.5);
    const bias = randomF32(C, 14);
    const out = f32(T * C);
    const sumOut = f32(T * C);
    const mean = f32(T);
    const rstd = f32(T);
    const eps = 1e-5;
    ops.layernormForward({ out, inp, weight, bias, rows: T, cols: C, eps, residual, sumOut, mean, rstd });
    const refOut = new Float64Array(T * C);
    const refSum = new Float64Array(T * C);
    const refMean = new Float64Array(T);
    const refRstd = new Float64Array(T);
    for (let t = 0; t < T; t++) {
      let mu = 0;
      for (let c = 0; c < C; c++) {
        const x = (inp[t * C + c] ?? NaN) + (residual[t * C + c] ?? NaN);
        refSum[t * C + c] = x;
        mu += x / C;
      }
      let variance = 0;
      for (let c = 0; c < C; c++) variance += ((refSum[t * C + c] ?? NaN) - mu) ** 2 / C;
      const rs = 1 / Math.sqrt(variance + eps);
      refMean[t] = mu;
      refRstd[t] = rs;
      for (let c = 0; c < C; c++) {
        refOut[t * C + c] = ((refSum[t * C + c] ?? NaN) - mu) * rs * (weight[c] ?? NaN) + (bias[c] ?? NaN);
      }
    }
    expectClose(sumOut, refSum);
    expectClose(mean, refMean);
    expectClose(rstd, refRstd);
    expectClose(out, refOut);
  });

  it('validates arguments before the kernel', () => {
    const ok = { out: f32(T * C), inp: f32(T * C), weight: f32(C), bias: f32(C), rows: T, cols: C };
    expect(() => ops.layernormForward({ ...ok, weight: f32(C + 1) })).toThrow(ShapeError);
    expect(() => ops.layernormForward({ ...ok, mean: f32(T + 1) })).toThrow(ShapeError);
    expect(() => ops.layernormForward({ ...ok, bias: new Int32Array(C) as unknown as Float32Array })).toThrow(
      DTypeError,
    );
    expect(() => ops.layernormForward({ ...ok, eps: Number.NaN })).toThrow(InputError);
    expect(() => ops.layernormForward({ ...ok, cols: 0 })).toThrow(InputError);
  });
});

describe('ops.geluForward', () => {
  it('matches the float64 erf GELU, in place', () => {
    const x = randomF32(37, 21, -4, 4);
    const ref = Float64Array.from(x, geluRef);
    ops.geluForward({ out: x, inp: x });
    expectClose(x, ref, 1e-6, 1e-5);
  });

  it('validates arguments before the kernel', () => {
    expect(() => ops.geluForward({ out: f32(3), inp: f32(4) })).toThrow(ShapeError);
    expect(() => ops.geluForward({ out: f32(3), inp: new Float64Array(3) as unknown as Float32Array })).toThrow(
      DTypeError,
    );
    expect(() => ops.geluForward({ out: f32(3), inp: [1, 2, 3] as unknown as Float32Array })).toThrow(InputError);
    expect(() => ops.geluForward({ out: new Float64Array(3) as unknown as Float32Array, inp: f32(3) })).toThrow(
      DTypeError,
    );
  });
});

describe('ops.softmaxForward', () => {
  it('matches the float64 row softmax', () => {
    const [N, V] = [3, 5];
    const inp = randomF32(N * V, 31, -8, 8);
    const out = f32(N * V);
    ops.softmaxForward({ out, inp, rows: N, cols: V });
    const ref = new Float64Array(N * V);
    for (let n = 0; n < N; n++) {
      const row = Array.from(inp.subarray(n * V, n * V + V));
      const max = Math.max(...row);
      const z = row.reduce((s, v) => s + Math.exp(v - max), 0);
      row.forEach((v, j) => (ref[n * V + j] = Math.exp(v - max) / z));
    }
    expectClose(out, ref, 1e-6, 1e-5);
  });

  it('validates arguments before the kernel', () => {
    expect(() => ops.softmaxForward({ out: f32(15), inp: f32(14), rows: 3, cols: 5 })).toThrow(ShapeError);
    expect(() => ops.softmaxForward({ out: f32(15), inp: f32(15), rows: 3, cols: 5.5 })).toThrow(InputError);
  });
});

describe('ops.attentionForward', () => {
  // Three sequences of 1, 3 and 5 tokens; 2 heads of 3.
  const offsets = new Int32Array([0, 1, 4, 9]);
  const [T, NH, HD] = [9, 2, 3];
  const C = NH * HD;

  it('matches the float64 reference on a packed batch', () => {
    const qkv = randomF32(T * 3 * C, 41, -2, 2);
    const out = f32(T * C);
    const lse = f32(NH * T);
    ops.attentionForward({ out, lse, qkv, offsets, numHeads: NH, headDim: HD });
    const refOut = new Float64Array(T * C);
    const refLse = new Float64Array(NH * T);
    const at = (row: number, part: number, h: number, d: number): number =>
      qkv[row * 3 * C + part * C + h * HD + d] ?? NaN;
    for (let s = 0; s + 1 < offsets.length; s++) {
      const [lo, hi] = [offsets[s] ?? 0, offsets[s + 1] ?? 0];
      for (let h = 0; h < NH; h++) {
        for (let i = lo; i < hi; i++) {
          const scores: number[] = [];
          for (let j = lo; j < hi; j++) {
            let dot = 0;
            for (let d = 0; d < HD; d++) dot += at(i, 0, h, d) * at(j, 1, h, d);
            scores.push(dot / Math.sqrt(HD));
          }
          const max = Math.max(...scores);
          const z = scores.reduce((acc, v) => acc + Math.exp(v - max), 0);
          refLse[h * T + i] = max + Math.log(z);
          for (let d = 0; d < HD; d++) {
            let acc = 0;
            scores.forEach((v, jj) => (acc += (Math.exp(v - max) / z) * at(lo + jj, 2, h, d)));
            refOut[i * C + h * HD + d] = acc;
          }
        }
      }
    }
    expectClose(out, refOut);
    expectClose(lse, refLse);
  });

  it('validates arguments before the kernel', () => {
    const ok = { out: f32(T * C), lse: f32(NH * T), qkv: f32(T * 3 * C), offsets, numHeads: NH, headDim: HD };
    expect(() => ops.attentionForward({ ...ok, qkv: f32(T * 3 * C - 1) })).toThrow(ShapeError);
    expect(() => ops.attentionForward({ ...ok, lse: f32(T) })).toThrow(ShapeError);
    expect(() => ops.attentionForward({ ...ok, offsets: new Int32Array([0, 5, 4, 9]) })).toThrow(InputError);
    expect(() => ops.attentionForward({ ...ok, offsets: new Int32Array([1, 4, 9]) })).toThrow(InputError);
    expect(() => ops.attentionForward({ ...ok, offsets: new Int32Array([0, 4, 8]) })).toThrow(ShapeError);
    expect(() => ops.attentionForward({ ...ok, offsets: new Float32Array([0, 9]) as unknown as Int32Array })).toThrow(
      DTypeError,
    );
    expect(() => ops.attentionForward({ ...ok, offsets: new Int32Array([0]) })).toThrow(InputError);
    expect(() => ops.attentionForward({ ...ok, dropoutP: 1 })).toThrow(InputError);
    expect(() => ops.attentionForward({ ...ok, seed: -1 })).toThrow(InputError);
    expect(() => ops.attentionForward({ ...ok, seed: 2n ** 64n })).toThrow(InputError);
  });
});
