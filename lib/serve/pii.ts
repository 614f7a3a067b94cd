/**
 * PII masking: finds e-mail addresses, phone numbers, payment card numbers and IBANs in a text
 * and replaces each with a placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`), plus any
 * patterns of the caller's own (`[<NAME>]`). The HTTP service passes everything it logs through
 * {@link maskPII}; the dialogue layer does the same before it stores a turn.
 *
 * The detectors favour precision over recall where the two conflict, because a masked order
 * number or date costs the reader of a log more than it protects anyone:
 * - card numbers: 13-19 digits starting with 2-6 (the issuer digits of payment cards), alone or
 *   in groups split by single spaces or dashes (the first group of 4), and only when the Luhn
 *   checksum holds; a digit run that fails it is left as is;
 * - IBANs: a known country code with that country's length, and the ISO 13616 mod-97 check;
 * - phone numbers: `+` or `00` international numbers (8-15 digits), North American
 *   `(415) 555-2671` / `415-555-2671` / `415.555.2671`, and national numbers with a trunk `0`
 *   (`020 7946 0958`, `06 12 34 56 78`, `0171 1234567`) written with one kind of separator; a
 *   bare run of 9-13 digits only when a word such as "phone", "call" or "tel" comes just before
 *   it. Dates, times, prices, versions and order numbers do not take these shapes.
 *
 * Offsets in `found` are into the original text, in UTF-16 code units, `end` exclusive.
 *
 * @example
 * ```ts
 * const { text, found } = maskPII('mail jane.doe@example.com or call +44 20 7946 0958');
 * // text: 'mail [EMAIL] or call [PHONE]'
 * // found: [{ type: 'email', start: 5, end: 25 }, { type: 'phone', start: 34, end: 50 }]
 * ```
 */
import { InputError, expected } from '../errors';

/** The built-in detectors. */
export type PiiType = 'email' | 'phone' | 'card' | 'iban';

/** A pattern of the caller's own: each match is replaced by `[NAME]` (the name upper-cased). */
export interface PiiPattern {
  /** Letters, digits and `_`, starting with a letter; the placeholder is its upper-case form. */
  name: string;
  pattern: RegExp;
}

/**
 * Options of {@link maskPII}. They are checked (and the patterns compiled) the first time an
 * options object is used and remembered for that object: make a new object to change them.
 */
export interface MaskOptions {
  /** Built-in detectors to run; default all four. */
  types?: readonly PiiType[];
  /**
   * Patterns of the caller's own. They run before the built-in detectors, so a pattern that
   * covers, say, a customer id with digits in it claims that text first.
   */
  patterns?: readonly PiiPattern[];
}

/** One span that was masked. */
export interface PiiMatch {
  /** `'email'`, `'phone'`, `'card'`, `'iban'`, or the name of a caller's pattern. */
  type: string;
  /** Offsets into the original text (UTF-16 code units, `end` exclusive). */
  start: number;
  end: number;
}

/** What {@link maskPII} returns. */
export interface MaskResult {
  /** The text with each span replaced by its placeholder. */
  text: string;
  /** The masked spans in text order. */
  found: PiiMatch[];
}

const ALL_TYPES: readonly PiiType[] = ['email', 'iban', 'card', 'phone'];

const EMAIL =
  /(?<![\p{L}\p{N}._%+-])[\p{L}\p{N}](?:[\p{L}\p{N}._%+-]{0,62}[\p{L}\p{N}_%+-])?@(?:[\p{L}\p{N}](?:[\p{L}\p{N}-]{0,61}[\p{L}\p{N}])?\.)+\p{L}{2,24}(?![\p{L}\p{N}_-])/gu;

const FILE_EXTENSION = /\.(?:png|jpe?g|gif|svg|webp|bmp|ico|pdf|js|mjs|ts|css|html?|json|txt|zip)$/i;

// Digit groups split by single spaces or dashes; candidates for card numbers.
const DIGIT_RUN = /(?<![\w.,+-])\d+(?:[ -]\d+)*(?![\w])/g;

// Two letters, two check digits, then letters and digits in groups split by single spaces.
const IBAN_CANDIDATE = /(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,32}/g;

// `+` or `00`, digit groups split by one space, dot or dash, or an area code in parentheses.
const PHONE_INTL = /(?<![\w+]|\d[ .-])(?:\+|00)\d+(?:(?:[ .-]?\(\d+\)[ .-]?|[ .-])\d+)*(?!\w)/g;

// North American numbers: (NPA) NXX-XXXX, NPA-NXX-XXXX, NPA.NXX.XXXX, with an optional 1.
const PHONE_NANP =
  /(?<![\w+.,/-]|\d[ .-])(?:1[ .-]?)?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d([ .-]))[2-9]\d\d([ .-])\d{4}(?![\w]|[.,/-]\d)/g;

// National numbers with a trunk 0: an area code (maybe in parentheses), then digit groups.
const PHONE_TRUNK = /(?<![\w+.,/-]|\d[ .-])(?:\(0\d{1,4}\) ?|0\d{1,4}[ ./-]?)\d+(?:[ .-]\d+)*(?![\w]|[.,/-]\d)/g;

// A bare digit run, a phone number only after one of PHONE_WORDS.
const BARE_DIGITS = /(?<![\w+.,/-]|\d[ .-])\+?\d{9,13}(?![\w]|[.,/-]\d)/g;
const PHONE_WORDS =
  /\b(?:phone|telephone|tel|call|calling|mobile|mob|cell|cellphone|whatsapp|sms|text me|ring me|fax|reach me|contact me|dial)\b(?:(?!order|invoice|ref|ticket|account|case|booking|tracking|parcel|id\b|no\.)[^\d\n]){0,20}$/i;

// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: Readonly<Record<string, number>> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BR: 29, BY: 28, CH: 21,
  CR: 22, CY: 28, CZ: 24, DE: 22, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18, FO: 18, FR: 27,
  GB: 22, GE: 22, GI: 23, GL: 18, GR: 27, GT: 28, HR: 21, HU: 28, IE: 22, IL: 23, IQ: 23, IS: 26,
  IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28, LC: 32, LI: 21, LT: 20, LU: 20, LV: 21, LY: 25, MC: 27,
  MD: 24, ME: 22, MK: 19, MR: 27, MT: 31, MU: 30, NL: 18, NO: 15, PK: 24, PL: 28, PS: 29, PT: 25,
  QA: 29, RO: 24, RS: 22, SA: 24, SC: 31, SE: 24, SI: 19, SK: 24, SM: 27, ST: 25, SV: 28, TL: 23,
  TN: 24, TR: 26, UA: 29, VA: 22, VG: 24, XK: 20,
}; // prettier-ignore

/**
 * Masks PII in `text`: each span found is replaced by `[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`
 * or `[<NAME>]` for a caller's pattern. Where spans overlap, the caller's patterns win, then
 * e-mail, IBAN, card and phone in that order.
 *
 * @example
 * ```ts
 * maskPII('card 4111 1111 1111 1111, ticket T-88213', {
 *   patterns: [{ name: 'ticket', pattern: /\bT-\d{5}\b/ }],
 * }).text; // 'card [CARD], ticket [TICKET]'
 * ```
 */
export function maskPII(text: string, options: MaskOptions = {}): MaskResult {
  if (typeof text !== 'string') throw expected(InputError, 'a string', 'text', text);
  const { types, patterns } = checkMaskOptions(options);
  const claimed: PiiMatch[] = [];
  const claim = (type: string, start: number, end: number): void => {
    if (end <= start) return;
    if (claimed.some((m) => start < m.end && m.start < end)) return;
    claimed.push({ type, start, end });
  };
  for (const p of patterns) {
    for (const m of text.matchAll(p.regex)) {
      if (m[0].length > 0) claim(p.name, m.index, m.index + m[0].length);
    }
  }
  for (const type of ALL_TYPES) {
    if (!types.has(type)) continue;
    if (type === 'email') {
      for (const m of text.matchAll(EMAIL)) {
        // report@2x.png is an image name, not an address.
        if (!FILE_EXTENSION.test(m[0])) claim('email', m.index, m.index + m[0].length);
      }
    } else if (type === 'iban') findIbans(text, claim);
    else if (type === 'card') findCards(text, claim);
    else findPhones(text, claim);
  }
  if (claimed.length === 0) return { text, found: [] };
  claimed.sort((a, b) => a.start - b.start);
  let out = '';
  let at = 0;
  for (const m of claimed) {
    out += `${text.slice(at, m.start)}[${m.type.toUpperCase()}]`;
    at = m.end;
  }
  return { text: out + text.slice(at), found: claimed };
}

/** Options checked once, with the caller's patterns made global. */
interface CheckedMaskOptions {
  types: ReadonlySet<PiiType>;
  patterns: { name: string; regex: RegExp }[];
}

const checkedCache = new WeakMap<MaskOptions, CheckedMaskOptions>();

function checkMaskOptions(options: MaskOptions): CheckedMaskOptions {
  if (typeof options !== 'object' || options === null) throw expected(InputError, 'an object', 'options', options);
  const cached = checkedCache.get(options);
  if (cached !== undefined) return cached;
  const types = options.types ?? ALL_TYPES;
  if (!Array.isArray(types) || types.some((t: unknown) => !(ALL_TYPES as readonly unknown[]).includes(t))) {
    throw expected(InputError, "an array of 'email', 'phone', 'card', 'iban'", 'options.types', types);
  }
  const patterns = options.patterns ?? [];
  if (!Array.isArray(patterns)) throw expected(InputError, 'an array', 'options.patterns', patterns);
  const checked: CheckedMaskOptions = {
    types: new Set(types),
    patterns: patterns.map((p: unknown, i) => {
      const at = `options.patterns[${String(i)}]`;
      if (typeof p !== 'object' || p === null) throw expected(InputError, 'an object {name, pattern}', at, p);
      const { name, pattern } = p as Partial<PiiPattern>;
      if (typeof name !== 'string' || !/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) {
        throw expected(InputError, 'a name of letters, digits and _ starting with a letter', `${at}.name`, name);
      }
      if (!(pattern instanceof RegExp)) throw expected(InputError, 'a RegExp', `${at}.pattern`, pattern);
      const flags = pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`;
      return { name, regex: new RegExp(pattern.source, flags.replace('y', '')) };
    }),
  };
  checkedCache.set(options, checked);
  return checked;
}

type Claim = (type: string, start: number, end: number) => void;

/** Luhn checksum of a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/** ISO 13616 check: the first four characters moved to the end, letters as 10-35, mod 97 = 1. */
export function ibanValid(iban: string): boolean {
  const s = iban.toUpperCase();
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]+$/.test(s)) return false;
  const moved = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (const ch of moved) {
    const code = ch.charCodeAt(0);
    const value = code >= 65 ? code - 55 : code - 48;
    rem = value >= 10 ? (rem * 100 + value) % 97 : (rem * 10 + value) % 97;
  }
  return rem === 1;
}

function findCards(text: string, claim: Claim): void {
  for (const m of text.matchAll(DIGIT_RUN)) {
    const groups = m[0].split(/[ -]/);
    const separators = m[0].replace(/\d/g, '');
    // One kind of separator; a grouped number starts with a group of 4 (4-4-4-4, 4-6-5, ...).
    if (new Set(separators).size > 1) continue;
    // The longest window of whole groups with 13-19 digits and a valid checksum, earliest first.
    let offset = m.index;
    for (let i = 0; i < groups.length; i++) {
      let digits = '';
      let best = -1;
      for (let j = i; j < groups.length && digits.length < 19; j++) {
        digits += groups[j] ?? '';
        const grouped = j > i;
        if ((grouped && (groups[i] ?? '').length !== 4) || digits.length > 19) break;
        // Issuer digits 2-6 (ISO/IEC 7812: banking and financial cards).
        if (digits.length >= 13 && /^[2-6]/.test(digits) && luhnValid(digits)) best = j;
      }
      if (best >= 0) {
        const length = groups.slice(i, best + 1).join(' ').length;
        claim('card', offset, offset + length);
        break;
      }
      offset += (groups[i] ?? '').length + 1;
    }
  }
}

function findIbans(text: string, claim: Claim): void {
  // A candidate may run on into the words after the number; the scan resumes after the IBAN
  // taken from it, not after the whole candidate, so a second IBAN close behind is still seen.
  const re = new RegExp(IBAN_CANDIDATE.source, 'g');
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const end = ibanEnd(text, m.index, m[0]);
    if (end > 0) {
      claim('iban', m.index, end);
      re.lastIndex = end;
    } else {
      re.lastIndex = m.index + 1;
    }
  }
}

/** End offset of the IBAN at the start of `candidate` (found at `index`), or 0 for none. */
function ibanEnd(text: string, index: number, candidate: string): number {
  const length = IBAN_LENGTHS[candidate.slice(0, 2).toUpperCase()];
  if (length === undefined) return 0;
  // Exactly the country's length of letters and digits; the next character must not continue
  // the same group.
  let n = 0;
  let end = 0;
  while (end < candidate.length && n < length) {
    if (candidate[end] !== ' ') n++;
    end++;
  }
  if (n < length) return 0;
  const after = text[index + end];
  if (after !== undefined && /[A-Za-z0-9]/.test(after)) return 0;
  const compact = candidate.slice(0, end).replace(/ /g, '');
  // Mixed case is no IBAN (a word after the number would otherwise fit some lengths).
  if (compact !== compact.toUpperCase() && compact !== compact.toLowerCase()) return 0;
  return ibanValid(compact) ? index + end : 0;
}

function findPhones(text: string, claim: Claim): void {
  const take = (m: RegExpMatchArray, valid: (s: string) => boolean): void => {
    const s = longestValidPrefix(m[0], valid);
    if (s !== undefined && m.index !== undefined) claim('phone', m.index, m.index + s.length);
  };
  for (const m of text.matchAll(PHONE_INTL)) take(m, internationalValid);
  for (const m of text.matchAll(PHONE_NANP)) {
    // 415.555.2671 and 415-555-2671, not 415.555-2671.
    if (m[1] === undefined || m[2] === undefined || m[1] === m[2]) take(m, () => true);
  }
  for (const m of text.matchAll(PHONE_TRUNK)) take(m, trunkNumberValid);
  for (const m of text.matchAll(BARE_DIGITS)) {
    const before = text.slice(Math.max(0, m.index - 40), m.index);
    if (PHONE_WORDS.test(before)) take(m, () => true);
  }
}

/**
 * `s`, or the longest prefix of it that ends at a digit group, that `valid` accepts: a number
 * followed by another figure ("020 7946 0958 2 times") is taken without the figure.
 */
function longestValidPrefix(s: string, valid: (s: string) => boolean): string | undefined {
  for (let end = s.length; end > 0; end = s.slice(0, end).search(/[ .-]\d+$/)) {
    const prefix = s.slice(0, end);
    if (valid(prefix)) return prefix;
  }
  return undefined;
}

/** `+44 20 7946 0958`, `+1 (415) 555-2671`, `0049 30 1234567`: 8-15 digits after the prefix. */
function internationalValid(s: string): boolean {
  const digits = s.replace(/\D/g, '').length - (s.startsWith('00') ? 2 : 0);
  // 00-prefixed numbers need a separator: a bare 00 digit run is more often an id.
  if (s.startsWith('00') && !/[ .()-]/.test(s)) return false;
  return digits >= 8 && digits <= 15;
}

/** `020 7946 0958`, `06 12 34 56 78`, `(030) 1234 5678`, `0171/1234567`: checks PHONE_TRUNK's match. */
function trunkNumberValid(s: string): boolean {
  const digits = s.replace(/\D/g, '');
  if (digits.length < 9 || digits.length > 12 || digits.startsWith('00')) return false;
  // The separators after the area code: one kind only, and at least one (bare runs need a word).
  const area = /^(?:\(0\d{1,4}\) ?|0\d{1,4}[ ./-]?)/.exec(s)?.[0] ?? '';
  const rest = s.slice(area.length);
  const separators = new Set(rest.replace(/\d/g, ''));
  const areaSeparated = /[ ./)-]$/.test(area);
  if (separators.size > 1 || (separators.size === 0 && !areaSeparated)) return false;
  const groups = rest.split(/[ .-]/);
  if (groups.some((g) => g.length < 2)) return false;
  // Dotted numbers are French style: pairs of digits (01.23.45.67.89); anything else is a date.
  if ((separators.has('.') || area.endsWith('.')) && groups.some((g) => g.length !== 2)) return false;
  if (area.endsWith('.') && separators.size === 1 && !separators.has('.')) return false;
  // dd mm yyyy ... is a date and a time, not a number.
  if (/^0[1-9][ ./-](?:0[1-9]|1[0-2])[ ./-](?:19|20)\d\d\b/.test(s)) return false;
  return true;
}
