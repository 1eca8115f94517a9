// A matrix-js-sdk client with its Rust crypto (what Element Web uses) for e2ee's
// TestInteropJSSDK. It logs in, joins PEER_ROOM, and answers every message another user sends there
// with "echo: " and the body, encrypted as js-sdk does by itself.
//
// Environment: PEER_HS (homeserver URL), PEER_USER (localpart), PEER_PASSWORD, PEER_ROOM (room
// ID), PEER_TIMEOUT_MS; PEER_NO_ECHO=1 answers nothing; PEER_SEND=N sends N messages "js N" into
// the room after it is ready, one every PEER_SEND_MS (default 50) milliseconds; PEER_DOWNLOAD=1
// downloads and decrypts the file of each decrypted media message, as a client shows it
// (mailbridge's tests read mail this way).
//
// Commands come as JSON lines on stdin:
//   {"cmd":"decrypt","event":{...}}   try to decrypt a raw event (as the server serves it)
//
// It talks to the test in JSON lines on stdout, one object per line with a "type":
//   {"type":"ready","user_id":..,"device_id":..}       joined, device keys on the server
//   {"type":"decrypted","event_id":..,"sender":..,"body":..,"encrypted":true,"msgtype":..,
//    "formatted_body":..,"thread":..(root event ID, if in a thread),"file_b64":..(PEER_DOWNLOAD),
//    "file_error":..}
//   {"type":"sent","event_id":..,"body":..}            the answer, sent
//   {"type":"utd","event_id":..,"reason":..}           could not decrypt (yet; keys may follow)
//   {"type":"decrypt_result","event_id":..,"ok":bool,"body":..,"reason":..}   answer to "decrypt"
//   {"type":"sent_all"}                                after PEER_SEND messages
//   {"type":"fatal","message":..}                      then it exits 1
// Everything else (js-sdk's logs) goes to stderr. It exits when stdin closes.
import "fake-indexeddb/auto"; // js-sdk expects IndexedDB to exist even with an in-memory store

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fatal = (err) => {
  emit({ type: "fatal", message: String(err?.stack ?? err) });
  process.exit(1);
};
for (const level of ["log", "info", "debug", "trace"]) {
  console[level] = (...args) => console.error(...args); // keep stdout for the protocol
}
process.on("unhandledRejection", fatal);
process.on("uncaughtException", fatal);
process.stdin.on("end", () => process.exit(0));
process.stdin.setEncoding("utf8");
let stdinBuf = "";
const commands = [];
let onCommand = null;
process.stdin.on("data", (chunk) => {
  stdinBuf += chunk;
  let nl;
  while ((nl = stdinBuf.indexOf("\n")) >= 0) {
    const line = stdinBuf.slice(0, nl).trim();
    stdinBuf = stdinBuf.slice(nl + 1);
    if (!line) continue;
    const cmd = JSON.parse(line);
    if (onCommand) onCommand(cmd);
    else commands.push(cmd);
  }
});

const { PEER_HS: HS, PEER_USER: USER, PEER_PASSWORD: PASS, PEER_ROOM: ROOM } = process.env;
if (!HS || !USER || !PASS || !ROOM) fatal("PEER_HS, PEER_USER, PEER_PASSWORD and PEER_ROOM must be set");
setTimeout(() => fatal("timed out"), Number(process.env.PEER_TIMEOUT_MS || 120000)).unref();

// Node 18 (Debian 12's) has Web Crypto, but not as a global yet.
globalThis.crypto ??= (await import("node:crypto")).webcrypto;
// Imported only now, so that js-sdk's logger binds the console methods redirected above.
const sdk = await import("matrix-js-sdk");
const { AllDevicesIsolationMode } = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { logger } = await import("matrix-js-sdk/lib/logger.js");
logger.setLevel("info");

const login = await sdk.createClient({ baseUrl: HS }).loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user: USER },
  password: PASS,
  initial_device_display_name: "js-sdk interop peer",
});
const client = sdk.createClient({
  baseUrl: HS,
  userId: login.user_id,
  deviceId: login.device_id,
  accessToken: login.access_token,
});
await client.initRustCrypto({ useIndexedDB: false });
const crypto = client.getCrypto();
// Element's defaults, spelled out: room keys go to every device, verified or not (the samtal
// bot's device is not), and messages from unverified devices are decrypted.
crypto.globalBlacklistUnverifiedDevices = false;
crypto.setDeviceIsolationMode(new AllDevicesIsolationMode(false));

const answered = new Set();
client.on(sdk.MatrixEventEvent.Decrypted, async (ev, err) => {
  if (ev.getRoomId() !== ROOM) return;
  if (err || ev.isDecryptionFailure()) {
    emit({ type: "utd", event_id: ev.getId(), reason: String(err?.message ?? ev.decryptionFailureReason) });
    return;
  }
  if (ev.getSender() === login.user_id || ev.getType() !== "m.room.message" || answered.has(ev.getId())) return;
  answered.add(ev.getId());
  const content = ev.getContent();
  const body = content.body;
  const line = { type: "decrypted", event_id: ev.getId(), sender: ev.getSender(), body, encrypted: ev.isEncrypted(),
    msgtype: content.msgtype, formatted_body: content.formatted_body ?? "" };
  const rel = content["m.relates_to"];
  if (rel?.rel_type === "m.thread") line.thread = rel.event_id;
  if (process.env.PEER_DOWNLOAD === "1" && (content.file || content.url)) {
    try {
      line.file_b64 = Buffer.from(await downloadFile(content)).toString("base64");
    } catch (e) {
      line.file_error = String(e?.message ?? e);
    }
  }
  emit(line);
  if (process.env.PEER_NO_ECHO === "1") return;
  try {
    if (!(await crypto.isEncryptionEnabledInRoom(ROOM))) fatal(`js-sdk does not know that ${ROOM} is encrypted`);
    const answer = "echo: " + body;
    const { event_id } = await client.sendTextMessage(ROOM, answer); // encrypted by js-sdk
    emit({ type: "sent", event_id, body: answer });
  } catch (e) {
    fatal(e);
  }
});

// downloadFile fetches a message's file through the authenticated media API and, for an
// encrypted file (content.file), checks its SHA-256 and decrypts it (AES-256-CTR), as clients do.
const downloadFile = async (content) => {
  const uri = content.file?.url ?? content.url;
  const m = /^mxc:\/\/([^/]+)\/(.+)$/.exec(uri ?? "");
  if (!m) throw new Error(`not an mxc URI: ${uri}`);
  const res = await fetch(`${HS}/_matrix/client/v1/media/download/${m[1]}/${m[2]}`, {
    headers: { Authorization: `Bearer ${login.access_token}` },
  });
  if (!res.ok) throw new Error(`download: HTTP ${res.status}`);
  const data = new Uint8Array(await res.arrayBuffer());
  if (!content.file) return data;
  const unb64 = (s) => Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64");
  const hash = Buffer.from(await globalThis.crypto.subtle.digest("SHA-256", data));
  if (hash.toString("base64").replace(/=+$/, "") !== content.file.hashes.sha256.replace(/=+$/, "")) {
    throw new Error("the file's SHA-256 does not match");
  }
  const key = await globalThis.crypto.subtle.importKey("jwk", content.file.key, { name: "AES-CTR" }, false, ["decrypt"]);
  const plain = await globalThis.crypto.subtle.decrypt({ name: "AES-CTR", counter: unb64(content.file.iv), length: 64 }, key, data);
  return new Uint8Array(plain);
};

const prepared = new Promise((resolve) => {
  const onSync = (state) => {
    if (state === "PREPARED") {
      client.off(sdk.ClientEvent.Sync, onSync);
      resolve();
    }
  };
  client.on(sdk.ClientEvent.Sync, onSync);
});
await client.startClient({ initialSyncLimit: 0 });
await prepared;
await client.joinRoom(ROOM);

// The device keys go up in the background: a peer that looks them up too early would find no
// device to share room keys with.
for (;;) {
  const keys = await client.downloadKeysForUsers([login.user_id]);
  if (keys.device_keys?.[login.user_id]?.[login.device_id]) break;
  await new Promise((r) => setTimeout(r, 200));
}
emit({ type: "ready", user_id: login.user_id, device_id: login.device_id });

// Commands from the test.
const handle = async (cmd) => {
  try {
    if (cmd.cmd === "decrypt") {
      const ev = new sdk.MatrixEvent(cmd.event);
      await client.decryptEventIfNeeded(ev);
      const ok = !ev.isDecryptionFailure() && ev.getType() === "m.room.message";
      emit({ type: "decrypt_result", event_id: ev.getId(), ok, body: ok ? ev.getContent().body : "", reason: ok ? "" : String(ev.decryptionFailureReason ?? ev.getContent().msgtype) });
    }
  } catch (e) {
    emit({ type: "decrypt_result", event_id: cmd.event?.event_id, ok: false, reason: String(e?.message ?? e) });
  }
};
onCommand = handle;
for (const cmd of commands.splice(0)) handle(cmd);

const toSend = Number(process.env.PEER_SEND || 0);
// js-sdk refuses to encrypt until its sync has brought the room's encryption settings.
while (toSend > 0 && !(await crypto.isEncryptionEnabledInRoom(ROOM))) {
  await new Promise((r) => setTimeout(r, 100));
}
const sendWithRetry = async (body) => {
  // Right after joining, js-sdk may not have set up the room's encryptor yet, though the room
  // state says it is encrypted: it refuses, and a moment later it works.
  for (let tries = 0; ; tries++) {
    try {
      return await client.sendTextMessage(ROOM, body);
    } catch (e) {
      if (tries >= 50 || !String(e?.message).includes("unconfigured room")) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
};
for (let i = 1; i <= toSend; i++) {
  const body = `js ${i}`;
  const { event_id } = await sendWithRetry(body);
  emit({ type: "sent", event_id, body });
  await new Promise((r) => setTimeout(r, Number(process.env.PEER_SEND_MS || 50)));
}
if (toSend > 0) emit({ type: "sent_all" });
