/* "Is this file logged?": hash a local file in the browser and ask the log for
   releases naming that image digest. The file never leaves the machine. Uses
   Web Crypto where the browser offers it, else sha256.js (plain HTTP). */
'use strict';
(function () {
  const form = document.getElementById('file-check');
  if (!form) return;
  const input = form.querySelector('input[type=file]');
  const out = document.getElementById('file-result');
  const root = form.dataset.root || '';
  const CHUNK = 1 << 20;

  async function sha256(file) {
    if (window.crypto && window.crypto.subtle && typeof window.crypto.subtle.digest === 'function') {
      const digest = await window.crypto.subtle.digest('SHA-256', await file.arrayBuffer());
      return { hex: FirmlogSHA256.hex(new Uint8Array(digest)), hasher: 'subtle' };
    }
    const h = new FirmlogSHA256.SHA256();
    for (let offset = 0; offset < file.size; offset += CHUNK) {
      h.update(new Uint8Array(await file.slice(offset, offset + CHUNK).arrayBuffer()));
    }
    return { hex: FirmlogSHA256.hex(h.digest()), hasher: 'script' };
  }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function show(state, ...nodes) {
    out.dataset.state = state;
    out.replaceChildren(...nodes);
  }

  async function check(file) {
    delete out.dataset.digest;
    delete out.dataset.hasher;
    show('hashing', el('p', 'hashing ' + file.name + ' (' + file.size + ' bytes)…'));
    const { hex, hasher } = await sha256(file);
    out.dataset.digest = hex;
    out.dataset.hasher = hasher;
    const how = hasher === 'subtle' ? 'hashed by the browser (Web Crypto)'
      : "hashed by this page's own SHA-256 (the browser offers no Web Crypto here)";
    const head = el('p');
    head.append(file.name + ': ', el('code', 'sha256:' + hex, { class: 'hash' }), ' — ' + how);
    const resp = await fetch(root + 'v1/releases?image_sha256=' + hex, { headers: { Accept: 'application/json' } });
    const body = await resp.json();
    if (!resp.ok) {
      show('error', head, el('p', 'The log answered ' + resp.status + ': ' + body.error));
      return;
    }
    const search = el('a', 'search this digest', { href: root + 'search?image_sha256=' + hex });
    if (body.releases.length === 0) {
      const p = el('p', 'This file is NOT in this log. ', { class: 'absent' });
      p.append(search);
      show('absent', head, p);
      return;
    }
    const list = el('ul');
    for (const r of body.releases) {
      const item = el('li');
      const rel = r.release;
      item.append(
        el('a', rel.vendor + ' ' + rel.product + ' ' + rel.version, { href: root + 'entry/' + r.index }),
        ' (log index ' + r.index + ')');
      if (r.revoked_by.length) item.append(' ', el('span', 'REVOKED', { class: 'revoked' }));
      list.append(item);
    }
    const found = el('p', 'This file is in the log, named by ' + body.releases.length +
      (body.releases.length === 1 ? ' release' : ' releases') +
      (body.next_cursor ? ' or more' : '') + ': ', { class: 'found' });
    found.append(search);
    show('found', head, found, list);
  }

  input.addEventListener('change', () => {
    const file = input.files[0];
    if (!file) return;
    check(file).catch((err) => show('error', el('p', 'could not check the file: ' + err)));
  });
  form.addEventListener('submit', (ev) => ev.preventDefault());
})();
