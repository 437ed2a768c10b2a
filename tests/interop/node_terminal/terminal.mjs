#!/usr/bin/env node
// fuelswitch interoperability terminal (Node.js)
// ==============================================
//
// A minimal POS terminal for the fuelswitch card network, written from docs/pos-protocol.md and
// the .proto files in proto/fuelswitch/v1/ only. It exists to prove that a vendor in another
// language can implement a terminal from the documentation; tests/interop/test_node_terminal.py
// runs it against the real switch.
//
// Install (once; package-lock.json pins every version):
//
//     cd tests/interop/node_terminal && npm ci --no-audit --no-fund
//
// Run by hand against a running switch (`fuelswitch serve`), with a terminal, station, card and
// account already provisioned through CardAdmin:
//
//     node terminal.mjs '{"target": "127.0.0.1:50051", "terminal_id": "ST-0001-T001",
//                         "private_key": "<64 hex>", "pan": "<16-19 digits>", "pin": "1234",
//                         "product_code": "92", "pump": 1, "authorize_amount": 30000,
//                         "fuel_volume_ml": 20000, "stan": 1}'
//
// The JSON may also come from a file (`node terminal.mjs @input.json`) or stdin (`... -` or no
// argument). Input fields:
//
//     target            host:port of the PosGateway (plaintext gRPC; this tool does not do TLS)
//     terminal_id       the registered terminal id
//     private_key       the terminal's SM2 private key, 64 hex characters
//     pan, pin          card number and its PIN
//     product_code      fuel grade, default "92"
//     pump              pump number, default 1
//     authorize_amount  amount to pre-authorize, fen
//     fuel_volume_ml    volume "dispensed" before Complete, ml; the completion amount is
//                       round_half_up(fuel_volume_ml × unit_price / 1000) with the unit price from
//                       the AuthorizeResponse (or `unit_price` from the input if the host sends 0)
//     unit_price        fallback unit price, fen per litre (optional)
//     stan              first STAN to use; each message takes the next one
//     clock_skew_ms     start with the clock this far off (tests the clock-skew recovery of §4)
//     deadline_ms       per-call deadline, default 10000
//     proto_dir         directory holding fuelswitch/v1/*.proto, default <repo>/proto
//
// Flow: health check → SignOn → SyncHotlist (UNIMPLEMENTED is accepted) → Authorize → Complete →
// BalanceInquiry. Every response with a session is checked against its trailing `fs-mac`. The
// program prints ONE JSON object with all responses to stdout and exits 0; on any failure it
// prints the JSON gathered so far (with an "error" field) and exits 1, with a one-line explanation
// on stderr.
//
// Flags:
//
//     --wrong-pin    Authorize with a wrong PIN (last digit changed). Expects a decline; then skips
//                    Complete and runs BalanceInquiry with the right PIN. Fails if approved.
//     --tamper-mac   First send Authorize with a corrupted fs-mac, expecting gRPC UNAUTHENTICATED
//                    with token `bad-mac`; then resend the identical bytes under the same STAN with
//                    the right MAC (a refused call does not use its STAN) and continue normally.
//     --self-test    No network: check this program's crypto and encoding against the test
//                    vectors of docs/pos-protocol.md §12 and print the results.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import smCrypto from 'sm-crypto';

const { sm2 } = smCrypto;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_PROTO_DIR = path.resolve(HERE, '..', '..', '..', 'proto');
const SERVICE = 'fuelswitch.v1.PosGateway';

class TerminalError extends Error {}

function fail(message) {
  throw new TerminalError(message);
}

// ---------------------------------------------------------------------------------------------
// Protobuf: proto-loader gives us protobufjs-based serializers; we call them ourselves so that we
// hold the exact bytes we MAC and send (§5).

function loadProtos(protoDir) {
  const file = path.join(protoDir, 'fuelswitch', 'v1', 'pos.proto');
  if (!fs.existsSync(file)) fail(`cannot find ${file} (set proto_dir)`);
  const def = protoLoader.loadSync(file, {
    includeDirs: [protoDir],
    keepCase: true, // field names exactly as in the .proto / the doc
    longs: Number, // int64 values in this protocol (fen, ms, ml) stay far below 2^53
    enums: String,
    defaults: true, // show zero values in the output
    oneofs: true,
  });
  const service = def[SERVICE];
  if (!service) fail(`${SERVICE} not found in ${file}`);
  const rpc = {};
  for (const name of Object.keys(service)) {
    const m = service[name];
    rpc[name] = {
      path: m.path, // "/fuelswitch.v1.PosGateway/<rpc>"
      serialize: (obj) => m.requestSerialize(obj),
      parse: (buf) => m.responseDeserialize(buf),
    };
  }
  return { rpc, def };
}

// ---------------------------------------------------------------------------------------------
// Cryptography (§4, §5, §7)

function hmacSm3Hex(key, bytes) {
  return crypto.createHmac('sm3', key).update(bytes).digest('hex');
}

function sm3Hex(bytes) {
  return crypto.createHash('sm3').update(bytes).digest('hex');
}

function sm4EcbEncrypt(key, block) {
  const c = crypto.createCipheriv('sm4-ecb', key, null);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(block), c.final()]);
}

function signOnMessage(terminalId, nonce, timeMs) {
  return `${terminalId}|${nonce.toString('hex')}|${BigInt(timeMs).toString(10)}`;
}

function sm2Sign(messageUtf8, privateKeyHex, publicKeyHex) {
  // sm-crypto: SM3 digest with Z_A (user ID 1234567812345678), output r||s hex, 64 bytes.
  const sigHex = sm2.doSignature(Buffer.from(messageUtf8, 'utf8'), privateKeyHex, {
    hash: true,
    der: false,
    publicKey: publicKeyHex,
  });
  const sig = Buffer.from(sigHex, 'hex');
  if (sig.length !== 64) fail(`SM2 signature is ${sig.length} bytes, expected 64`);
  return sig;
}

function sm2Verify(messageUtf8, sig, publicKeyHex) {
  return sm2.doVerifySignature(Buffer.from(messageUtf8, 'utf8'), sig.toString('hex'), publicKeyHex, {
    hash: true,
    der: false,
  });
}

function decryptSessionKeys(encryptedKeys, privateKeyHex) {
  if (encryptedKeys.length !== 128) fail(`encrypted_keys is ${encryptedKeys.length} bytes, expected 128`);
  // C1 (64, no 04) || C3 (32) || C2 (32); sm-crypto cipher mode 1 = C1C3C2. sm-crypto checks C3
  // and returns an EMPTY array (it does not throw) when it does not match.
  const plain = sm2.doDecrypt(encryptedKeys.toString('hex'), privateKeyHex, 1, { output: 'array' });
  if (!plain || plain.length !== 32) {
    fail('encrypted_keys does not decrypt under our private key (C3 check failed)');
  }
  const keys = Buffer.from(plain);
  return { macKey: keys.subarray(0, 16), pinKey: keys.subarray(16, 32) };
}

function luhnOk(pan) {
  let sum = 0;
  for (let i = 0; i < pan.length; i++) {
    let d = pan.charCodeAt(pan.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

function pinBlock(pan, pin, pinKey) {
  if (!/^[0-9]{4,12}$/.test(pin)) fail('PIN must be 4-12 digits');
  if (!/^[0-9]{16,19}$/.test(pan)) fail('PAN must be 16-19 digits');
  const pinField = Buffer.from(('0' + pin.length.toString(16) + pin).padEnd(16, 'F'), 'hex');
  const panDigits = pan.slice(0, -1).slice(-12); // 12 rightmost digits excluding the check digit
  const panField = Buffer.from('0000' + panDigits, 'hex');
  const clear = Buffer.alloc(16, 0xff);
  for (let i = 0; i < 8; i++) clear[i] = pinField[i] ^ panField[i];
  return sm4EcbEncrypt(pinKey, clear);
}

function maskPan(pan) {
  return pan.slice(0, 6) + '*'.repeat(pan.length - 10) + pan.slice(-4);
}

function roundHalfUpDiv(numerator, denominator) {
  // non-negative integers
  return Math.floor((numerator * 2 + denominator) / (denominator * 2));
}

// ---------------------------------------------------------------------------------------------
// gRPC: one generic client; every call sends pre-serialized bytes (identity serializer) and
// receives raw response bytes (identity deserializer) so the response MAC can be checked.

const identity = (buf) => buf;

function statusName(code) {
  return Object.keys(grpc.status).find((k) => grpc.status[k] === code) || String(code);
}

function unary(client, methodPath, bytes, metadata, deadlineMs) {
  return new Promise((resolve) => {
    let result = null;
    const call = client.makeUnaryRequest(
      methodPath,
      identity,
      identity,
      bytes,
      metadata,
      { deadline: new Date(Date.now() + deadlineMs) },
      (err, value) => {
        result = { err, value };
      },
    );
    call.on('status', (status) => {
      resolve({ err: result && result.err, value: result && result.value, status });
    });
  });
}

function describeError(err) {
  const md = err.metadata ? err.metadata.getMap() : {};
  return {
    grpc_code: err.code,
    grpc_status: statusName(err.code),
    details: err.details,
    token: (err.details || '').split(':')[0],
    host_time_ms: md['fs-host-time-ms'] !== undefined ? Number(md['fs-host-time-ms']) : undefined,
  };
}

function jsonable(value) {
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return Buffer.from(value).toString('hex');
  if (Array.isArray(value)) return value.map(jsonable);
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = jsonable(v);
    return out;
  }
  return value;
}

class Terminal {
  constructor(cfg, protos) {
    this.cfg = cfg;
    this.rpc = protos.rpc;
    this.client = new grpc.Client(cfg.target, grpc.credentials.createInsecure());
    this.deadlineMs = cfg.deadline_ms ?? 10000;
    this.privateKeyHex = cfg.private_key.toLowerCase();
    this.publicKeyHex = sm2.getPublicKeyFromPrivateKey(this.privateKeyHex);
    // host time − local time, from the last SignOn. `clock_skew_ms` in the input starts the
    // terminal with a wrong clock, to exercise the clock-skew recovery of §4.
    this.clockOffsetMs = cfg.clock_skew_ms ?? 0;
    this.clockCorrections = 0;
    this.stan = cfg.stan ?? 1;
    this.session = null;
  }

  now() {
    return Date.now() + this.clockOffsetMs;
  }

  nextStan() {
    const s = this.stan;
    this.stan = this.stan >= 0xffffffff ? 1 : this.stan + 1;
    return s;
  }

  close() {
    this.client.close();
  }

  async healthCheck() {
    // grpc.health.v1.Health/Check, HealthCheckRequest{service: ""} = zero bytes;
    // HealthCheckResponse{status = 1 (SERVING)} = 08 01.
    const r = await unary(this.client, '/grpc.health.v1.Health/Check', Buffer.alloc(0), new grpc.Metadata(), this.deadlineMs);
    if (r.err) fail(`health check failed: ${statusName(r.err.code)} ${r.err.details}`);
    const serving = r.value.length === 2 && r.value[0] === 0x08 && r.value[1] === 0x01;
    if (!serving) fail(`host is not SERVING (health response ${r.value.toString('hex')})`);
    return 'SERVING';
  }

  async signOn() {
    for (let attempt = 0; attempt < 2; attempt++) {
      const nonce = crypto.randomBytes(16);
      const timeMs = this.now();
      const msg = signOnMessage(this.cfg.terminal_id, nonce, timeMs);
      const signature = sm2Sign(msg, this.privateKeyHex, this.publicKeyHex);
      const bytes = this.rpc.SignOn.serialize({
        terminal_id: this.cfg.terminal_id,
        nonce,
        terminal_time_ms: timeMs,
        signature,
      });
      const r = await unary(this.client, this.rpc.SignOn.path, bytes, new grpc.Metadata(), this.deadlineMs);
      if (r.err) {
        const e = describeError(r.err);
        if (e.token === 'clock-skew' && e.host_time_ms && attempt === 0) {
          this.clockOffsetMs = e.host_time_ms - Date.now();
          this.clockCorrections += 1;
          continue; // new nonce, corrected clock
        }
        fail(`SignOn refused: ${e.grpc_status} ${e.details}`);
      }
      const resp = this.rpc.SignOn.parse(r.value);
      if (resp.response_code !== '00') fail(`SignOn answered ${resp.response_code} (${resp.message})`);
      if (!resp.session_id || resp.session_id.length > 64) fail(`bad session_id ${JSON.stringify(resp.session_id)}`);
      const { macKey, pinKey } = decryptSessionKeys(resp.encrypted_keys, this.privateKeyHex);
      this.clockOffsetMs = resp.host_time_ms - Date.now();
      if (!(resp.expires_at_ms > resp.host_time_ms)) fail('session already expired at sign-on');
      if (resp.expires_at_ms - resp.host_time_ms > 24 * 3600 * 1000) fail('session lasts more than 24 h');
      this.session = { id: resp.session_id, macKey, pinKey };
      const trailerMac = r.status.metadata.get('fs-mac');
      return {
        ...jsonable(resp),
        encrypted_keys: `<${resp.encrypted_keys.length} bytes>`,
        signing_input: msg,
        clock_corrections: this.clockCorrections,
        // The doc promises response MACs only for calls with a session; note what we saw.
        trailing_fs_mac_present: trailerMac.length > 0,
      };
    }
    return fail('unreachable');
  }

  // Serialize once, MAC those bytes, send those bytes, check the response MAC.
  async call(name, request, { tamperMac = false } = {}) {
    const rpc = this.rpc[name];
    const bytes = rpc.serialize(request);
    return this.send(name, bytes, { tamperMac });
  }

  async send(name, bytes, { tamperMac = false } = {}) {
    if (!this.session) fail('not signed on');
    const rpc = this.rpc[name];
    let mac = hmacSm3Hex(this.session.macKey, bytes);
    if (tamperMac) mac = (mac[0] === '0' ? '1' : '0') + mac.slice(1);
    const md = new grpc.Metadata();
    md.set('fs-terminal-id', this.cfg.terminal_id);
    md.set('fs-session-id', this.session.id);
    md.set('fs-mac', mac);
    const r = await unary(this.client, rpc.path, bytes, md, this.deadlineMs);
    if (r.err) return { error: describeError(r.err), bytes };
    const got = r.status.metadata.get('fs-mac');
    if (got.length !== 1) fail(`${name}: response has ${got.length} fs-mac trailers, expected 1 (treat as lost, §6.2)`);
    const want = hmacSm3Hex(this.session.macKey, r.value);
    if (String(got[0]) !== want) fail(`${name}: response MAC mismatch (got ${got[0]}, computed ${want})`);
    return { response: rpc.parse(r.value), bytes, responseMacVerified: true };
  }

  header() {
    return { terminal_id: this.cfg.terminal_id, stan: this.nextStan(), terminal_time_ms: this.now() };
  }
}

function expectOk(name, r) {
  if (r.error) fail(`${name} refused: ${r.error.grpc_status} ${r.error.details}`);
  return r.response;
}

async function runFlow(cfg, flags, out) {
  const protos = loadProtos(cfg.proto_dir || DEFAULT_PROTO_DIR);
  for (const k of ['target', 'terminal_id', 'private_key', 'pan', 'pin', 'authorize_amount']) {
    if (cfg[k] === undefined || cfg[k] === '') fail(`input is missing "${k}"`);
  }
  if (!/^[0-9a-fA-F]{64}$/.test(cfg.private_key)) fail('private_key must be 64 hex characters');
  if (!luhnOk(cfg.pan)) fail('PAN fails the Luhn check');
  const t = new Terminal(cfg, protos);
  const product = cfg.product_code ?? '92';
  const pump = cfg.pump ?? 1;
  try {
    out.health = await t.healthCheck();
    out.sign_on = await t.signOn();
    out.public_key = t.publicKeyHex;

    // ---- SyncHotlist after sign-on (§8.1); a host without offline support answers UNIMPLEMENTED.
    const syncReq = { header: t.header(), since_version: 0 };
    const sync = await t.call('SyncHotlist', syncReq);
    if (sync.error && sync.error.grpc_status !== 'UNIMPLEMENTED') {
      fail(`SyncHotlist refused: ${sync.error.grpc_status} ${sync.error.details}`);
    }
    out.sync_hotlist = sync.error
      ? { stan: syncReq.header.stan, ...sync.error }
      : { stan: syncReq.header.stan, response_mac_verified: true, ...jsonable(sync.response) };

    // ---- Authorize
    let authPin = cfg.pin;
    if (flags.wrongPin) {
      const last = authPin.charCodeAt(authPin.length - 1) - 48;
      authPin = authPin.slice(0, -1) + String((last + 1) % 10);
    }
    const authReq = {
      header: t.header(),
      pan: cfg.pan,
      pin_block: pinBlock(cfg.pan, authPin, t.session.pinKey),
      amount: cfg.authorize_amount,
      product_code: product,
      pump,
      partial_allowed: false,
    };
    const authBytes = t.rpc.Authorize.serialize(authReq);
    if (flags.tamperMac) {
      const bad = await t.send('Authorize', authBytes, { tamperMac: true });
      if (!bad.error) fail('Authorize with a tampered fs-mac was accepted');
      out.tampered_authorize = { stan: authReq.header.stan, ...bad.error };
      if (bad.error.grpc_status !== 'UNAUTHENTICATED' || bad.error.token !== 'bad-mac') {
        fail(`tampered fs-mac: expected UNAUTHENTICATED bad-mac, got ${bad.error.grpc_status} ${bad.error.details}`);
      }
      // §5/§6.1: a refused call was not processed and did not use its STAN → resend the same bytes.
    }
    const auth = expectOk('Authorize', await t.send('Authorize', authBytes));
    out.authorize = { stan: authReq.header.stan, response_mac_verified: true, ...jsonable(auth) };
    const approved = auth.response_code === '00' || auth.response_code === '10';

    if (flags.wrongPin) {
      if (approved) {
        await t.call('Cancel', { header: t.header(), hold_id: auth.hold_id });
        fail(`Authorize with a wrong PIN was approved (${auth.response_code}); hold cancelled`);
      }
      if (auth.hold_id || auth.approved_amount !== 0 || auth.approval_code) {
        fail('declined Authorize carries a hold_id, approved_amount or approval_code');
      }
    } else {
      if (auth.response_code !== '00') fail(`Authorize declined: ${auth.response_code} (${auth.message})`);
      if (auth.approved_amount !== cfg.authorize_amount) {
        fail(`Authorize "00" but approved_amount ${auth.approved_amount} != requested ${cfg.authorize_amount}`);
      }
      if (!auth.hold_id || auth.hold_id.length > 64) fail(`bad hold_id ${JSON.stringify(auth.hold_id)}`);
      if (!/^[0-9A-Z]{6}$/.test(auth.approval_code)) fail(`bad approval_code ${JSON.stringify(auth.approval_code)}`);

      // ---- Complete
      const unitPrice = auth.unit_price || cfg.unit_price;
      if (!unitPrice) fail('no unit price: host sent unit_price 0 and the input has none');
      const volume = cfg.fuel_volume_ml;
      if (!(volume > 0)) fail('input is missing "fuel_volume_ml"');
      const amount = roundHalfUpDiv(volume * unitPrice, 1000);
      if (amount > auth.approved_amount) fail(`fuelled amount ${amount} exceeds approved ${auth.approved_amount}`);
      if (auth.approved_volume_ml && volume > auth.approved_volume_ml) fail('volume above approved_volume_ml');
      const compReq = {
        header: t.header(),
        hold_id: auth.hold_id,
        amount,
        volume_ml: volume,
        product_code: product,
        unit_price: unitPrice,
      };
      const comp = expectOk('Complete', await t.call('Complete', compReq));
      out.complete = {
        stan: compReq.header.stan,
        request: { amount, volume_ml: volume, unit_price: unitPrice },
        response_mac_verified: true,
        ...jsonable(comp),
      };
      if (comp.response_code !== '00') fail(`Complete declined: ${comp.response_code} (${comp.message})`);
      if (!comp.transaction_id) fail('Complete "00" without transaction_id');
      if (comp.settled_amount !== amount - comp.discount_amount) {
        fail(`settled_amount ${comp.settled_amount} != amount ${amount} − discount ${comp.discount_amount}`);
      }
    }

    // ---- BalanceInquiry (always with the right PIN)
    const balReq = { header: t.header(), pan: cfg.pan, pin_block: pinBlock(cfg.pan, cfg.pin, t.session.pinKey) };
    const bal = expectOk('BalanceInquiry', await t.call('BalanceInquiry', balReq));
    out.balance_inquiry = { stan: balReq.header.stan, response_mac_verified: true, ...jsonable(bal) };
    if (bal.response_code !== '00') fail(`BalanceInquiry declined: ${bal.response_code} (${bal.message})`);
    if (bal.masked_pan !== maskPan(cfg.pan)) fail(`masked_pan ${bal.masked_pan} != ${maskPan(cfg.pan)}`);
    if (out.complete && bal.balance !== out.complete.balance) {
      fail(`BalanceInquiry balance ${bal.balance} != Complete balance ${out.complete.balance}`);
    }
    out.next_stan = t.stan;
  } finally {
    t.close();
  }
}

// ---------------------------------------------------------------------------------------------
// --self-test: the vectors of docs/pos-protocol.md §12 (and §7)

function selfTest(protoDir) {
  const protos = loadProtos(protoDir);
  const results = {};
  const check = (name, got, want) => {
    results[name] = got === want ? 'ok' : `MISMATCH: got ${got}, want ${want}`;
  };
  const hex = (s) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
  const sm4Key = hex('0123456789abcdeffedcba9876543210');
  check('sm4', sm4EcbEncrypt(sm4Key, sm4Key).toString('hex'), '681edf34d206965e86b3e94f536e4246');

  const priv = '3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8';
  const pub =
    '0409f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f350' +
    '20ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13';
  check('public_key_from_private', sm2.getPublicKeyFromPrivateKey(priv), pub);
  const input = signOnMessage('T0001', hex('00112233445566778899aabbccddeeff'), 1735689600000);
  check('signing_input', input, 'T0001|00112233445566778899aabbccddeeff|1735689600000');
  const docSig = hex(
    'a37053341b3aa3b6e311cf39cd0ce286c73e7cce3f1b29290f192181ad79868c' +
      'd1f6ae274b89ef18b51812f8b4b69443c1004ca9949bb375409f2b23aa68714c',
  );
  check('doc_signature_verifies', sm2Verify(input, docSig, pub), true);
  const ourSig = sm2Sign(input, priv, pub);
  check('own_signature_verifies', sm2Verify(input, ourSig, pub), true);

  const enc = hex(`62c0c0ba292e3c0c0c47fae6ef31deeff706184dda17fb0aa51b521048edc117
    6e4d14e5014cf5ecdfc84be937534929e40eb0a2f4afb95286d97c2d7374ec83
    335bfffdf55ec734bd99dc0001087000143319511baa65d539de44a2ee68cd43
    7b7ea92ebe52c73271082b9761d6b23786e72b945ed9d2e0a183efc15357cb5e`);
  const { macKey, pinKey } = decryptSessionKeys(enc, priv);
  check('mac_key', macKey.toString('hex'), '00112233445566778899aabbccddeeff');
  check('pin_key', pinKey.toString('hex'), '0123456789abcdeffedcba9876543210');
  const broken = Buffer.from(enc);
  broken[70] ^= 1; // inside C3
  let rejected = false;
  try {
    decryptSessionKeys(broken, priv);
  } catch {
    rejected = true;
  }
  check('tampered_encrypted_keys_rejected', rejected, true);

  const pan = '9000011234567890127';
  check('luhn', luhnOk(pan), true);
  check('masked_pan', maskPan(pan), '900001*********0127');
  const pb = pinBlock(pan, '1234', pinKey);
  check('pin_block', pb.toString('hex'), 'addd776d25fa5ee8545c1bcf479ed251');

  const authBytes = protos.rpc.Authorize.serialize({
    header: { terminal_id: 'T0001', stan: 42, terminal_time_ms: 1735689600000 },
    pan,
    pin_block: pb,
    amount: 30000,
    product_code: '92',
    pump: 3,
    partial_allowed: true,
  });
  check(
    'authorize_bytes',
    authBytes.toString('hex'),
    hex(`0a 10 0a 05 54 30 30 30 31 10 2a 18 80 f8 a5 f9 c1 32
         12 13 39 30 30 30 30 31 31 32 33 34 35 36 37 38 39 30 31 32 37
         1a 10 ad dd 77 6d 25 fa 5e e8 54 5c 1b cf 47 9e d2 51
         20 b0 ea 01  32 02 39 32  38 03  58 01`).toString('hex'),
  );
  check('authorize_length', authBytes.length, 69);
  check('request_mac', hmacSm3Hex(macKey, authBytes), '881d2753db522c62d61c9608322cb576796dae3629476873f6b16e6b1624293c');
  check('stream_mac', hmacSm3Hex(macKey, Buffer.alloc(0)), 'c8e4e95012eb3d449b5dd0691947986e469e08a3506bb55ccb94a96ebfada654');

  // Offline record: serialize without `mac`, then append 7a 40 + 64 ASCII hex characters.
  const rec = {
    header: { terminal_id: 'T0001', stan: 57, terminal_time_ms: 1735693200000 },
    pan,
    amount: 20000,
    volume_ml: 27100,
    product_code: '92',
    unit_price: 738,
    transaction_time_ms: 1735690000000,
    hotlist_version: 1200,
    pump: 3,
  };
  // UploadOffline is client streaming; its request serializer is OfflineTransaction's.
  const recBytes = protos.rpc.UploadOffline.serialize(rec);
  check(
    'offline_record_bytes',
    recBytes.toString('hex'),
    '0a100a05543030303110391880d581fbc13212133930303030313132333435363738393031323718a09c0120dcd301' +
      '2a02393230e2053880adbef9c13240b0094803',
  );
  const recMac = hmacSm3Hex(macKey, recBytes);
  check('offline_record_mac', recMac, '830ab2118fbdd71e527fe766ed0718581c7ed444f563ff6d7d1eb9569dbfac4c');
  check('offline_record_length', Buffer.concat([recBytes, Buffer.from([0x7a, 0x40]), Buffer.from(recMac, 'ascii')]).length, 132);
  check('hotlist_hash', sm3Hex(Buffer.from(pan, 'ascii')), '10feefb662838d5677a61242b1f866c8426daa5586a556f2e7ac3a29bd094ed5');
  return results;
}

// ---------------------------------------------------------------------------------------------

function readInput(args) {
  const positional = args.filter((a) => !a.startsWith('--'));
  const src = positional[0];
  let text;
  if (src === undefined || src === '-') text = fs.readFileSync(0, 'utf8');
  else if (src.startsWith('@')) text = fs.readFileSync(src.slice(1), 'utf8');
  else text = src;
  try {
    return JSON.parse(text);
  } catch (e) {
    return fail(`input is not valid JSON: ${e.message}`);
  }
}

async function main() {
  const args = process.argv.slice(2);
  const known = new Set(['--wrong-pin', '--tamper-mac', '--self-test']);
  for (const a of args) if (a.startsWith('--') && !known.has(a)) fail(`unknown flag ${a}`);
  if (args.includes('--self-test')) {
    const results = selfTest(DEFAULT_PROTO_DIR);
    const bad = Object.entries(results).filter(([, v]) => v !== 'ok');
    process.stdout.write(JSON.stringify({ self_test: results }, null, 2) + '\n');
    if (bad.length) fail(`self-test failed: ${bad.map(([k]) => k).join(', ')}`);
    return;
  }
  const cfg = readInput(args);
  const flags = { wrongPin: args.includes('--wrong-pin'), tamperMac: args.includes('--tamper-mac') };
  const out = { terminal_id: cfg.terminal_id, flags };
  try {
    await runFlow(cfg, flags, out);
  } catch (e) {
    out.error = e.message;
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    throw e;
  }
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

main().catch((e) => {
  const msg = e instanceof TerminalError ? e.message : e && e.stack ? e.stack : String(e);
  process.stderr.write(`node terminal: FAILED: ${msg}\n`);
  process.exitCode = 1;
});
