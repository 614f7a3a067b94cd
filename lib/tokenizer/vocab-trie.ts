/**
 * A trie over the UTF-16 code units of the vocabulary, for WordPiece longest-match-first lookup
 * without building substrings.
 *
 * Edges live in one open-addressing hash table keyed by (parent node, code unit); node 0 is the
 * root. A vocabulary entry that is a prefix of the remaining word is found by walking down from
 * the root (word-initial pieces) or from the node of the continuing-subword prefix ("##"), so
 * the longest match costs one probe per code unit.
 */
export class VocabTrie {
  /** Token id ending at each node, or -1. */
  private readonly nodeToken: Int32Array;
  private readonly edgeParent: Int32Array;
  private readonly edgeUnit: Int32Array;
  private readonly edgeChild: Int32Array;
  private readonly mask: number;

  /** Builds the trie; a later entry for the same string replaces an earlier one. */
  constructor(entries: ReadonlyMap<string, number>) {
    // Every code unit of every entry adds at most one node and one edge: size for that bound,
    // keeping the edge table at most two-thirds full.
    let units = 0;
    for (const token of entries.keys()) units += token.length;
    let capacity = 16;
    while (capacity < units * 1.5) capacity *= 2;
    this.mask = capacity - 1;
    this.edgeParent = new Int32Array(capacity).fill(-1);
    this.edgeUnit = new Int32Array(capacity);
    this.edgeChild = new Int32Array(capacity);
    const nodeToken = new Int32Array(units + 1).fill(-1);
    let nodes = 1;
    for (const [token, id] of entries) {
      let node = 0;
      for (let i = 0; i < token.length; i++) {
        const unit = token.charCodeAt(i);
        let slot = hash(node, unit) & this.mask;
        let child = -1;
        for (;;) {
          const p = this.edgeParent[slot] as number;
          if (p === -1) break;
          if (p === node && this.edgeUnit[slot] === unit) {
            child = this.edgeChild[slot] as number;
            break;
          }
          slot = (slot + 1) & this.mask;
        }
        if (child < 0) {
          child = nodes++;
          this.edgeParent[slot] = node;
          this.edgeUnit[slot] = unit;
          this.edgeChild[slot] = child;
        }
        node = child;
      }
      nodeToken[node] = id;
    }
    this.nodeToken = nodeToken.slice(0, nodes);
  }

  /** The child of `node` along code unit `unit`, or -1. */
  child(node: number, unit: number): number {
    const parents = this.edgeParent;
    let slot = hash(node, unit) & this.mask;
    for (;;) {
      const p = parents[slot] as number;
      if (p === -1) return -1;
      if (p === node && this.edgeUnit[slot] === unit) return this.edgeChild[slot] as number;
      slot = (slot + 1) & this.mask;
    }
  }

  /** The node reached from the root by `s`, or -1. */
  find(s: string): number {
    let node = 0;
    for (let i = 0; i < s.length && node >= 0; i++) node = this.child(node, s.charCodeAt(i));
    return node;
  }

  /** The token id ending at `node`, or -1. */
  token(node: number): number {
    return this.nodeToken[node] as number;
  }

  /**
   * Longest entry below `node` matching a non-empty prefix of units[start, end). Returns the
   * token id and stores the end of the match in `matchEnd[0]`; returns -1 when nothing matches.
   */
  longestMatch(node: number, units: Uint16Array, start: number, end: number, matchEnd: Int32Array): number {
    let best = -1;
    for (let k = start; k < end;) {
      node = this.child(node, units[k] as number);
      if (node < 0) break;
      k++;
      const id = this.nodeToken[node] as number;
      if (id >= 0) {
        best = id;
        matchEnd[0] = k;
      }
    }
    return best;
  }
}

function hash(parent: number, unit: number): number {
  let h = Math.imul(parent, 0x9e3779b1) ^ Math.imul(unit + 1, 0x85ebca6b);
  h ^= h >>> 15;
  return h >>> 0;
}
