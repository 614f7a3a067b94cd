import { DisposedError, InputError, NativeTensor, ShapeError, ops } from '../lib';
import { native } from '../lib/native';
import { collectUntil, settle } from './helpers';

const testing = native().testing;

describe('NativeTensor', () => {
  it('allocates zero-filled native memory with its shape', () => {
    const t = NativeTensor.alloc([3, 5]);
    expect(t.shape).toEqual([3, 5]);
    expect(t.size).toBe(15);
    // (instanceof would compare against the test sandbox's own Float32Array)
    expect(Object.prototype.toString.call(t.data)).toBe('[object Float32Array]');
    expect(t.data.length).toBe(15);
    expect(Array.from(t.data).every((x) => x === 0)).toBe(true);
    expect(t.handle.native).toBe(true);
    t.dispose();
  });

  it('data is a zero-copy view: the same memory on every read, written by kernels in place', () => {
    const t = NativeTensor.alloc([4]);
    const view = t.data;
    expect(t.data).toBe(view);
    view.set([1, 2, 3, 4]);
    expect(Array.from(t.data)).toEqual([1, 2, 3, 4]);
    // The kernel reads the tensor's memory (a [4,1] · [1,1] product with 1 copies it) ...
    const out = new Float32Array(4);
    ops.gemm({ out, a: t, b: new Float32Array([1]), m: 4, n: 1, k: 1 });
    expect(Array.from(out)).toEqual([1, 2, 3, 4]);
    // ... and writes it in place, where the view reads.
    ops.gemm({ out: t, a: new Float32Array([1, 2, 3, 4]), b: new Float32Array([2]), m: 4, n: 1, k: 1 });
    expect(Array.from(view)).toEqual([2, 4, 6, 8]);
    t.dispose();
  });

  it('dispose() is idempotent and every later use throws ERR_DISPOSED', () => {
    const t = NativeTensor.alloc([2, 2]);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.data).toThrow(DisposedError);
    try {
      t.data.fill(1);
    } catch (err) {
      expect((err as DisposedError).code).toBe('ERR_DISPOSED');
    }
    expect(() => ops.softmaxForward({ out: t, inp: new Float32Array(4), rows: 2, cols: 2 })).toThrow(DisposedError);
  });

  it('a disposed handle passed straight to the addon is refused natively', () => {
    const t = NativeTensor.alloc([3]);
    const handle = t.handle;
    t.dispose();
    expect(() => native().ops.geluForward(new Float32Array(3), handle, 3)).toThrow(DisposedError);
    expect(() => native().ops.geluForward(new Float32Array(3), handle, 3)).toThrow(
      'Expected a live tensor for inp but received a disposed tensor',
    );
  });

  it('supports `using` through Symbol.dispose', () => {
    const t = NativeTensor.alloc([1]);
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
  });

  it('frees its memory on dispose() when no view was handed out', () => {
    const before = testing.liveStorages();
    const t = NativeTensor.alloc([1000]);
    expect(testing.liveStorages()).toBe(before + 1);
    t.dispose();
    expect(testing.liveStorages()).toBe(before);
  });

  it('a view taken before dispose() keeps the memory alive until it is collected', async () => {
    const before = await settle(() => testing.liveStorages());
    // Kept out of the async frame so that nothing here still references the view.
    const readAfterDispose = (): number | undefined => {
      const t = NativeTensor.alloc([256]);
      const view = t.data;
      view[7] = 42;
      t.dispose();
      expect(testing.liveStorages()).toBe(before + 1); // the view still owns the memory
      return view[7]; // still readable: not freed under the view
    };
    expect(readAfterDispose()).toBe(42);
    expect(await collectUntil(() => testing.liveStorages() === before)).toBe(true);
  });

  it('rejects bad shapes with typed errors', () => {
    expect(() => NativeTensor.alloc([])).toThrow(ShapeError);
    expect(() => NativeTensor.alloc([1, 2, 3, 4, 5])).toThrow(ShapeError);
    expect(() => NativeTensor.alloc([2, -1])).toThrow(InputError);
    expect(() => NativeTensor.alloc([2.5])).toThrow('Expected an integer >= 0 for shape[0] but received number 2.5');
    expect(() => NativeTensor.alloc('3' as unknown as number[])).toThrow(InputError);
  });
});

describe('native buffers handed to JS', () => {
  it('are external ArrayBuffers freed by their finalizer', async () => {
    const before = await settle(() => testing.liveStorages());
    let buf: Float32Array | undefined = testing.nativeFloat32(1024, 0.5);
    expect(buf.length).toBe(1024);
    expect(buf[0]).toBe(0.5);
    expect(buf[1023]).toBe(0.5);
    expect(testing.liveStorages()).toBe(before + 1);
    buf = undefined;
    expect(await collectUntil(() => testing.liveStorages() === before)).toBe(true);
  });

  describe('where the runtime forbids external buffers', () => {
    beforeAll(() => testing.setExternalBuffers(false));
    afterAll(() => testing.setExternalBuffers(true));

    it('native memory is copied and freed at once', () => {
      const before = testing.liveStorages();
      const buf = testing.nativeFloat32(5, 2);
      expect(Array.from(buf)).toEqual([2, 2, 2, 2, 2]);
      expect(testing.liveStorages()).toBe(before);
    });

    it('a tensor lives in a JS ArrayBuffer and data is still a view', () => {
      const t = NativeTensor.alloc([2, 2]);
      expect(t.handle.native).toBe(false);
      expect(t.data).toBe(t.data);
      t.data.set([1, 2, 3, 4]);
      const out = new Float32Array(4);
      ops.gemm({ out, a: t, b: new Float32Array([1]), m: 4, n: 1, k: 1 });
      expect(Array.from(out)).toEqual([1, 2, 3, 4]);
      t.dispose();
      expect(() => t.data).toThrow(DisposedError);
    });
  });
});
