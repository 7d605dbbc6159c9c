// A second Matrix client for the tests: matrix-js-sdk with its Rust crypto, driven over JSON lines.
//
// Protocol: one JSON object per line on stdin, `{"id": N, "cmd": "...", ...args}`; exactly one
// answer per request on stdout, `{"id": N, "ok": true, "result": ...}` or
// `{"id": N, "ok": false, "error": "..."}`. Unsolicited notifications `{"event": "...", ...}` are
// written to stdout too ("timeline" for every cleartext or decrypted timeline event,
// "decryption_failure" for every event that failed to decrypt, "sync" for sync state changes).
// Everything else (the SDK's logging, the WASM crypto's tracing) goes to stderr: console.* is
// redirected below, before the SDK is imported. Commands run concurrently; answers may come
// back out of order, matched by id.
//
// The crypto store is in memory (initRustCrypto({useIndexedDB: false})): a fresh process is a
// fresh device. fake-indexeddb is still installed globally in case any other part of the SDK
// reaches for indexedDB under Node.
//
// Commands (args -> result):
//   login {homeserver, user_id, password, device_id?, strict?, timeline_limit?} -> {user_id, device_id, strict, crypto_version}
//       strict: OnlySignedDevicesIsolationMode (MSC4153), else AllDevicesIsolationMode(false).
//       Resolves after the first sync is PREPARED.
//   bootstrap_cross_signing {password} -> {master_key, self_signing_key, user_signing_key, ready,
//       public_keys_on_device, device_signed_by_owner}
//   create_dm {invite, encrypted=true} -> {room_id}    (trusted_private_chat, is_direct, m.direct)
//   room_info {room_id} -> {membership, inviter, is_direct, encryption, power_levels, creator,
//       additional_creators, room_version, join_rule}
//   join {room_id} -> {room_id};  invite {room_id, user_id} -> {};  wait_invite {room_id?} -> {room_id}
//   wait_join {room_id, user_id, timeout_ms} -> {room_id, user_id, membership}
//   send_text {room_id, body, html?, relates_to?} -> {event_id, encrypted};  react {room_id, event_id, key} -> {event_id, encrypted}
//   react_encrypted {room_id, event_id, key} -> {event_id, encrypted}: a reaction sent
//       encrypted, as some clients do (the js-sdk, like Element, sends reactions in clear)
//   wait_message {room_id, sender?, contains?, after_event_id?, include_failures?, timeout_ms}
//   send_many {room_id, bodies, in_flight=4} -> {event_ids}: m.text messages with up to
//       in_flight sends outstanding (the sdk sends one a time otherwise; arrival order may differ)
//   count_messages {room_id, sender, contains, count, timeout_ms} -> {count}: waits until at
//       least `count` decrypted messages from sender contain `contains`
//   forget {room_id} -> {dropped}: empties the room's event buffer (long benchmark runs)
//   wait_reactions {room_id, event_id, sender?, keys, timeout_ms}
//       -> {room_id, event_id, sender, type, body, content, was_encrypted, decryption_failed, decryption_failure}
//   wait_receipt {room_id, event_id, user_id, timeout_ms} -> {event_id, user_id, ts}: once
//       user_id's own (not synthesized) read receipt points at event_id, as a phone shows it
//   messages {room_id} -> [{room_id, event_id, sender, type, wire_type, session_id, content, origin_server_ts,
//       decryption_failure, being_decrypted, status}]
//   decryption_failures {settle_ms=1000} -> [{room_id, event_id, sender, reason}]
//   user_verification {user_id} -> {known, is_verified, is_cross_signing_verified,
//       was_cross_signing_verified, needs_user_approval}
//   device_verification {user_id, device_id} -> {known, is_verified, signed_by_owner,
//       cross_signing_verified, local_verified}
//   devices {user_id} -> [{device_id, display_name, known, ...device_verification fields}]
//   send_voice {room_id, data_b64, mimetype="audio/ogg", duration_ms, body?, filename?,
//       declared_size?, waveform?} -> {event_id, encrypted, mxc, size}: an encrypted attachment
//       (AES-256-CTR, the spec's v2 JSON Web Key) sent as m.audio with the MSC3245 voice flag
//       and the MSC1767 audio block, as Element records a voice message.
//   fetch_attachment {file} -> {data_b64, size}: download an encrypted attachment (the event's
//       `file` object) through authenticated media, check its sha256 and decrypt it.
//   whoami {} -> {user_id, device_id, strict};  stop {} -> {} then exit 0
//   Interactive verification (SAS, in a DM), each flow keyed by its request id (the request's
//   event id); every result carries {request_id, phase, cancelled, code, cancelled_by, error}:
//     request_verification {room_id, user_id} -> {request_id, ...}  (requestVerificationDM)
//     wait_verification_request {user_id?, timeout_ms} -> {request_id, other_user, room_id, ...}
//     accept_verification {request_id}   (sends ready)
//     start_sas {request_id, wait_for_other=false, timeout_ms}: once ready, sends start (or,
//         with wait_for_other, waits for the other side's start), then runs verifier.verify()
//     sas_emoji {request_id, timeout_ms} -> {emoji: [[symbol, name] x7], decimal: [n, n, n]}
//     confirm_sas {request_id, match=true}   (match=false: cancel with m.mismatched_sas)
//     cancel_verification {request_id, code?, reason?}
//     verification_done {request_id, timeout_ms} -> waits for phase done or cancelled
//     wait_user_verified {user_id, timeout_ms} -> user_verification's result once cross-signing
//         verified
// All timeout_ms default to 30000. Every wait is event-driven (plus a 200 ms re-check).
//
// Log level: JSCLIENT_LOG_LEVEL (trace|debug|info|warn|error|silent), default "warn".

import { format } from "node:util";
import { createInterface } from "node:readline";
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";

// ---- stdout belongs to the protocol; everything else goes to stderr --------------------------
const rawStdoutWrite = process.stdout.write.bind(process.stdout);
const LEVELS = { trace: 0, debug: 1, log: 2, info: 2, warn: 3, error: 4, silent: 5 };
const LOG_LEVEL = LEVELS[process.env.JSCLIENT_LOG_LEVEL ?? "warn"] ?? LEVELS.warn;
const toStderr = (...args) => {
    process.stderr.write(format(...args) + "\n");
};
// The SDK's loglevel loggers (children default to DEBUG) and the WASM crypto's tracing all end
// up in console.*: filter by level there, and send what's left to stderr.
for (const name of ["log", "info", "debug", "warn", "error", "trace"]) {
    console[name] = LEVELS[name] >= LOG_LEVEL ? toStderr : () => {};
}
process.stdout.write = (chunk, encoding, cb) => process.stderr.write(chunk, encoding, cb);

function emit(obj) {
    rawStdoutWrite(JSON.stringify(obj) + "\n");
}

// ---- Node 20 polyfills (matrix-js-sdk 43 targets Node >= 22) ---------------------------------
if (typeof Promise.withResolvers !== "function") {
    Promise.withResolvers = function withResolvers() {
        let resolve;
        let reject;
        const promise = new this((res, rej) => {
            resolve = res;
            reject = rej;
        });
        return { promise, resolve, reject };
    };
}

await import("fake-indexeddb/auto");
const sdk = await import("matrix-js-sdk");
const cryptoApi = await import("matrix-js-sdk/lib/crypto-api/index.js");

const {
    createClient,
    ClientEvent,
    RoomEvent,
    RoomStateEvent,
    RoomMemberEvent,
    MatrixEventEvent,
    SyncState,
} = sdk;
const { AllDevicesIsolationMode, OnlySignedDevicesIsolationMode, CrossSigningKey } = cryptoApi;
const { CryptoEvent, VerificationPhase, VerificationRequestEvent, VerifierEvent } = cryptoApi;

// ---- state ------------------------------------------------------------------------------------
let client = null;
let strictMode = false;
/** roomId -> array of MatrixEvent, in the order the client put them in the live timeline. */
const buffers = new Map();
/** MatrixEvent objects already buffered (dedupe; a local echo is updated in place). */
const buffered = new WeakSet();
/** Event ids whose failure / success was already notified, to avoid repeats. */
const notified = new Map();
/** Callbacks re-evaluated whenever something changes. */
const watchers = new Set();

function bump() {
    for (const w of [...watchers]) {
        try {
            w();
        } catch (e) {
            toStderr("watcher error", e);
        }
    }
}

/** Resolve with predicate()'s first truthy value; reject after timeoutMs with `what`. */
function waitFor(predicate, timeoutMs, what) {
    return new Promise((resolve, reject) => {
        let done = false;
        let timer = null;
        let ticker = null;
        const finish = (fn, value) => {
            if (done) return;
            done = true;
            watchers.delete(check);
            clearTimeout(timer);
            clearInterval(ticker);
            fn(value);
        };
        const check = () => {
            if (done) return;
            let value;
            try {
                value = predicate();
            } catch (e) {
                finish(reject, e);
                return;
            }
            if (value instanceof Promise) {
                value.then(
                    (v) => v && finish(resolve, v),
                    (e) => finish(reject, e),
                );
            } else if (value) {
                finish(resolve, value);
            }
        };
        watchers.add(check);
        timer = setTimeout(() => finish(reject, new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
        // Some state (member lists, crypto) changes without an event we listen to: re-check.
        ticker = setInterval(check, 200);
        check();
    });
}

function bufferOf(roomId) {
    let list = buffers.get(roomId);
    if (!list) {
        list = [];
        buffers.set(roomId, list);
    }
    return list;
}

function failureReason(ev) {
    if (!ev.isDecryptionFailure()) return null;
    return ev.decryptionFailureReason ?? "UNKNOWN_ERROR";
}

function serialize(ev) {
    let content;
    try {
        content = ev.getOriginalContent();
    } catch {
        content = ev.getContent();
    }
    return {
        room_id: ev.getRoomId(),
        event_id: ev.getId(),
        sender: ev.getSender(),
        type: ev.getType(),
        wire_type: ev.getWireType(),
        // The Megolm session an encrypted event came in: which audience could read it.
        session_id: ev.isEncrypted() ? (ev.getWireContent().session_id ?? null) : null,
        content,
        origin_server_ts: ev.getTs(),
        decryption_failure: failureReason(ev),
        being_decrypted: ev.isBeingDecrypted() || ev.shouldAttemptDecryption(),
        status: ev.status ?? null,
        redacted: ev.isRedacted(),
    };
}

function isLocalId(id) {
    return !id || id.startsWith("~");
}

function noteEventState(ev) {
    const id = ev.getId();
    if (isLocalId(id)) return;
    if (ev.getWireType() === "m.room.encrypted" && (ev.isBeingDecrypted() || ev.shouldAttemptDecryption())) return;
    const state = ev.isDecryptionFailure() ? `fail:${failureReason(ev)}` : "ok";
    if (notified.get(id) === state) return;
    notified.set(id, state);
    if (state === "ok") {
        emit({ event: "timeline", ...serialize(ev) });
    } else {
        emit({
            event: "decryption_failure",
            room_id: ev.getRoomId(),
            event_id: id,
            sender: ev.getSender(),
            reason: failureReason(ev),
        });
    }
}

function onTimeline(ev, room, toStartOfTimeline, removed, data) {
    if (removed || !room) return;
    if (buffered.has(ev)) return;
    buffered.add(ev);
    const list = bufferOf(room.roomId);
    if (toStartOfTimeline) list.unshift(ev);
    else list.push(ev);
    noteEventState(ev);
    bump();
}

function onDecrypted(ev) {
    noteEventState(ev);
    bump();
}

function room(roomId) {
    return client?.getRoom(roomId) ?? null;
}

function requireClient() {
    if (!client) throw new Error("not logged in: send `login` first");
    return client;
}

function roomEvents(roomId) {
    // De-duplicate by id (a local echo and its remote echo are the same object, but be safe).
    const seen = new Set();
    const out = [];
    for (const ev of bufferOf(roomId)) {
        const id = ev.getId();
        if (!isLocalId(id)) {
            if (seen.has(id)) continue;
            seen.add(id);
        }
        out.push(ev);
    }
    return out;
}

function membershipOf(roomId, userId) {
    const r = room(roomId);
    return r?.getMember(userId)?.membership ?? null;
}

async function waitRoomJoined(roomId, timeoutMs) {
    return waitFor(
        () => {
            const r = room(roomId);
            return r && r.getMyMembership() === "join" ? r : null;
        },
        timeoutMs,
        `room ${roomId} to be joined and known to the client`,
    );
}

// ---- commands ---------------------------------------------------------------------------------
const commands = {};

commands.login = async ({ homeserver, user_id, password, device_id, strict = false, device_name, timeline_limit }) => {
    if (client) throw new Error("already logged in");
    const bare = createClient({ baseUrl: homeserver });
    const localpart = user_id.startsWith("@") ? user_id.slice(1).split(":")[0] : user_id;
    const login = await bare.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: localpart },
        password,
        ...(device_id ? { device_id } : {}),
        initial_device_display_name: device_name ?? "dispatch-matrix test js client",
    });
    bare.stopClient();
    client = createClient({
        baseUrl: homeserver,
        userId: login.user_id,
        deviceId: login.device_id,
        accessToken: login.access_token,
        timelineSupport: false,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    const crypto = client.getCrypto();
    strictMode = !!strict;
    crypto.setDeviceIsolationMode(strictMode ? new OnlySignedDevicesIsolationMode() : new AllDevicesIsolationMode(false));

    client.on(RoomEvent.Timeline, onTimeline);
    client.on(MatrixEventEvent.Decrypted, onDecrypted);
    client.on(RoomMemberEvent.Membership, bump);
    client.on(RoomStateEvent.Members, bump);
    client.on(RoomEvent.MyMembership, bump);
    client.on(RoomEvent.LocalEchoUpdated, bump);
    client.on(RoomEvent.Receipt, bump);
    client.on(ClientEvent.Room, bump);
    client.on(CryptoEvent.VerificationRequestReceived, onVerificationRequest);
    let lastState = null;
    client.on(ClientEvent.Sync, (state, prev, data) => {
        if (state !== lastState) {
            lastState = state;
            emit({ event: "sync", state, error: data?.error ? String(data.error) : null });
        }
        bump();
    });

    const prepared = waitFor(
        () => {
            const s = client.getSyncState();
            if (s === SyncState.Prepared || s === SyncState.Syncing) return true;
            if (s === SyncState.Error) throw new Error(`first sync failed: ${client.getSyncStateData()?.error}`);
            return false;
        },
        60000,
        "the first sync (PREPARED)",
    );
    // timeline_limit: events per room per sync. The homeserver's default (10) leaves a gap the
    // sdk does not fill when more arrive between two syncs: a busy benchmark owner asks more.
    let filter;
    if (timeline_limit) {
        filter = new sdk.Filter(login.user_id);
        filter.setDefinition({ room: { timeline: { limit: timeline_limit } } });
    }
    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: false, ...(filter ? { filter } : {}) });
    await prepared;
    return { user_id: login.user_id, device_id: login.device_id, strict: strictMode, crypto_version: crypto.getVersion() };
};

commands.bootstrap_cross_signing = async ({ password }) => {
    const c = requireClient();
    const crypto = c.getCrypto();
    const userId = c.getSafeUserId();
    await crypto.bootstrapCrossSigning({
        setupNewCrossSigning: true,
        authUploadDeviceSigningKeys: async (makeRequest) => {
            try {
                return await makeRequest(null);
            } catch (e) {
                // 401 with a UIA session: answer with the password.
                const session = e?.data?.session;
                if (e?.httpStatus !== 401 || !session) throw e;
                return await makeRequest({
                    type: "m.login.password",
                    identifier: { type: "m.id.user", user: userId },
                    password,
                    session,
                });
            }
        },
    });
    const status = await crypto.getCrossSigningStatus();
    // The device's new signature reaches the local view a moment after the upload: wait
    // for it, so callers (and the bot's view of this device) see a finished bootstrap.
    let own = null;
    await waitFor(
        async () => {
            own = await crypto.getDeviceVerificationStatus(userId, c.getDeviceId());
            return own?.signedByOwner ? own : null;
        },
        10000,
        "this device to be signed by its new identity",
    );
    return {
        master_key: await crypto.getCrossSigningKeyId(CrossSigningKey.Master),
        self_signing_key: await crypto.getCrossSigningKeyId(CrossSigningKey.SelfSigning),
        user_signing_key: await crypto.getCrossSigningKeyId(CrossSigningKey.UserSigning),
        ready: await crypto.isCrossSigningReady(),
        public_keys_on_device: status.publicKeysOnDevice,
        device_signed_by_owner: own?.signedByOwner ?? false,
    };
};

commands.create_dm = async ({ invite, encrypted = true, timeout_ms = 30000 }) => {
    const c = requireClient();
    const invites = invite ? (Array.isArray(invite) ? invite : [invite]) : [];
    const initial_state = encrypted
        ? [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }]
        : [];
    const { room_id } = await c.createRoom({
        preset: "trusted_private_chat",
        is_direct: true,
        invite: invites,
        initial_state,
    });
    await waitRoomJoined(room_id, timeout_ms);
    if (encrypted) {
        await waitFor(
            async () => await c.getCrypto().isEncryptionEnabledInRoom(room_id),
            timeout_ms,
            `encryption to be enabled in ${room_id}`,
        );
    }
    if (invites.length) {
        // Mark it as a DM in m.direct, as Element does.
        const direct = { ...(c.getAccountData("m.direct")?.getContent() ?? {}) };
        for (const u of invites) direct[u] = [...new Set([...(direct[u] ?? []), room_id])];
        await c.setAccountData("m.direct", direct);
    }
    return { room_id };
};

commands.join = async ({ room_id, timeout_ms = 30000 }) => {
    const c = requireClient();
    await c.joinRoom(room_id);
    await waitRoomJoined(room_id, timeout_ms);
    return { room_id };
};

commands.leave = async ({ room_id }) => {
    await requireClient().leave(room_id);
    return {};
};

commands.kick = async ({ room_id, user_id, reason }) => {
    await requireClient().kick(room_id, user_id, reason);
    return {};
};

commands.invite = async ({ room_id, user_id }) => {
    await requireClient().invite(room_id, user_id);
    return {};
};

commands.wait_invite = async ({ room_id, timeout_ms = 30000 }) => {
    requireClient();
    const r = await waitFor(
        () => {
            for (const rm of client.getRooms()) {
                if (rm.getMyMembership() === "invite" && (!room_id || rm.roomId === room_id)) return rm;
            }
            return null;
        },
        timeout_ms,
        `an invite${room_id ? ` to ${room_id}` : ""}`,
    );
    return { room_id: r.roomId };
};

// What the owner's app shows of a room (an invite included, from its stripped state): the
// inviter, whether it is a DM (is_direct on our invite), its encryption and power levels.
commands.room_info = async ({ room_id }) => {
    const c = requireClient();
    const r = room(room_id);
    if (!r) throw new Error(`room ${room_id} is not known to the client`);
    const state = r.currentState;
    const me = state.getMember(c.getUserId());
    const mine = me?.events?.member;
    const encryption = state.getStateEvents("m.room.encryption", "");
    const power = state.getStateEvents("m.room.power_levels", "");
    const create = state.getStateEvents("m.room.create", "");
    return {
        membership: r.getMyMembership(),
        inviter: mine?.getSender() ?? null,
        is_direct: Boolean(mine?.getContent()?.is_direct),
        encryption: encryption ? encryption.getContent() : null,
        power_levels: power ? power.getContent() : null,
        creator: create ? create.getSender() : null,
        additional_creators: create ? (create.getContent().additional_creators ?? []) : [],
        room_version: create ? (create.getContent().room_version ?? "1") : null,
        join_rule: state.getJoinRule(),
    };
};

commands.wait_join = async ({ room_id, user_id, timeout_ms = 30000 }) => {
    requireClient();
    await waitFor(() => membershipOf(room_id, user_id) === "join", timeout_ms, `${user_id} to join ${room_id}`);
    return { room_id, user_id, membership: "join" };
};

commands.wait_membership = async ({ room_id, user_id, membership, timeout_ms = 30000 }) => {
    requireClient();
    await waitFor(
        () => membershipOf(room_id, user_id) === membership,
        timeout_ms,
        `${user_id} to reach membership ${membership} in ${room_id}`,
    );
    return { room_id, user_id, membership };
};

commands.members = async ({ room_id }) => {
    const r = requireClient().getRoom(room_id);
    if (!r) throw new Error(`unknown room ${room_id}`);
    return r.getMembers().map((m) => ({ user_id: m.userId, membership: m.membership }));
};

async function sendEvent(roomId, type, content, timeoutMs) {
    const c = requireClient();
    const r = await waitRoomJoined(roomId, timeoutMs);
    const encrypted = r.hasEncryptionStateEvent() || (await c.getCrypto().isEncryptionEnabledInRoom(roomId));
    if (encrypted && type !== "m.reaction") {
        await waitFor(
            async () => await c.getCrypto().isEncryptionEnabledInRoom(roomId),
            timeoutMs,
            `the crypto to know ${roomId} is encrypted`,
        );
    }
    const { event_id } = await c.sendEvent(roomId, type, content);
    if (encrypted && type !== "m.reaction") {
        const ev = r.findEventById(event_id) ?? bufferOf(roomId).find((e) => e.getId() === event_id);
        if (ev && ev.getWireType() !== "m.room.encrypted") {
            throw new Error(`event ${event_id} was sent unencrypted into encrypted room ${roomId}`);
        }
    }
    return { event_id, encrypted };
}

commands.send_text = async ({ room_id, body, html, msgtype = "m.text", relates_to, timeout_ms = 30000 }) => {
    const content = { msgtype, body };
    // A thread's message, or a reply, as a client builds it (the test gives the relation).
    if (relates_to) content["m.relates_to"] = relates_to;
    if (html) {
        content.format = "org.matrix.custom.html";
        content.formatted_body = html;
    }
    return sendEvent(room_id, "m.room.message", content, timeout_ms);
};

commands.send_many = async ({ room_id, bodies, in_flight = 4, timeout_ms = 30000 }) => {
    const ids = new Array(bodies.length);
    let next = 0;
    // The sdk's scheduler queues a room's messages and sends one at a time; for this command
    // only, messages go out concurrently (so their order in the room may differ).
    const scheduler = requireClient().scheduler;
    const queued = scheduler?.queueAlgorithm;
    if (scheduler) scheduler.queueAlgorithm = () => null;
    const lane = async () => {
        while (next < bodies.length) {
            const i = next++;
            const sent = await sendEvent(room_id, "m.room.message", { msgtype: "m.text", body: bodies[i] }, timeout_ms);
            ids[i] = sent.event_id;
        }
    };
    try {
        await Promise.all(Array.from({ length: Math.max(1, in_flight) }, lane));
    } finally {
        if (scheduler) scheduler.queueAlgorithm = queued;
    }
    return { event_ids: ids };
};

commands.count_messages = async ({ room_id, sender, contains, count, timeout_ms = 30000 }) => {
    requireClient();
    // Only events that arrived since the last check are read: O(new) per wake-up.
    const seen = new Set();
    let matched = 0;
    let from = 0;
    return await waitFor(
        () => {
            const list = bufferOf(room_id);
            let pending = from;
            for (let i = from; i < list.length; i++) {
                const ev = list[i];
                const id = ev.getId();
                if (isLocalId(id) || seen.has(id) || ev.getSender() !== sender) {
                    if (pending === i) pending = i + 1;
                    continue;
                }
                // Not readable yet (a room key that comes after its message is tried again
                // when it arrives): read again later.
                if (ev.isBeingDecrypted() || ev.shouldAttemptDecryption() || ev.isDecryptionFailure()) continue;
                if (pending === i) pending = i + 1;
                seen.add(id);
                const body = ev.getOriginalContent()?.body;
                if (ev.getType() === "m.room.message" && typeof body === "string" && body.includes(contains)) {
                    matched++;
                }
            }
            from = pending;
            return matched >= count ? { count: matched } : null;
        },
        timeout_ms,
        `${count} messages from ${sender} containing ${JSON.stringify(contains)}`,
    );
};

commands.forget = async ({ room_id }) => {
    const list = bufferOf(room_id);
    const dropped = list.length;
    list.length = 0;
    return { dropped };
};

commands.send_event = async ({ room_id, type, content, encrypted = true, timeout_ms = 30000 }) => {
    if (encrypted) return sendEvent(room_id, type, content, timeout_ms);
    // In plaintext into an encrypted room, as a forged or careless client would.
    const c = requireClient();
    await waitRoomJoined(room_id, timeout_ms);
    const original = c.shouldEncryptEventForRoom.bind(c);
    c.shouldEncryptEventForRoom = async (ev, r) => (ev.getType() === type ? false : original(ev, r));
    try {
        const { event_id } = await c.sendEvent(room_id, type, content);
        return { event_id, encrypted: false };
    } finally {
        c.shouldEncryptEventForRoom = original;
    }
};

commands.redact = async ({ room_id, event_id, reason }) => {
    const { event_id: redaction } = await requireClient().redactEvent(
        room_id, event_id, undefined, reason ? { reason } : undefined,
    );
    return { event_id: redaction };
};

commands.react = async ({ room_id, event_id, key, timeout_ms = 30000 }) => {
    const content = { "m.relates_to": { rel_type: "m.annotation", event_id, key } };
    return sendEvent(room_id, "m.reaction", content, timeout_ms);
};

// ---- encrypted attachments (the spec's "Sending encrypted attachments") ----------------------
const unpadded = (buf) => buf.toString("base64").replace(/=+$/, "");
const urlsafe = (buf) => unpadded(buf).replace(/\+/g, "-").replace(/\//g, "_");

commands.send_voice = async ({
    room_id,
    data_b64,
    mimetype = "audio/ogg",
    duration_ms,
    body = "Voice message",
    filename = "Voice message.ogg",
    declared_size,
    waveform,
    timeout_ms = 30000,
}) => {
    const c = requireClient();
    const plain = Buffer.from(data_b64, "base64");
    const key = randomBytes(32);
    // The counter half of the IV starts at zero, as the spec asks.
    const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
    const cipher = createCipheriv("aes-256-ctr", key, iv);
    const ciphertext = Buffer.concat([cipher.update(plain), cipher.final()]);
    const sha256 = createHash("sha256").update(ciphertext).digest();
    const { content_uri } = await c.uploadContent(ciphertext, {
        type: "application/octet-stream",
        name: filename,
        includeFilename: false,
    });
    const content = {
        msgtype: "m.audio",
        body,
        filename,
        info: { mimetype, size: declared_size ?? plain.length, duration: duration_ms },
        file: {
            v: "v2",
            url: content_uri,
            mimetype,
            key: { kty: "oct", key_ops: ["encrypt", "decrypt"], alg: "A256CTR", k: urlsafe(key), ext: true },
            iv: unpadded(iv),
            hashes: { sha256: unpadded(sha256) },
        },
        "org.matrix.msc1767.text": body,
        "org.matrix.msc1767.audio": { duration: duration_ms, waveform: waveform ?? [] },
        "org.matrix.msc3245.voice": {},
    };
    const sent = await sendEvent(room_id, "m.room.message", content, timeout_ms);
    return { ...sent, mxc: content_uri, size: plain.length };
};

commands.fetch_attachment = async ({ file }) => {
    const c = requireClient();
    const url = c.mxcUrlToHttp(file.url, undefined, undefined, undefined, false, true, true);
    const res = await fetch(url, { headers: { Authorization: `Bearer ${c.getAccessToken()}` } });
    if (!res.ok) throw new Error(`download of ${file.url} failed: HTTP ${res.status}`);
    const ciphertext = Buffer.from(await res.arrayBuffer());
    const digest = unpadded(createHash("sha256").update(ciphertext).digest());
    if (digest !== String(file.hashes?.sha256 ?? "").replace(/=+$/, "")) {
        throw new Error(`sha256 of ${file.url} does not match the event's`);
    }
    const key = Buffer.from(file.key.k.replace(/-/g, "+").replace(/_/g, "/"), "base64");
    const decipher = createDecipheriv("aes-256-ctr", key, Buffer.from(file.iv, "base64"));
    const plain = Buffer.concat([decipher.update(ciphertext), decipher.final()]);
    return { data_b64: plain.toString("base64"), size: plain.length };
};

commands.react_encrypted = async ({ room_id, event_id, key, timeout_ms = 30000 }) => {
    const c = requireClient();
    const room = await waitRoomJoined(room_id, timeout_ms);
    const original = c.shouldEncryptEventForRoom.bind(c);
    // The SDK exempts reactions from encryption; lift that for this one event.
    c.shouldEncryptEventForRoom = async (ev, r) =>
        ev.getType() === "m.reaction" ? !ev.isEncrypted() && room.hasEncryptionStateEvent() : original(ev, r);
    try {
        const content = { "m.relates_to": { rel_type: "m.annotation", event_id, key } };
        const { event_id: sent } = await c.sendEvent(room_id, "m.reaction", content);
        return { event_id: sent, encrypted: room.hasEncryptionStateEvent() };
    } finally {
        c.shouldEncryptEventForRoom = original;
    }
};

function messageResult(ev) {
    const content = serialize(ev).content ?? {};
    return {
        room_id: ev.getRoomId(),
        event_id: ev.getId(),
        sender: ev.getSender(),
        type: ev.getType(),
        body: content.body ?? null,
        content,
        was_encrypted: ev.getWireType() === "m.room.encrypted",
        decryption_failed: ev.isDecryptionFailure(),
        decryption_failure: failureReason(ev),
    };
}

commands.wait_message = async ({
    room_id,
    sender,
    contains,
    after_event_id,
    include_failures = false,
    type = "m.room.message",
    timeout_ms = 30000,
}) => {
    requireClient();
    const found = await waitFor(
        () => {
            const list = roomEvents(room_id);
            let start = 0;
            if (after_event_id) {
                const i = list.findIndex((e) => e.getId() === after_event_id);
                if (i < 0) return null; // that event hasn't arrived yet
                start = i + 1;
            }
            for (const ev of list.slice(start)) {
                if (isLocalId(ev.getId())) continue;
                if (sender && ev.getSender() !== sender) continue;
                if (ev.isBeingDecrypted() || ev.shouldAttemptDecryption()) continue;
                if (ev.isDecryptionFailure()) {
                    if (include_failures) return ev;
                    continue;
                }
                if (ev.getType() !== type) continue;
                const original = ev.getOriginalContent() ?? {};
                const body = original.body ?? original["org.matrix.msc1767.text"];
                if (contains && !(typeof body === "string" && body.includes(contains))) continue;
                return ev;
            }
            return null;
        },
        timeout_ms,
        `a message in ${room_id}${sender ? ` from ${sender}` : ""}${contains ? ` containing ${JSON.stringify(contains)}` : ""}`,
    );
    return messageResult(found);
};

// Wait until the reactions `sender` shows on `event_id` (not redacted, decrypted) are
// exactly `keys` (in any order); returns them.
commands.wait_receipt = async ({ room_id, event_id, user_id, timeout_ms = 30000 }) => {
    requireClient();
    return await waitFor(
        () => {
            const room = client.getRoom(room_id);
            const receipt = room?.getReadReceiptForUserId(user_id, true);
            if (receipt?.eventId !== event_id) return null;
            return { event_id, user_id, ts: receipt.data?.ts ?? null };
        },
        timeout_ms,
        `${user_id}'s read receipt on ${event_id}`,
    );
};

commands.wait_reactions = async ({ room_id, event_id, sender, keys, timeout_ms = 30000 }) => {
    requireClient();
    const wanted = [...keys].sort().join(" ");
    let last = [];
    const found = await waitFor(
        () => {
            const shown = [];
            for (const ev of roomEvents(room_id)) {
                if (isLocalId(ev.getId()) || ev.isRedacted()) continue;
                if (sender && ev.getSender() !== sender) continue;
                if (ev.isBeingDecrypted() || ev.shouldAttemptDecryption()) return null;
                if (ev.getType() !== "m.reaction") continue;
                const rel = ev.getContent()?.["m.relates_to"];
                if (rel?.event_id !== event_id) continue;
                shown.push(ev);
            }
            last = shown.map((ev) => ev.getContent()["m.relates_to"].key);
            return [...last].sort().join(" ") === wanted ? shown : null;
        },
        timeout_ms,
        `reactions ${JSON.stringify(keys)} on ${event_id} (showing ${JSON.stringify(last)})`,
    );
    return found.map(messageResult);
};

commands.messages = async ({ room_id }) => {
    requireClient();
    return roomEvents(room_id).map(serialize);
};

function currentFailures() {
    const out = [];
    for (const [roomId] of buffers) {
        for (const ev of roomEvents(roomId)) {
            if (ev.isDecryptionFailure()) {
                out.push({ room_id: roomId, event_id: ev.getId(), sender: ev.getSender(), reason: failureReason(ev) });
            }
        }
    }
    return out;
}

commands.decryption_failures = async ({ settle_ms = 1000, timeout_ms = 10000 }) => {
    requireClient();
    // Let decryptions in flight finish...
    await waitFor(
        () => {
            for (const [roomId] of buffers) {
                for (const ev of roomEvents(roomId)) if (ev.isBeingDecrypted()) return false;
            }
            return true;
        },
        timeout_ms,
        "decryptions in flight to finish",
    );
    // ...then give the SDK up to settle_ms to retry failures (it does when keys arrive);
    // return at once when there are none.
    try {
        await waitFor(() => currentFailures().length === 0, settle_ms, "failures to clear");
    } catch {
        // still failing: report them
    }
    return currentFailures();
};

commands.user_verification = async ({ user_id }) => {
    const c = requireClient();
    const crypto = c.getCrypto();
    await crypto.getUserDeviceInfo([user_id], true);
    const s = await crypto.getUserVerificationStatus(user_id);
    return {
        user_id,
        known: s.known,
        is_verified: s.isVerified(),
        is_cross_signing_verified: s.isCrossSigningVerified(),
        was_cross_signing_verified: s.wasCrossSigningVerified(),
        needs_user_approval: s.needsUserApproval,
    };
};

function deviceStatus(s) {
    if (!s) return { known: false };
    return {
        known: true,
        is_verified: s.isVerified(),
        signed_by_owner: s.signedByOwner,
        cross_signing_verified: s.crossSigningVerified,
        local_verified: s.localVerified,
    };
}

commands.device_verification = async ({ user_id, device_id }) => {
    const c = requireClient();
    const crypto = c.getCrypto();
    await crypto.getUserDeviceInfo([user_id], true);
    const s = await crypto.getDeviceVerificationStatus(user_id, device_id);
    return { user_id, device_id, ...deviceStatus(s) };
};

/** Sign another device of this client's own account with its self-signing key (as Element
 * does when one session verifies another): the device is cross-signed from then on. */
commands.cross_sign_device = async ({ device_id, timeout_ms = 30000 }) => {
    const c = requireClient();
    const crypto = c.getCrypto();
    const userId = c.getSafeUserId();
    // The device must be in this client's view of its own device list first.
    await waitFor(
        async () => (await crypto.getUserDeviceInfo([userId], true)).get(userId)?.has(device_id),
        timeout_ms,
        `device ${device_id} in ${userId}'s device list`,
    );
    await crypto.crossSignDevice(device_id);
    const signed = await waitFor(
        async () => {
            const s = await crypto.getDeviceVerificationStatus(userId, device_id);
            return s?.signedByOwner ? s : null;
        },
        timeout_ms,
        `device ${device_id} to be signed by its owner`,
    );
    return { user_id: userId, device_id, ...deviceStatus(signed) };
};

commands.devices = async ({ user_id }) => {
    const c = requireClient();
    const crypto = c.getCrypto();
    const map = await crypto.getUserDeviceInfo([user_id], true);
    const out = [];
    for (const [deviceId, dev] of map.get(user_id) ?? new Map()) {
        const s = await crypto.getDeviceVerificationStatus(user_id, deviceId);
        out.push({ device_id: deviceId, display_name: dev.displayName ?? null, ...deviceStatus(s) });
    }
    return out;
};

// ---- interactive verification (SAS) ------------------------------------------------------------
/** request id -> {request, verifier, verified, error}: every flow this client took part in. */
const verifications = new Map();
/** Requests other users sent us that no test has picked up yet. */
const incomingRequests = [];

const PHASES = {
    [VerificationPhase.Unsent]: "unsent",
    [VerificationPhase.Requested]: "requested",
    [VerificationPhase.Ready]: "ready",
    [VerificationPhase.Started]: "started",
    [VerificationPhase.Cancelled]: "cancelled",
    [VerificationPhase.Done]: "done",
};

function trackRequest(request) {
    const id = request.transactionId;
    if (!verifications.has(id)) {
        verifications.set(id, { request, verifier: null, verified: false, error: null });
        request.on(VerificationRequestEvent.Change, bump);
    }
    return verifications.get(id);
}

function onVerificationRequest(request) {
    trackRequest(request);
    incomingRequests.push(request);
    bump();
}

function flowOf(request_id) {
    const entry = verifications.get(request_id);
    if (!entry) throw new Error(`unknown verification request ${request_id}`);
    return entry;
}

function flowState(entry) {
    const { request } = entry;
    const phase = PHASES[request.phase] ?? String(request.phase);
    return {
        request_id: request.transactionId,
        phase,
        cancelled: request.phase === VerificationPhase.Cancelled,
        code: request.cancellationCode ?? null,
        cancelled_by: request.cancellingUserId ?? null,
        verified: entry.verified,
        error: entry.error,
    };
}

function failIfCancelled(entry) {
    if (entry.request.phase === VerificationPhase.Cancelled) {
        throw new Error(`verification cancelled: ${JSON.stringify(flowState(entry))}`);
    }
}

commands.request_verification = async ({ room_id, user_id }) => {
    const crypto = requireClient().getCrypto();
    await crypto.getUserDeviceInfo([user_id], true);
    const request = await crypto.requestVerificationDM(user_id, room_id);
    return flowState(trackRequest(request));
};

commands.wait_verification_request = async ({ user_id, timeout_ms = 30000 }) => {
    requireClient();
    const request = await waitFor(
        () => {
            const i = incomingRequests.findIndex((r) => !user_id || r.otherUserId === user_id);
            return i >= 0 ? incomingRequests.splice(i, 1)[0] : null;
        },
        timeout_ms,
        `a verification request${user_id ? ` from ${user_id}` : ""}`,
    );
    return {
        ...flowState(trackRequest(request)),
        other_user: request.otherUserId,
        room_id: request.roomId ?? null,
    };
};

commands.accept_verification = async ({ request_id }) => {
    const entry = flowOf(request_id);
    await entry.request.accept();
    return flowState(entry);
};

commands.start_sas = async ({ request_id, wait_for_other = false, timeout_ms = 30000 }) => {
    const entry = flowOf(request_id);
    const { request } = entry;
    let verifier;
    if (wait_for_other) {
        verifier = await waitFor(
            () => {
                failIfCancelled(entry);
                return request.verifier ?? null;
            },
            timeout_ms,
            "the other side to start SAS",
        );
    } else {
        await waitFor(
            () => {
                failIfCancelled(entry);
                return request.phase === VerificationPhase.Ready || request.phase === VerificationPhase.Started;
            },
            timeout_ms,
            "the request to be ready",
        );
        verifier = request.verifier ?? (await request.startVerification("m.sas.v1"));
    }
    entry.verifier = verifier;
    verifier.on(VerifierEvent.ShowSas, bump);
    verifier.on(VerifierEvent.Cancel, bump);
    // Sends accept when the other side started; resolves once the flow is done.
    verifier.verify().then(
        () => {
            entry.verified = true;
            bump();
        },
        (e) => {
            entry.error = errorText(e);
            bump();
        },
    );
    return flowState(entry);
};

commands.sas_emoji = async ({ request_id, timeout_ms = 30000 }) => {
    const entry = flowOf(request_id);
    const callbacks = await waitFor(
        () => {
            failIfCancelled(entry);
            return entry.verifier?.getShowSasCallbacks() ?? null;
        },
        timeout_ms,
        "the short authentication string",
    );
    return { ...flowState(entry), emoji: callbacks.sas.emoji ?? null, decimal: callbacks.sas.decimal ?? null };
};

commands.confirm_sas = async ({ request_id, match = true }) => {
    const entry = flowOf(request_id);
    const callbacks = entry.verifier?.getShowSasCallbacks();
    if (!callbacks) throw new Error("no short authentication string is shown yet");
    if (match) await callbacks.confirm();
    else callbacks.mismatch();
    return flowState(entry);
};

commands.cancel_verification = async ({ request_id, code, reason }) => {
    const entry = flowOf(request_id);
    await entry.request.cancel({ code, reason });
    return flowState(entry);
};

commands.verification_done = async ({ request_id, timeout_ms = 30000 }) => {
    const entry = flowOf(request_id);
    await waitFor(
        () => [VerificationPhase.Done, VerificationPhase.Cancelled].includes(entry.request.phase),
        timeout_ms,
        "the verification to end",
    );
    return flowState(entry);
};

commands.wait_user_verified = async ({ user_id, timeout_ms = 30000 }) => {
    const crypto = requireClient().getCrypto();
    const status = await waitFor(
        async () => {
            const s = await crypto.getUserVerificationStatus(user_id);
            return s.isCrossSigningVerified() ? s : null;
        },
        timeout_ms,
        `${user_id} to be cross-signing verified`,
    );
    return { user_id, is_verified: status.isVerified(), is_cross_signing_verified: true };
};

commands.whoami = async () => {
    const c = requireClient();
    return { user_id: c.getSafeUserId(), device_id: c.getDeviceId(), strict: strictMode };
};

commands.stop = async () => {
    if (client) {
        client.stopClient(); // also stops the Rust crypto
    }
    return {};
};

// ---- main loop --------------------------------------------------------------------------------
function errorText(e) {
    if (!e) return "unknown error";
    if (e.name === "MatrixError" || e.errcode) {
        return `${e.errcode ?? e.name}: ${e.message ?? e.data?.error ?? ""} (HTTP ${e.httpStatus ?? "?"})`;
    }
    return e.message !== undefined ? `${e.name ?? "Error"}: ${e.message}` : String(e);
}

let stopping = false;
const inFlight = new Set();

async function handle(line) {
    let req;
    try {
        req = JSON.parse(line);
    } catch (e) {
        emit({ id: null, ok: false, error: `bad JSON: ${e.message}` });
        return;
    }
    const { id, cmd, ...args } = req;
    const fn = Object.hasOwn(commands, cmd) ? commands[cmd] : null;
    if (!fn) {
        emit({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` });
        return;
    }
    try {
        const result = await fn(args);
        emit({ id, ok: true, result: result ?? null });
    } catch (e) {
        emit({ id, ok: false, error: errorText(e), stack: e?.stack ? String(e.stack) : null });
    }
    if (cmd === "stop") {
        stopping = true;
        process.exit(0);
    }
}

process.on("unhandledRejection", (e) => toStderr("unhandled rejection:", e));
process.on("uncaughtException", (e) => toStderr("uncaught exception:", e));

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
    if (!line.trim()) return;
    const p = handle(line).catch((e) => toStderr("handler crashed:", e));
    inFlight.add(p);
    p.finally(() => inFlight.delete(p));
});
rl.on("close", async () => {
    // stdin closed: the parent went away. Finish what's running, then leave.
    if (stopping) return;
    await Promise.allSettled([...inFlight]);
    try {
        client?.stopClient();
    } catch {
        // ignore
    }
    process.exit(0);
});
emit({ event: "ready", pid: process.pid, node: process.version });
