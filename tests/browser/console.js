// Drives the support console in the system Chromium, with the keyboard only: every
// action is a key press, so whatever this test does a keyboard user can do. Reads of the
// page (what is shown, where the focus is) go through page.evaluate.
//   node console.js   (tests/integration/console.sh sets the environment below)
// CAIRN_URL, ADMIN_TOKEN, SUPPORT_TOKEN, SHARE_TOKEN, OUT (screenshots, downloads),
// FIXTURE (a JSON file: the files of the test sandbox and what must be seen).
'use strict';
const puppeteer = require('puppeteer-core');
const assert = require('assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

const env = (k) => { const v = process.env[k]; if (!v) throw new Error('missing ' + k); return v; };
const BASE = env('CAIRN_URL'), OUT = env('OUT');
const ADMIN = env('ADMIN_TOKEN'), SUPPORT = env('SUPPORT_TOKEN'), SHARE = env('SHARE_TOKEN');
const FX = JSON.parse(fs.readFileSync(env('FIXTURE'), 'utf8'));
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
let step = 'start';
const log = (m) => { step = m; console.error('console.js: ' + m); };

function get(url, headers) {
  return new Promise((res, rej) => {
    http.get(url, {headers: headers || {}}, (r) => {
      const b = []; r.on('data', (c) => b.push(c)); r.on('end', () => res({status: r.statusCode, headers: r.headers, body: Buffer.concat(b)}));
    }).on('error', rej);
  });
}

const problems = [];   // script errors, CSP violations, dialogs: any one fails the test

async function newPage(ctx, name) {
  const page = await ctx.newPage();
  await page.setViewport({width: 1280, height: 860});
  page.setDefaultTimeout(60000);  // a wait for a condition, not a speed target: a loaded CI machine took > 15 s once
  page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
  page.on('dialog', async (d) => { problems.push(`${name}: a dialog opened (script ran): ${d.message()}`); await d.dismiss(); });
  page.on('console', (m) => {
    const t = m.text();
    // A refused call shows as a failed resource load; the console says it in words itself.
    if (m.type() === 'error' && !/Failed to load resource: the server responded with a status of (401|403|404|410)/.test(t))
      problems.push(`${name}: console error: ${t}`);
  });
  return page;
}

// Presses Tab (or Shift+Tab) until the focused element satisfies `want` (a function
// run in the page on document.activeElement), at most `max` times.
async function tabTo(page, want, arg, max = 80, back = false) {
  for (let i = 0; i < max; i++) {
    if (await page.evaluate(want, arg)) return i;
    if (back) { await page.keyboard.down('Shift'); await page.keyboard.press('Tab'); await page.keyboard.up('Shift'); }
    else await page.keyboard.press('Tab');
  }
  throw new Error(`${step}: keyboard focus never reached the wanted element in ${max} tabs`);
}
const focusedText = (t) => { const a = document.activeElement; return !!a && a.textContent.trim() === t; };
const focusedIs = (sel) => { const a = document.activeElement; return !!a && a.matches(sel); };
// the button `label` of the tree row whose path is p
const focusedRowButton = ([p, label]) => {
  const a = document.activeElement;
  if (!a || a.tagName !== 'BUTTON') return false;
  const li = a.closest('li.entry');
  return !!li && li.dataset.path === p && a.textContent.trim() === label;
};

async function press(page, key) { await page.keyboard.press(key); }
async function typeAndEnter(page, text) { await page.keyboard.type(text); await press(page, 'Enter'); }
async function waitText(page, sel, re) {
  await page.waitForFunction((s, r) => { const n = document.querySelector(s); return n && new RegExp(r).test(n.textContent); },
                             {}, sel, re.source);
  return page.$eval(sel, (n) => n.textContent);
}
async function shot(page, name) { await page.screenshot({path: path.join(OUT, name + '.png'), fullPage: true}); }

// Opens the folder rows of a path in turn, by keyboard: "/home/ubuntu/output" opens
// home/, ubuntu/ and output/.
async function openFolders(page, p) {
  let cur = '';
  for (const part of p.split('/').filter(Boolean)) {
    cur += '/' + part;
    await tabTo(page, focusedRowButton, [cur, part + '/']);
    const open = await page.evaluate(() => document.activeElement.getAttribute('aria-expanded'));
    if (open !== 'true') await press(page, 'Enter');
    await page.waitForFunction((c) => {
      const li = [...document.querySelectorAll('li.entry')].find((x) => x.dataset.path === c);
      return li && li.querySelector('ul.tree') && !li.querySelector('ul.tree > li.loading');
    }, {}, cur);
  }
}

async function waitDownload(dir, name, size) {
  const f = path.join(dir, name);
  for (let i = 0; i < 300; i++) {
    if (fs.existsSync(f) && fs.statSync(f).size === size) return fs.readFileSync(f);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${step}: ${name} was not downloaded (${size} bytes) into ${dir}`);
}

// The names in a tar stream (ustar and GNU long names).
function tarNames(buf) {
  const names = [];
  let off = 0, long = null;
  while (off + 512 <= buf.length) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (a, n) => h.subarray(a, a + n).toString('latin1').replace(/\0.*$/s, '');
    const size = parseInt(str(124, 12).trim() || '0', 8);
    const type = String.fromCharCode(h[156]);
    const data = buf.subarray(off + 512, off + 512 + size);
    if (type === 'L') long = data.toString('latin1').replace(/\0.*$/s, '');
    else if (type === 'x') {
      const m = /\d+ path=([^\n]*)\n/.exec(data.toString('utf8'));
      if (m) long = m[1];
    } else {
      const prefix = str(345, 155);
      names.push(long || (prefix ? prefix + '/' : '') + str(0, 100));
      long = null;
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return names;
}

async function signIn(page, token) {
  await page.waitForSelector('#token');
  assert.ok(await page.evaluate(() => document.activeElement && document.activeElement.id === 'token'),
            'the token field has the focus on the sign-in page');
  await typeAndEnter(page, token);
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cairn-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-extensions',
           '--user-data-dir=' + profile],
  });
  try {
    await run(browser);
  } finally {
    await browser.close();
    fs.rmSync(profile, {recursive: true, force: true});
  }
}

async function run(browser) {
  const dl = path.join(OUT, 'downloads');
  fs.mkdirSync(dl, {recursive: true});

  log('headers of /console/');
  const r = await get(BASE + '/console/');
  assert.equal(r.status, 200);
  const csp = r.headers['content-security-policy'] || '';
  for (const d of ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"])
    assert.ok(csp.includes(d), `CSP has ${d}: ${csp}`);
  assert.ok(!/unsafe-inline|unsafe-eval/.test(csp), 'CSP allows no inline script: ' + csp);
  assert.equal(r.headers['x-content-type-options'], 'nosniff');
  assert.equal(r.headers['referrer-policy'], 'no-referrer');
  assert.ok(!/<script>|<script [^>]*>[^<]/.test(r.body.toString()), 'index.html has no inline script');
  const js = await get(BASE + '/console/app.js');
  assert.equal(js.status, 200);
  assert.match(js.headers['content-type'], /^text\/javascript/);
  assert.equal((await get(BASE + '/console/nothing-here.js')).status, 404);

  const ctx = await browser.createBrowserContext({downloadBehavior: {policy: 'allow', downloadPath: dl}});
  const page = await newPage(ctx, 'support');

  log('a wrong token is refused');
  await page.goto(BASE + '/console/', {waitUntil: 'networkidle0'});
  await signIn(page, 'not-a-real-token-' + crypto.randomBytes(8).toString('hex'));
  assert.match(await waitText(page, '#signin-error', /./), /token was refused/i);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('cairn.token')), null, 'a refused token is not kept');
  await shot(page, 'signin-refused');

  log('sign in as support');
  await page.evaluate(() => { document.getElementById('token').value = ''; });
  await typeAndEnter(page, SUPPORT);
  await page.waitForSelector('#q');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('cairn.token')), SUPPORT, 'the token is in sessionStorage');
  assert.ok(!page.url().includes(SUPPORT), 'the token is not in the URL');
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');

  log('search by tenant');
  await tabTo(page, focusedIs, '#q');
  await typeAndEnter(page, FX.tenant);
  await page.waitForSelector('#sandboxes');
  const found = await page.$$eval('#sandboxes tbody tr td:first-child', (t) => t.map((x) => x.textContent));
  assert.deepEqual(found.sort(), FX.tenant_sandboxes.slice().sort(), 'search by tenant lists its sandboxes');
  await shot(page, 'search');

  log('search by sandbox id');
  await tabTo(page, focusedIs, '#q', 80, true);
  await page.keyboard.down('Control'); await press(page, 'a'); await page.keyboard.up('Control');
  await typeAndEnter(page, FX.reclaimed_sandbox);
  await page.waitForFunction((s) => { const t = document.querySelector('#sandboxes'); return t && t.textContent.includes(s); }, {}, FX.reclaimed_sandbox);
  await tabTo(page, focusedText, FX.reclaimed_sandbox);
  await press(page, 'Enter');
  assert.equal(await waitText(page, '#state', /./), 'reclaimed');
  assert.match(await waitText(page, '#wake', /./), /only be rebuilt/);
  await shot(page, 'sandbox-reclaimed');

  log('open a sandbox');
  await page.goto(BASE + '/console/#/search?q=' + encodeURIComponent(FX.tenant), {waitUntil: 'networkidle0'});
  await page.waitForSelector('#sandboxes');
  await tabTo(page, focusedText, FX.sandbox);
  await press(page, 'Enter');
  assert.equal(await waitText(page, '#state', /./), 'hibernated');
  assert.match(await waitText(page, '#retention', /./), /^Reclaimed in (\d+ days?|\d+ hours?) /);
  assert.match(await waitText(page, '#wake', /./), /Can be woken/);
  await page.waitForSelector('#snapshots');
  await shot(page, 'sandbox');

  log('browse its latest snapshot');
  await tabTo(page, focusedText, FX.snapshot);
  await press(page, 'Enter');
  await page.waitForSelector('#tree li.entry li.entry');
  await openFolders(page, FX.out_dir);

  log('class badges, sizes and modes');
  const rows = await page.$$eval('#tree li.entry', (ls) => ls.map((li) => ({
    path: li.dataset.path, cls: (li.querySelector(':scope > .row .badge') || {}).textContent || '',
    mode: li.querySelector(':scope > .row .mode').textContent})));
  const byPath = Object.fromEntries(rows.map((x) => [x.path, x]));
  for (const [p, want] of Object.entries(FX.classes)) {
    if (!byPath[p]) continue;   // only the folders opened so far are listed
    assert.equal(byPath[p].cls, want, `class badge of ${p}`);
  }
  assert.equal(byPath[FX.out_dir + '/' + FX.text_name].mode, '-rw-r--r--');

  log('a hostile file name is text');
  const hostile = FX.out_dir + '/' + FX.hostile_name;
  const shown = await page.$$eval('#tree li.entry', (ls, p) => {
    const li = ls.find((x) => x.dataset.path === p);
    return li && li.querySelector('.fname').textContent;
  }, hostile);
  assert.equal(shown, FX.hostile_name, 'the hostile name is shown as its text');
  assert.equal(await page.$$eval('#tree img', (x) => x.length), 0, 'no <img> element came from a file name');
  assert.equal(await page.evaluate(() => window.__xss || 0), 0);

  log('preview a text file');
  await tabTo(page, focusedRowButton, [FX.out_dir + '/' + FX.text_name, 'Preview']);
  await press(page, 'Enter');
  await page.waitForSelector('#preview pre');
  assert.equal(await page.$eval('#preview pre', (n) => n.textContent), FX.text_content);
  assert.ok(await page.evaluate(() => document.activeElement.closest('#preview') !== null), 'focus moves to the preview');
  await shot(page, 'preview-text');

  log('preview an image');
  await tabTo(page, focusedRowButton, [FX.out_dir + '/' + FX.image_name, 'Preview'], 120, true);
  await press(page, 'Enter');
  await page.waitForFunction(() => { const i = document.querySelector('#preview img'); return i && i.complete && i.naturalWidth > 0; });
  assert.equal(await page.$eval('#preview img', (i) => i.naturalWidth), FX.image_width);

  log('download a file, compare its bytes');
  await tabTo(page, focusedRowButton, [FX.out_dir + '/' + FX.big_name, 'Download'], 120, true);
  await press(page, 'Enter');
  const got = await waitDownload(dl, FX.big_name, FX.big_size);
  assert.equal(sha(got), FX.big_sha256, 'the downloaded file has the snapshot\'s bytes');
  await page.waitForSelector('.transfer.done');
  assert.match(await page.$eval('.transfer.done .progress-text', (n) => n.textContent), /^Saved, /);

  log('download a folder as tar');
  await tabTo(page, focusedRowButton, [FX.out_dir, 'Download (tar)'], 120, true);
  await press(page, 'Enter');
  let tar;
  for (let i = 0; i < 300 && !tar; i++) {
    const f = path.join(dl, 'output.tar');
    if (fs.existsSync(f) && !fs.existsSync(f + '.crdownload') && fs.statSync(f).size > 0) tar = fs.readFileSync(f);
    else await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(tar, 'the folder was downloaded as output.tar');
  const names = tarNames(tar).map((n) => n.replace(/^\.?\/*/, '/').replace(/\/$/, ''));
  for (const a of FX.artifacts) assert.ok(names.some((n) => n.endsWith(a.slice(FX.out_dir.length))), `${a} is in the tar: ${names}`);

  log('a secret is locked for support');
  await openFolders(page, FX.secret_dir);
  const secretRow = await page.$$eval('#tree li.entry', (ls, p) => {
    const li = ls.find((x) => x.dataset.path === p);
    return li && {text: li.querySelector(':scope > .row').textContent,
                  buttons: [...li.querySelectorAll(':scope > .row button')].map((b) => b.textContent)};
  }, FX.secret);
  assert.ok(secretRow, 'the secret is listed');
  assert.match(secretRow.text, /Locked/);
  assert.deepEqual(secretRow.buttons, [], 'support gets no button to read a secret');
  const refused = await page.evaluate(async (snap, p) => {
    const m = await import('/console/net.js');
    try { await m.readSome('/snapshots/' + encodeURIComponent(snap) + '/content', {query: {path: p}}, 100); return 'read'; }
    catch (e) { return e.message; }
  }, FX.snapshot, FX.secret);
  assert.match(refused, /is a secret/, 'reading a secret is refused, in words');
  await shot(page, 'browse');

  log('sign out, by keyboard');
  await tabTo(page, focusedText, 'Sign out', 200, true);
  await press(page, 'Enter');
  await page.waitForSelector('#token');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('cairn.token')), null);

  log('an admin opens the secret with a reason');
  await signIn(page, ADMIN);
  await page.waitForSelector('#q');
  await page.goto(BASE + '/console/#/snapshot/' + encodeURIComponent(FX.snapshot), {waitUntil: 'networkidle0'});
  await page.waitForSelector('#tree li.entry li.entry');
  await openFolders(page, FX.secret_dir);
  await tabTo(page, focusedRowButton, [FX.secret, 'Open with a reason…']);
  await press(page, 'Enter');
  await page.waitForSelector('form.reason input:focus');
  await typeAndEnter(page, FX.reason);
  await page.waitForSelector('#preview pre');
  assert.equal(await page.$eval('#preview pre', (n) => n.textContent), FX.secret_content);
  assert.match(await page.$eval('#preview .warning', (n) => n.textContent), /audit/);
  await shot(page, 'secret-opened');

  log('the reason is in the audit log');
  await tabTo(page, focusedText, 'Audit log', 200, true);
  await press(page, 'Enter');
  await page.waitForSelector('#actor');
  await tabTo(page, focusedIs, '#actor');
  await page.keyboard.type(FX.admin_name);
  await tabTo(page, focusedIs, '#sandbox');
  await typeAndEnter(page, FX.sandbox);
  await page.waitForFunction(() => location.hash.includes('actor='));
  await page.waitForSelector('#audit');
  const audit = await page.$$eval('#audit tbody tr', (t) => t.map((r) => [...r.cells].map((c) => c.textContent)));
  const hit = audit.find((c) => c[7].includes(FX.reason));
  assert.ok(hit, 'the audit shows the reason: ' + JSON.stringify(audit));
  assert.equal(hit[1], FX.admin_name);
  assert.ok(hit[6].includes(FX.secret));
  assert.ok(audit.every((c) => c[1] === FX.admin_name && c[4] === FX.sandbox), 'the filter keeps only that actor and sandbox');
  await shot(page, 'audit');
  await page.goto(BASE + '/console/#/audit?actor=' + encodeURIComponent(FX.support_name), {waitUntil: 'networkidle0'});
  await page.waitForSelector('#audit, #audit-results .empty');
  const other = await page.$$eval('#audit tbody tr', (t) => t.map((r) => r.cells[1].textContent));
  assert.ok(other.length > 0 && other.every((a) => a === FX.support_name), 'the support reads are audited under their actor');
  await page.goto(BASE + '/console/#/audit?from=2001-01-01T00:00&to=2001-01-02T00:00', {waitUntil: 'networkidle0'});
  await waitText(page, '#audit-results', /No audit entries match/);
  await ctx.close();

  log('the share link shows only the artifacts');
  const sdl = path.join(OUT, 'share-downloads');
  fs.mkdirSync(sdl, {recursive: true});
  const sctx = await browser.createBrowserContext({downloadBehavior: {policy: 'allow', downloadPath: sdl}});
  const sp = await newPage(sctx, 'share');
  await sp.goto(BASE + '/console/#/share/' + SHARE, {waitUntil: 'networkidle0'});
  assert.ok(!sp.url().includes(SHARE), 'the share token leaves the address bar: ' + sp.url());
  await sp.waitForSelector('#shared-files');
  const listed = await sp.$$eval('#shared-files tbody tr td.fname', (t) => t.map((x) => x.textContent));
  assert.deepEqual(listed.slice().sort(), FX.artifacts.slice().sort(), 'the share lists exactly the artifacts');
  assert.equal(await sp.$$eval('#nav a', (x) => x.length), 0, 'the share view links nowhere else');
  await tabTo(sp, ([n]) => { const a = document.activeElement; return !!a && a.tagName === 'BUTTON' &&
    a.closest('tr') && a.closest('tr').querySelector('td.fname').textContent.endsWith('/' + n); }, [FX.text_name]);
  await press(sp, 'Enter');
  const sgot = await waitDownload(sdl, FX.text_name, Buffer.byteLength(FX.text_content));
  assert.equal(sgot.toString(), FX.text_content);
  await shot(sp, 'share');
  await sctx.close();

  log('a wrong share token is refused');
  const wctx = await browser.createBrowserContext();
  const wp = await newPage(wctx, 'share-wrong');
  await wp.goto(BASE + '/console/#/share/wrong' + crypto.randomBytes(8).toString('hex'), {waitUntil: 'networkidle0'});
  assert.match(await waitText(wp, '#shared .error', /./), /not valid/);
  await wctx.close();

  if (process.env.REVOKE_CMD) {
    log('a token revoked while in use sends the user back to sign in, saying why');
    const rctx = await browser.createBrowserContext();
    const rp = await newPage(rctx, 'revoked');
    await rp.goto(BASE + '/console/', {waitUntil: 'networkidle0'});
    await signIn(rp, SUPPORT);
    await rp.waitForSelector('#q');
    require('child_process').execSync(process.env.REVOKE_CMD, {stdio: 'inherit'});
    await rp.keyboard.type(FX.tenant);
    await press(rp, 'Enter');
    await rp.waitForSelector('#token');
    assert.match(await waitText(rp, '#signin-error', /./), /refused|expired/);
    assert.equal(await rp.evaluate(() => sessionStorage.getItem('cairn.token')), null, 'the dead token is dropped');
    await rctx.close();
  }

  if (problems.length) throw new Error('the page misbehaved:\n' + problems.join('\n'));
  log('all checks passed');
}

main().catch((e) => {
  console.error(`console.js: FAILED at "${step}": ${e && e.stack || e}`);
  if (problems.length) console.error(problems.join('\n'));
  process.exit(1);
});
