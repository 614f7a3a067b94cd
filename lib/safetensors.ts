/**
 * A small reader and writer of safetensors files of F32 tensors (Hugging Face's format), strict
 * about the header: model weights (chat-model fusion), LoRA adapters in peft's format. The
 * native core has its own reader for loading models; this one serves the TypeScript side.
 */
import * as fs from 'node:fs';

import { CheckpointError, ElmoError, InputError, ShapeError, describeValue, expected } from './errors';

// ------------------------------------------------------------------------------------------------
// safetensors (F32)
//
//   [u64 little-endian N] [N bytes of JSON header, space-padded] [data section]
//   header: { "<name>": { "dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end] }, ...,
//             "__metadata__"?: { "<key>": "<string>" } }
//   offsets are relative to the data section; sorted by begin the tensors tile it exactly.

/** The longest header read (as the native reader and Hugging Face's): 100 MiB. */
const ST_MAX_HEADER_BYTES = 100 * 1024 * 1024;
const ST_MAX_RANK = 8;
const ST_ENTRY_KEYS = ['data_offsets', 'dtype', 'shape'];

/** One F32 tensor of a safetensors file. */
export interface F32Tensor {
  /** Dimensions, outermost first (`[]` for a scalar). */
  shape: readonly number[];
  /** Row-major values; `length` is the product of `shape`. */
  data: Float32Array;
}

/** What a safetensors file holds. */
export interface SafetensorsContents {
  /** The tensors by name, in file order (by data offset) when read. */
  tensors: ReadonlyMap<string, F32Tensor>;
  /** The header's `__metadata__` (strings only), when it has one. */
  metadata?: Readonly<Record<string, string>>;
}

/** One validated header entry; offsets into the data section, in bytes. */
export interface StEntry {
  name: string;
  shape: number[];
  begin: number;
  end: number;
}

/** A validated header. */
interface StHeader {
  /** Sorted by `begin`: they tile the data section. */
  entries: StEntry[];
  metadata: Record<string, string> | undefined;
  /** Offset of the data section in the file: 8 + header length. */
  dataStart: number;
  dataBytes: number;
}

function bad(what: string, message: string): CheckpointError {
  return new CheckpointError(`${what}: ${message}`);
}

/** The header length from the first 8 bytes, checked against the file's size. */
function headerLength(first8: Uint8Array, fileBytes: number, what: string): number {
  if (fileBytes < 8 || first8.length < 8) {
    throw bad(what, `truncated: ${String(fileBytes)} bytes is too short for the 8-byte header length`);
  }
  const n = Buffer.from(first8.buffer, first8.byteOffset, 8).readBigUInt64LE(0);
  if (n > BigInt(ST_MAX_HEADER_BYTES)) {
    throw bad(what, `header length ${String(n)} exceeds the limit of ${String(ST_MAX_HEADER_BYTES)} bytes`);
  }
  const len = Number(n);
  if (len > fileBytes - 8) {
    throw bad(
      what,
      `truncated: header length ${String(len)} but ${String(fileBytes - 8)} bytes follow the length field`,
    );
  }
  return len;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

/** Parses and validates the JSON header (`json`: its N bytes) of a file of `fileBytes` bytes. */
function parseHeader(json: Uint8Array, fileBytes: number, what: string): StHeader {
  const dataStart = 8 + json.length;
  const dataBytes = fileBytes - dataStart;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(json);
  } catch {
    throw bad(what, 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw bad(what, 'header is not a JSON object');
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (err) {
    throw bad(what, `header is not JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(root)) throw bad(what, 'header is not a JSON object');
  let metadata: Record<string, string> | undefined;
  const entries: StEntry[] = [];
  for (const [name, v] of Object.entries(root)) {
    if (name === '__metadata__') {
      if (!isPlainObject(v)) throw bad(what, '__metadata__ is not an object of strings');
      for (const [k, s] of Object.entries(v)) {
        if (typeof s !== 'string') throw bad(what, `__metadata__["${k}"] is not a string`);
      }
      metadata = { ...(v as Record<string, string>) };
      continue;
    }
    const at = `tensor '${name}'`;
    if (name === '') throw bad(what, 'a tensor name is empty');
    if (!isPlainObject(v)) throw bad(what, `${at}: entry is not an object`);
    const keys = Object.keys(v).sort();
    if (keys.length !== ST_ENTRY_KEYS.length || keys.some((k, i) => k !== ST_ENTRY_KEYS[i])) {
      throw bad(what, `${at}: entry has keys [${keys.join(', ')}], expected exactly dtype, shape and data_offsets`);
    }
    if (v.dtype !== 'F32') {
      throw bad(what, `${at}: dtype ${describeValue(v.dtype)} is not F32 (the only dtype read here; elmo writes F32)`);
    }
    const shape = v.shape;
    if (!Array.isArray(shape) || shape.length > ST_MAX_RANK || !shape.every(isCount)) {
      throw bad(what, `${at}: shape is not an array of at most ${String(ST_MAX_RANK)} non-negative integers`);
    }
    let bytes = 4;
    for (const d of shape) {
      bytes *= d;
      if (!Number.isSafeInteger(bytes)) throw bad(what, `${at}: shape ${JSON.stringify(shape)} is too large`);
    }
    const offs = v.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isCount)) {
      throw bad(what, `${at}: data_offsets is not [begin, end] of non-negative integers`);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) throw bad(what, `${at}: data_offsets [${String(begin)}, ${String(end)}] end before they begin`);
    if (end > dataBytes) {
      throw bad(
        what,
        `${at}: data_offsets [${String(begin)}, ${String(end)}] lie outside the ${String(dataBytes)}-byte data section (truncated?)`,
      );
    }
    if (end - begin !== bytes) {
      throw bad(
        what,
        `${at}: shape ${JSON.stringify(shape)} of F32 is ${String(bytes)} bytes but data_offsets span ${String(end - begin)}`,
      );
    }
    entries.push({ name, shape: [...shape], begin, end });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let pos = 0;
  for (const e of entries) {
    if (e.begin < pos) throw bad(what, `tensor '${e.name}': data_offsets overlap another tensor's`);
    if (e.begin > pos) throw bad(what, `tensor '${e.name}': ${String(e.begin - pos)} bytes no tensor owns before it`);
    pos = e.end;
  }
  if (pos !== dataBytes) {
    throw bad(what, `the data section has ${String(dataBytes)} bytes but the tensors cover ${String(pos)}`);
  }
  return { entries, metadata, dataStart, dataBytes };
}

/**
 * The tensors of a safetensors file held in memory. Strict: a truncated file, a header that is
 * not a JSON object of well-formed entries, offsets outside the data section or that do not
 * tile it, and any dtype but F32 are a {@link CheckpointError} naming the problem.
 *
 * @param what - names the source in error messages.
 */
export function decodeSafetensors(bytes: Uint8Array, what = 'safetensors'): SafetensorsContents {
  if (!(bytes instanceof Uint8Array)) throw expected(InputError, 'a Uint8Array', 'bytes', bytes);
  const n = headerLength(bytes.subarray(0, 8), bytes.length, what);
  const header = parseHeader(bytes.subarray(8, 8 + n), bytes.length, what);
  const tensors = new Map<string, F32Tensor>();
  for (const e of header.entries) {
    // A copy (aligned, independent of `bytes`; a Buffer's slice() would be a view). Float32Array
    // reads host order: elmo runs on little-endian hosts, as the format is.
    const data = new Float32Array((e.end - e.begin) / 4);
    new Uint8Array(data.buffer).set(bytes.subarray(header.dataStart + e.begin, header.dataStart + e.end));
    tensors.set(e.name, { shape: e.shape, data });
  }
  return { tensors, ...(header.metadata !== undefined ? { metadata: header.metadata } : {}) };
}

/** {@link decodeSafetensors} of a file (`ERR_CHECKPOINT` when it cannot be read). */
export function readSafetensors(file: string): SafetensorsContents {
  if (typeof file !== 'string' || file === '') throw expected(InputError, 'a file path', 'file', file);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new CheckpointError(`Cannot read ${file}: ${(err as Error).message}`);
  }
  return decodeSafetensors(bytes, file);
}

/** Checks what is to be written; returns the tensors in order. */
function checkContents(contents: SafetensorsContents): [string, F32Tensor][] {
  const untyped: unknown = contents;
  if (!isPlainObject(untyped) || !(untyped.tensors instanceof Map)) {
    throw expected(InputError, 'an object { tensors: Map, metadata? }', 'contents', contents);
  }
  const meta: unknown = contents.metadata;
  if (meta !== undefined && (!isPlainObject(meta) || Object.values(meta).some((v) => typeof v !== 'string'))) {
    throw expected(InputError, 'an object of strings', 'contents.metadata', meta);
  }
  const list = [...contents.tensors.entries()];
  for (const [name, t] of list) {
    const at = `contents.tensors['${name}']`;
    if (typeof name !== 'string' || name === '' || name === '__metadata__') {
      throw expected(InputError, "a non-empty tensor name other than '__metadata__'", 'a tensor name', name);
    }
    if (!isPlainObject(t) || !(t.data instanceof Float32Array)) {
      throw expected(InputError, '{ shape, data: Float32Array }', at, t);
    }
    if (!Array.isArray(t.shape) || t.shape.length > ST_MAX_RANK || !t.shape.every(isCount)) {
      throw expected(
        InputError,
        `an array of at most ${String(ST_MAX_RANK)} non-negative integers`,
        `${at}.shape`,
        t.shape,
      );
    }
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== numel) {
      throw new ShapeError(
        `Expected ${String(numel)} values (shape ${JSON.stringify(t.shape)}) for ${at}.data but received ${String(t.data.length)}`,
      );
    }
  }
  return list;
}

/**
 * The first 8 + N bytes of a file: the length and the JSON header of `entries` laid out back to
 * back in their order, space-padded so that the data section starts at a multiple of 8 bytes.
 */
export function encodeHeader(
  entries: readonly { name: string; shape: readonly number[]; bytes: number }[],
  metadata: Readonly<Record<string, string>> | undefined,
): Buffer {
  // Built by hand so that the entries keep their order (an object would put integer-like names first).
  const parts: string[] = [];
  if (metadata !== undefined) parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  let at = 0;
  for (const e of entries) {
    parts.push(
      `${JSON.stringify(e.name)}:${JSON.stringify({ dtype: 'F32', shape: e.shape, data_offsets: [at, at + e.bytes] })}`,
    );
    at += e.bytes;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

/** A safetensors file of F32 tensors (in the map's order) as bytes. */
export function encodeSafetensors(contents: SafetensorsContents): Buffer {
  const list = checkContents(contents);
  const head = encodeHeader(
    list.map(([name, t]) => ({ name, shape: t.shape, bytes: t.data.byteLength })),
    contents.metadata,
  );
  const out = Buffer.alloc(head.length + list.reduce((s, [, t]) => s + t.data.byteLength, 0));
  head.copy(out, 0);
  let at = head.length;
  for (const [, t] of list) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Writes F32 tensors (in the map's order) as a safetensors file, atomically: to a temporary file
 * next to `file`, flushed, then renamed into place (`ERR_CHECKPOINT` when it cannot be written).
 */
export function writeSafetensors(file: string, contents: SafetensorsContents): void {
  if (typeof file !== 'string' || file === '') throw expected(InputError, 'a file path', 'file', file);
  const list = checkContents(contents);
  const head = encodeHeader(
    list.map(([name, t]) => ({ name, shape: t.shape, bytes: t.data.byteLength })),
    contents.metadata,
  );
  writeBytesAtomic(file, (fd) => {
    writeAll(fd, head);
    for (const [, t] of list) writeAll(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  });
}

/** Writes a file through `write(fd)` to a temporary name, fsyncs it and renames it into place. */
export function writeBytesAtomic(file: string, write: (fd: number) => void): void {
  const tmp = `${file}.tmp-${String(process.pid)}-${Math.random().toString(36).slice(2)}`;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    write(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    if (err instanceof ElmoError) throw err;
    throw new CheckpointError(`Cannot write ${file}: ${(err as Error).message}`);
  }
}

export function writeAll(fd: number, bytes: Uint8Array): void {
  for (let at = 0; at < bytes.length;) at += fs.writeSync(fd, bytes, at, bytes.length - at);
}

/** Fills `into` from `fd` at `position`; a short file is a truncated checkpoint. */
export function readExactly(fd: number, into: Uint8Array, position: number, what: string): void {
  for (let at = 0; at < into.length;) {
    const n = fs.readSync(fd, into, at, into.length - at, position + at);
    if (n === 0) throw bad(what, `truncated: ended at byte ${String(position + at)}`);
    at += n;
  }
}

/** An open safetensors file: its validated header, its data read on demand. */
export interface StFile {
  file: string;
  fd: number;
  header: StHeader;
  byName: Map<string, StEntry>;
}

export function openSafetensors(file: string): StFile {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new CheckpointError(`Cannot read ${file}: ${(err as Error).message}`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const first8 = new Uint8Array(8);
    if (size >= 8) readExactly(fd, first8, 0, file);
    const n = headerLength(first8, size, file);
    const json = new Uint8Array(n);
    readExactly(fd, json, 8, file);
    const header = parseHeader(json, size, file);
    return { file, fd, header, byName: new Map(header.entries.map((e) => [e.name, e])) };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}
