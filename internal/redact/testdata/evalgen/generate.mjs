// Generates corral's labelled PII evaluation set: realistic sentences in ten
// locales with personal data (phones, cards, IBANs, emails, SSNs, IPs) in
// the forms people and agents write them, mixed with look-alikes that are
// not personal data (order and tracking numbers, dates, amounts, timestamps,
// versions, UUIDs). One JSON object per line:
//
//   {"id":"s1-42","locale":"de","text":"...",
//    "spans":[{"type":"PHONE","start":10,"end":24,"form":"national"}],
//    "distractors":[{"kind":"date","start":30,"end":40}]}
//
// Offsets are UTF-8 byte offsets into text, as Go slices it.
//
// Usage: node generate.mjs [--seed N] [--sentences N] > eval-seedN.jsonl
// The same seed always gives the same file (faker's reference date is fixed).

import { allFakers } from '@faker-js/faker';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const seed = Number(args.seed ?? 1);
const sentences = Number(args.sentences ?? 3000);

const refDate = '2026-06-01T00:00:00.000Z';

// The locales, their calling codes and whether the national form carries a
// trunk 0 that the international form drops (Italy keeps its 0).
const locales = {
  en_US: { cc: '1', trunk: false },
  en_GB: { cc: '44', trunk: true },
  de: { cc: '49', trunk: true },
  fr: { cc: '33', trunk: true },
  it: { cc: '39', trunk: false },
  es: { cc: '34', trunk: false },
  nl: { cc: '31', trunk: true },
  sv: { cc: '46', trunk: true },
  pt_BR: { cc: '55', trunk: false },
  ja: { cc: '81', trunk: true },
};
const localeNames = Object.keys(locales);

const fakers = {};
for (const [i, name] of localeNames.entries()) {
  const f = allFakers[name];
  f.seed(seed * 1000 + i);
  f.setDefaultRefDate(refDate);
  fakers[name] = f;
}
// base drives the choices that are not locale-specific.
const base = allFakers.en;
base.seed(seed);
base.setDefaultRefDate(refDate);

const NBSP = '\u00a0';
const NNBSP = '\u202f';

const pick = (xs) => base.helpers.arrayElement(xs);
const chance = (p) => base.number.float({ min: 0, max: 1 }) < p;
const digits = (n) => base.string.numeric({ length: n, allowLeadingZeros: true });

// ---------------------------------------------------------------- values

function luhnComplete(prefix, length) {
  let body = prefix + digits(length - prefix.length - 1);
  let sum = 0;
  for (let i = 0; i < body.length; i++) {
    let v = Number(body[body.length - 1 - i]);
    if (i % 2 === 0) {
      v *= 2;
      if (v > 9) v -= 9;
    }
    sum += v;
  }
  return body + String((10 - (sum % 10)) % 10);
}

// Card networks: the issuer prefixes and lengths each network issues.
const networks = {
  visa: () => luhnComplete('4', pick([13, 16, 16, 16, 19])),
  mastercard: () => luhnComplete(pick([String(base.number.int({ min: 51, max: 55 })), String(base.number.int({ min: 2221, max: 2720 }))]), 16),
  amex: () => luhnComplete(pick(['34', '37']), 15),
  discover: () => luhnComplete(pick(['6011', String(base.number.int({ min: 644, max: 649 })), '65']), pick([16, 19])),
  diners: () => luhnComplete(pick([String(base.number.int({ min: 300, max: 305 })), '36', '38', '39']), pick([14, 16])),
  jcb: () => luhnComplete(String(base.number.int({ min: 3528, max: 3589 })), pick([16, 17, 18, 19])),
  maestro: () => luhnComplete(pick(['5018', '5020', '5038', '5893', '6304', '6759', '6761', '6762', '6763']), base.number.int({ min: 12, max: 19 })),
  unionpay: () => luhnComplete('62' + digits(4), base.number.int({ min: 16, max: 19 })),
  mir: () => luhnComplete('220' + base.number.int({ min: 0, max: 4 }), 16),
  faker: (f) => f.finance.creditCardNumber(pick(['visa', 'mastercard', 'american_express', 'discover', 'diners_club', 'jcb'])),
};

// groupCard writes a card number the way its network prints it.
function groupCard(d, sep) {
  let sizes;
  if (d.length === 15) sizes = [4, 6, 5];
  else if (d.length === 14) sizes = [4, 6, 4];
  else sizes = [];
  if (!sizes.length) {
    for (let n = d.length; n > 0; n -= 4) sizes.push(Math.min(4, n));
  }
  const out = [];
  let i = 0;
  for (const s of sizes) {
    out.push(d.slice(i, i + s));
    i += s;
  }
  return out.join(sep);
}

function card(f) {
  const network = pick(Object.keys(networks));
  const d = networks[network](f).replace(/\D/g, '');
  const form = pick(['grouped', 'grouped', 'block', 'dashed', 'nbsp', 'nnbsp', 'double', 'mixed', 'underscore']);
  let v;
  switch (form) {
    case 'block':
    case 'underscore':
      v = d;
      break;
    case 'dashed':
      v = groupCard(d, '-');
      break;
    case 'nbsp':
      v = groupCard(d, NBSP);
      break;
    case 'nnbsp':
      v = groupCard(d, NNBSP);
      break;
    case 'double':
      v = groupCard(d, '  ');
      break;
    case 'mixed': {
      const parts = groupCard(d, ' ').split(' ');
      v = parts.map((p, i) => (i === 0 ? p : pick([' ', '-']) + p)).join('');
      break;
    }
    default:
      v = groupCard(d, ' ');
  }
  return { type: 'CARD', value: v, form: `${network}/${form}`, glue: form === 'underscore' };
}

function iban(f) {
  const raw = f.finance.iban({ formatted: false });
  const form = pick(['grouped', 'grouped', 'block', 'lower', 'lower-grouped', 'nbsp', 'nnbsp', 'double', 'dashed', 'underscore']);
  const grouped = (sep) => raw.match(/.{1,4}/g).join(sep);
  let v;
  switch (form) {
    case 'block':
    case 'underscore':
      v = raw;
      break;
    case 'lower':
      v = raw.toLowerCase();
      break;
    case 'lower-grouped':
      v = grouped(' ').toLowerCase();
      break;
    case 'nbsp':
      v = grouped(NBSP);
      break;
    case 'nnbsp':
      v = grouped(NNBSP);
      break;
    case 'double':
      v = grouped('  ');
      break;
    case 'dashed':
      v = grouped('-');
      break;
    default:
      v = grouped(' ');
  }
  return { type: 'IBAN', value: v, form: `${raw.slice(0, 2)}/${form}`, glue: form === 'underscore' };
}

function email(f) {
  const first = f.person.firstName();
  const last = f.person.lastName();
  let v = f.internet.email({ firstName: first, lastName: last });
  const form = pick(['plain', 'plain', 'plain', 'urlencoded', 'underscore', 'jwt']);
  if (form === 'urlencoded') v = v.replace('@', '%40');
  if (form === 'jwt') {
    // A bearer token in a log line: the address is in the base64url
    // payload. The label is the payload segment.
    const payload = { sub: base.string.uuid(), email: v, iat: 1780000000 + base.number.int(10000000) };
    const jwt = f.internet.jwt({ payload });
    const [h, p] = jwt.split('.');
    return { type: 'EMAIL', value: jwt, form, label: [h.length + 1, h.length + 1 + p.length] };
  }
  return { type: 'EMAIL', value: v, form, glue: form === 'underscore' };
}

function ssn() {
  let area;
  do area = base.number.int({ min: 1, max: 899 });
  while (area === 666);
  const a = String(area).padStart(3, '0');
  const g = String(base.number.int({ min: 1, max: 99 })).padStart(2, '0');
  const s = String(base.number.int({ min: 1, max: 9999 })).padStart(4, '0');
  const form = pick(['dashed', 'dashed', 'spaced', 'block', 'nbsp', 'underscore']);
  const v = { dashed: `${a}-${g}-${s}`, spaced: `${a} ${g} ${s}`, block: a + g + s, nbsp: [a, g, s].join(NBSP), underscore: a + g + s }[form];
  return { type: 'SSN', value: v, form, glue: form === 'underscore' };
}

function ip(f) {
  const form = pick(['v4', 'v4', 'v6', 'v6-compressed', 'v4-mapped']);
  let v;
  switch (form) {
    case 'v4':
      v = f.internet.ipv4();
      break;
    case 'v6':
      v = f.internet.ipv6();
      break;
    case 'v6-compressed': {
      const groups = f.internet.ipv6().split(':').map((g) => g.replace(/^0+(?=.)/, ''));
      const at = base.number.int({ min: 1, max: 5 });
      v = groups.slice(0, at).join(':') + '::' + groups.slice(at + 2).join(':');
      break;
    }
    default:
      v = '::ffff:' + f.internet.ipv4();
  }
  return { type: 'IP', value: v, form };
}

// phoneFormats are the locale's national formats from faker's definitions
// ('#' a digit, '!' a digit 2-9). Formats that start with '+' are left out
// (the international forms are built below from national ones: faker's
// "international" style draws a random country code for some locales), and
// so are formats that are not a national number of the country: fewer than
// eight digits, or, for Italy, not starting with 0 or 3.
function phoneFormats(f, locale) {
  const defs = f.rawDefinitions.phone_number.format;
  const all = [...(defs.national ?? []), ...(defs.human ?? []), ...(defs.mobile ?? [])];
  return all.filter((fmt) => {
    const n = (fmt.match(/[#!\d]/g) ?? []).length;
    if (fmt.startsWith('+') || n < 8) return false;
    return locale !== 'it' || /^\(?[03]/.test(fmt);
  });
}

const fillFormat = (fmt) => fmt.replace(/[#!]/g, (c) => (c === '#' ? digits(1) : String(base.number.int({ min: 2, max: 9 }))));

// phone returns a phone number of the locale in one of the forms people
// write: the locale's national formats, the international form built from
// the national one (+CC, +CC with a space, 00CC), an extension, unseparated
// digits, non-breaking spaces.
function phone(f, locale) {
  const { cc, trunk } = locales[locale];
  // A format's first digits are drawn too: a number starting with 00 is
  // the international prefix, not a national number.
  let national;
  do national = fillFormat(pick(phoneFormats(f, locale)));
  while (/^\(?00/.test(national));
  let ext = '';
  const m = national.match(/\s*x\d+$/);
  if (m) {
    ext = m[0];
    national = national.slice(0, -m[0].length);
  }
  let form = pick(['national', 'national', 'intl', 'intl-spaced', 'intl-00', 'bare', 'nbsp', 'ext']);
  let v = national;
  const withoutTrunk = () => {
    const s = national.replace(/^\(0(\d+)\)/, '($1)');
    if (cc === '1') return s.replace(/^1[-. ]?/, ''); // North America's trunk 1
    return trunk ? s.replace(/^0/, '') : s;
  };
  switch (form) {
    case 'intl':
      v = `+${cc}${withoutTrunk().replace(/[^\d]/g, '')}`;
      break;
    case 'intl-spaced':
      v = `+${cc} ${withoutTrunk()}`;
      break;
    case 'intl-00':
      v = `00${cc} ${withoutTrunk()}`;
      break;
    case 'bare':
      v = national.replace(/[^\d]/g, '');
      break;
    case 'nbsp':
      if (!national.includes(' ')) form = 'national';
      v = national.replaceAll(' ', NBSP);
      break;
    case 'ext':
      ext = ext || pick([' x', ' ext. ', ' ext ', ' #']) + digits(base.number.int({ min: 2, max: 5 }));
      break;
  }
  return { type: 'PHONE', value: v, form: `${locale}/${form}`, suffix: form === 'ext' ? ext : '' };
}

// ----------------------------------------------------------- distractors

const distractorKinds = ['order', 'tracking', 'date', 'amount', 'timestamp', 'version', 'uuid', 'invoice', 'epoch', 'zip', 'sku', 'time'];

function distractor(f, kinds) {
  const kind = pick(kinds ?? distractorKinds);
  switch (kind) {
    case 'order':
      return { kind, value: pick([`#${digits(base.number.int({ min: 5, max: 9 }))}`, `ORD-${digits(8)}`, `${digits(3)}-${digits(7)}-${digits(7)}`, `A${digits(6)}`]) };
    case 'tracking':
      return { kind, value: pick([`1Z${base.string.alphanumeric({ length: 16, casing: 'upper' })}`, `${digits(4)} ${digits(4)} ${digits(4)}`, `9400 1${digits(3)} ${digits(4)} ${digits(4)} ${digits(4)} ${digits(2)}`, `JD${digits(18)}`]) };
    case 'date': {
      const d = f.date.between({ from: '2019-01-01', to: '2027-12-31' });
      const iso = d.toISOString().slice(0, 10);
      const [y, mo, da] = iso.split('-');
      return { kind, value: pick([iso, `${da}.${mo}.${y}`, `${mo}/${da}/${y}`, `${da}/${mo}/${y}`, `${y}/${mo}/${da}`]) };
    }
    case 'amount':
      return { kind, value: pick([`$${f.finance.amount({ min: 1, max: 99999 })}`, `${f.finance.amount({ min: 1, max: 99999, dec: 2 }).replace('.', ',')} €`, `EUR ${base.number.int({ min: 1000, max: 9999999 }).toLocaleString('en-US')}.${digits(2)}`, `${base.number.int({ min: 1000, max: 9999999 }).toLocaleString('de-DE')},${digits(2)} EUR`]) };
    case 'timestamp':
      return { kind, value: pick([f.date.recent({ days: 400 }).toISOString(), f.date.recent({ days: 400 }).toISOString().replace('T', ' ').slice(0, 19)]) };
    case 'version':
      return { kind, value: pick([`v${f.system.semver()}`, f.system.semver(), `${base.number.int(20)}.${base.number.int(9)}.${base.number.int(30000)}.${base.number.int(9999)}`]) };
    case 'uuid':
      return { kind, value: base.string.uuid() };
    case 'invoice':
      return { kind, value: pick([`INV-${digits(4)}-${digits(6)}`, `${digits(10)}`, `${digits(4)} ${digits(4)} ${digits(2)}`]) };
    case 'epoch':
      return { kind, value: String(Math.floor(f.date.recent({ days: 400 }).getTime() / 1000)) };
    case 'zip':
      return { kind, value: f.location.zipCode() };
    case 'sku':
      return { kind, value: `${base.string.alpha({ length: 3, casing: 'upper' })}-${digits(5)}-${digits(2)}` };
    default:
      return { kind, value: `${String(base.number.int(23)).padStart(2, '0')}:${String(base.number.int(59)).padStart(2, '0')}` };
  }
}

// ------------------------------------------------------------- sentences

// Templates: {P} takes personal data, {N} a name, {D:kind|kind} a
// distractor of one of those kinds ({D} any kind). Half the sentences use an
// English template, half one in the locale's language.
const english = [
  'Hi, this is {N}. Please call me on {P} about order {D:order}, it was placed on {D:date}.',
  'Refund {D:amount} to {P} (reference {D:invoice|order}) before {D:date}, thanks.',
  '{N} updated the contact to {P} at {D:timestamp|time}.',
  'Customer {N} paid {D:amount} with {P}; tracking number {D:tracking}.',
  'Ticket {D:order}: user says "my details are {P}" and asks about invoice {D:invoice}.',
  'level=info ts={D:timestamp|epoch} msg="login ok" user={P} request_id={D:uuid}',
  'Can you check why {P} was charged {D:amount} on {D:date}?',
  'Forwarding: {P} / {P} - shipment {D:tracking} arrives {D:date}.',
  'Please update my record: {P}. My order {D:order} still shows the old one.',
  '{D:timestamp} WARN payment retry for {P} failed (attempt 3, build {D:version})',
  'The deploy of {D:version} at {D:timestamp} touched {D:order} rows; nothing else to report.',
  'Order {D:order} shipped {D:date} via tracking {D:tracking}, total {D:amount}.',
  'Meeting moved to {D:date} at {D:time}; see ticket {D:order}, SKU {D:sku}, ZIP {D:zip}.',
  'Invoice {D:invoice} for {N}, {D:amount}, due {D:date}. Contact: {P}.',
];
const local = {
  de: ['Sehr geehrte Damen und Herren, meine Angaben: {P}, Bestellung {D:order} vom {D:date}.', 'Rechnung {D:invoice} über {D:amount} – bitte an {P} überweisen.'],
  fr: ['Bonjour, voici mes coordonnées : {P}. Commande {D:order} du {D:date}.', 'Facture {D:invoice} de {D:amount}, à régler sur {P}.'],
  es: ['Hola, mis datos son {P}, pedido {D:order}, importe {D:amount}.', 'Llámame al {P} antes del {D:date}, referencia {D:invoice}.'],
  it: ['Ciao, il mio riferimento è {P}; fattura {D:invoice} del {D:date}.', 'Chiamami al {P}, ordine {D:order} di {D:amount}.'],
  nl: ['Hallo, mijn gegevens: {P} (klantnummer {D:order}).', 'Bel me op {P} over factuur {D:invoice} van {D:date}.'],
  sv: ['Hej! Mina uppgifter: {P}, order {D:order}, datum {D:date}.', 'Ring mig på {P} angående faktura {D:invoice} på {D:amount}.'],
  pt_BR: ['Olá, meus dados: {P}, pedido {D:order} em {D:date}.', 'Me liga no {P}, boleto {D:invoice} de {D:amount}.'],
  ja: ['お世話になっております。連絡先は {P} です。注文番号 {D:order}、{D:date}。', '請求書 {D:invoice}（{D:amount}）について {P} までご連絡ください。'],
  en_GB: ['Cheers {N}, ring me on {P} about parcel {D:tracking} due {D:date}.'],
  en_US: ['Yo, text me at {P} re: PO {D:order} ({D:amount}).'],
};

const kinds = ['PHONE', 'PHONE', 'PHONE', 'CARD', 'IBAN', 'EMAIL', 'SSN', 'IP'];

function value(type, f, locale) {
  switch (type) {
    case 'PHONE':
      return phone(f, locale);
    case 'CARD':
      return card(f);
    case 'IBAN':
      return iban(f);
    case 'EMAIL':
      return email(f);
    case 'SSN':
      return ssn();
    default:
      return ip(f);
  }
}

const glueNames = { CARD: 'card_', IBAN: 'iban_', EMAIL: 'user_', SSN: 'ssn_', PHONE: 'tel_', IP: 'ip_' };

function sentence(n) {
  const locale = pick(localeNames);
  const f = fakers[locale];
  const tpl = chance(0.5) ? pick(english) : pick(local[locale]);
  let text = '';
  let bytes = 0;
  const spans = [];
  const distractors = [];
  const add = (s) => {
    text += s;
    bytes += Buffer.byteLength(s);
  };
  for (const part of tpl.split(/(\{[PN]\}|\{D(?::[a-z|]+)?\})/)) {
    if (part === '{N}') add(f.person.fullName());
    else if (part.startsWith('{D')) {
      const d = distractor(f, part.length > 3 ? part.slice(3, -1).split('|') : undefined);
      distractors.push({ kind: d.kind, start: bytes, end: bytes + Buffer.byteLength(d.value) });
      add(d.value);
    } else if (part === '{P}') {
      const v = value(pick(kinds), f, locale);
      if (v.glue) add(glueNames[v.type]);
      let start = bytes;
      let end = bytes + Buffer.byteLength(v.value);
      if (v.label) {
        start = bytes + Buffer.byteLength(v.value.slice(0, v.label[0]));
        end = bytes + Buffer.byteLength(v.value.slice(0, v.label[1]));
      }
      spans.push({ type: v.type, start, end, form: v.form });
      add(v.value);
      if (v.suffix) add(v.suffix);
    } else add(part);
  }
  return { id: `s${seed}-${n}`, locale, text, spans, distractors };
}

const lines = [];
for (let n = 0; n < sentences; n++) lines.push(JSON.stringify(sentence(n)));
process.stdout.write(lines.join('\n') + '\n');
