/* SHA-256 as FIPS 180-4 defines it (sections 4.1.2, 4.2.2, 5.1.1, 5.3.3, 6.2),
   for browsers that give no crypto.subtle: pages served over plain HTTP from a
   name other than localhost. Incremental: update() takes bytes in pieces of any
   size, digest() pads and returns the 32-byte hash. */
'use strict';
(function (global) {
  // 2^32 times the fractional part of x, as an unsigned 32-bit word.
  function fractionWord(x) {
    return ((x - Math.floor(x)) * 4294967296) >>> 0;
  }

  const primes = [];
  for (let n = 2; primes.length < 64; n++) {
    if (primes.every((p) => n % p !== 0)) primes.push(n);
  }
  // 4.2.2: cube roots of the first 64 primes; 5.3.3: square roots of the first 8.
  const K = Uint32Array.from(primes, (p) => fractionWord(Math.cbrt(p)));
  const H0 = Uint32Array.from(primes.slice(0, 8), (p) => fractionWord(Math.sqrt(p)));

  function rotr(x, n) {
    return (x >>> n) | (x << (32 - n));
  }

  class SHA256 {
    constructor() {
      this.h = Uint32Array.from(H0);
      this.w = new Uint32Array(64);
      this.block = new Uint8Array(64);
      this.used = 0; // bytes waiting in this.block
      this.length = 0; // bytes hashed so far
      this.done = false;
    }

    // Hash the 64-byte block at bytes[offset..offset+64) (6.2.2).
    compress(bytes, offset) {
      const w = this.w;
      for (let t = 0; t < 16; t++) {
        const i = offset + 4 * t;
        w[t] = ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0;
      }
      for (let t = 16; t < 64; t++) {
        const x = w[t - 15];
        const y = w[t - 2];
        const s0 = rotr(x, 7) ^ rotr(x, 18) ^ (x >>> 3);
        const s1 = rotr(y, 17) ^ rotr(y, 19) ^ (y >>> 10);
        w[t] = (s1 + w[t - 7] + s0 + w[t - 16]) >>> 0;
      }
      const h = this.h;
      let a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
      for (let t = 0; t < 64; t++) {
        const sum1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        const ch = (e & f) ^ (~e & g);
        const t1 = (k + sum1 + ch + K[t] + w[t]) >>> 0;
        const sum0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        const maj = (a & b) ^ (a & c) ^ (b & c);
        const t2 = (sum0 + maj) >>> 0;
        k = g;
        g = f;
        f = e;
        e = (d + t1) >>> 0;
        d = c;
        c = b;
        b = a;
        a = (t1 + t2) >>> 0;
      }
      h[0] = (h[0] + a) >>> 0;
      h[1] = (h[1] + b) >>> 0;
      h[2] = (h[2] + c) >>> 0;
      h[3] = (h[3] + d) >>> 0;
      h[4] = (h[4] + e) >>> 0;
      h[5] = (h[5] + f) >>> 0;
      h[6] = (h[6] + g) >>> 0;
      h[7] = (h[7] + k) >>> 0;
    }

    // Add bytes (a Uint8Array) to the message.
    update(bytes) {
      if (this.done) throw new Error('SHA256: update after digest');
      let i = 0;
      this.length += bytes.length;
      if (this.used > 0) {
        i = Math.min(64 - this.used, bytes.length);
        this.block.set(bytes.subarray(0, i), this.used);
        this.used += i;
        if (this.used < 64) return this;
        this.compress(this.block, 0);
        this.used = 0;
      }
      for (; i + 64 <= bytes.length; i += 64) this.compress(bytes, i);
      if (i < bytes.length) {
        this.block.set(bytes.subarray(i), 0);
        this.used = bytes.length - i;
      }
      return this;
    }

    // The 32-byte hash of everything given to update() (padding: 5.1.1).
    digest() {
      const bits = this.length * 8;
      const pad = new Uint8Array((this.used < 56 ? 64 : 128) - this.used);
      pad[0] = 0x80;
      const view = new DataView(pad.buffer);
      view.setUint32(pad.length - 8, Math.floor(bits / 4294967296));
      view.setUint32(pad.length - 4, bits >>> 0);
      this.update(pad);
      this.done = true;
      const out = new Uint8Array(32);
      const outView = new DataView(out.buffer);
      this.h.forEach((word, j) => outView.setUint32(4 * j, word));
      return out;
    }
  }

  function hex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  global.FirmlogSHA256 = {
    SHA256,
    hex,
    // The lowercase hex SHA-256 of a Uint8Array.
    digestHex(bytes) {
      return hex(new SHA256().update(bytes).digest());
    },
  };
})(self);
