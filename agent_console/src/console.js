// The agent console: a JsSIP softphone registered to the PBX over WSS, and the caller card for
// each transferred call (pushed by the server when the transfer starts, then fetched with the
// X-Call-Context token the INVITE carries).
import JsSIP from 'jssip';

const $ = (id) => document.getElementById(id);
const SAVED_KEY = 'agentConsole.sip';
const RING_MS = [400, 200, 400, 2000]; // on, off, on, off

// --- diagnostics: every state change, in order (support can read it; the e2e tests assert on it)
const events = [];
function note(type, data) {
  events.push(Object.assign({ type, t: Math.round(performance.now()) }, data || {}));
  if (events.length > 500) events.shift();
}

// --- the console API ---------------------------------------------------------------------------
let csrf = '';
async function api(path, { method = 'GET', body } = {}) {
  const headers = { 'X-Requested-With': 'agent-console' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (csrf) headers['X-CSRF-Token'] = csrf;
  const response = await fetch('/api/console' + path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.error || 'HTTP ' + response.status);
    error.status = response.status;
    throw error;
  }
  return data;
}

// --- signing in to the console ---------------------------------------------------------------
let profile = null;

function showSignedIn(me) {
  profile = me;
  csrf = me.csrf;
  $('who').textContent = `${me.agent.name} · ${me.tenant.name}`;
  $('who').hidden = false;
  $('logout').hidden = false;
  $('signin').hidden = true;
  $('desk').hidden = false;
  fillPhoneForm();
  openEvents();
}

function showSignedOut() {
  profile = null;
  csrf = '';
  $('who').hidden = true;
  $('logout').hidden = true;
  $('desk').hidden = true;
  $('signin').hidden = false;
  $('email').focus();
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('signin-error').textContent = '';
  $('signin-button').disabled = true;
  try {
    const me = await api('/login', { method: 'POST', body: { email: $('email').value, password: $('password').value } });
    $('password').value = '';
    showSignedIn(me);
    note('signed-in', { agent: me.agent.email });
    $('sip-wss').focus();
  } catch (err) {
    $('signin-error').textContent = err.message;
    note('signin-failed', { status: err.status });
  } finally {
    $('signin-button').disabled = false;
  }
});

$('logout').addEventListener('click', async () => {
  stopPhone();
  closeEvents();
  try { await api('/logout', { method: 'POST' }); } catch (err) { /* the session may be gone */ }
  showSignedOut();
});

// --- phone settings: in memory, or in localStorage only when the agent asks for it ------------
function savedSettings() {
  try { return JSON.parse(localStorage.getItem(SAVED_KEY) || 'null'); } catch (e) { return null; }
}

function fillPhoneForm() {
  const saved = savedSettings();
  const sip = (profile && profile.sip) || {};
  $('sip-wss').value = (saved && saved.wss) || sip.wss_url || 'wss://pbx:7443';
  $('sip-domain').value = (saved && saved.domain) || sip.domain || 'pbx';
  $('sip-extension').value = (saved && saved.extension) || sip.extension || '2001';
  $('sip-password').value = (saved && saved.password) || '';
  $('sip-name').value = (saved && saved.displayName) || (profile ? profile.agent.name : '');
  $('sip-remember').checked = !!saved;
}

function phoneSettings() {
  return {
    wss: $('sip-wss').value.trim(),
    domain: $('sip-domain').value.trim(),
    extension: $('sip-extension').value.trim(),
    password: $('sip-password').value,
    displayName: $('sip-name').value.trim(),
  };
}

$('sip-remember').addEventListener('change', () => {
  if (!$('sip-remember').checked) localStorage.removeItem(SAVED_KEY);
});

// --- registration ------------------------------------------------------------------------------
let ua = null;
let stopping = false;

function setReg(state, text) {
  $('reg').textContent = text;
  $('reg-dot').className = 'dot ' + state;
  $('connect').disabled = state === 'registered' || state === 'connecting';
  $('disconnect').disabled = !ua;
}

$('sip-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const cfg = phoneSettings();
  if (!/^wss?:\/\//.test(cfg.wss) || !cfg.domain || !cfg.extension || !cfg.password) {
    setReg('failed', 'Fill in the PBX address, domain, extension and SIP password.');
    return;
  }
  if ($('sip-remember').checked) localStorage.setItem(SAVED_KEY, JSON.stringify(cfg));
  else localStorage.removeItem(SAVED_KEY);
  unlockAudio();
  startPhone(cfg);
});

$('disconnect').addEventListener('click', () => stopPhone());

function startPhone(cfg) {
  stopPhone();
  stopping = false;
  let socket;
  try {
    socket = new JsSIP.WebSocketInterface(cfg.wss);
  } catch (err) {
    setReg('failed', 'That PBX address is not a WebSocket URL.');
    return;
  }
  ua = new JsSIP.UA({
    sockets: [socket],
    uri: `sip:${cfg.extension}@${cfg.domain}`,
    authorization_user: cfg.extension,
    password: cfg.password,
    display_name: cfg.displayName || undefined,
    register: true,
    register_expires: 300,
    session_timers: false,
    connection_recovery_min_interval: 2,
    connection_recovery_max_interval: 30,
    user_agent: 'agent-console (JsSIP ' + JsSIP.version + ')',
  });
  const me = ua;
  setReg('connecting', 'Connecting…');
  ua.on('connected', (e) => { note('ws-connected', { url: e.socket.url }); });
  ua.on('disconnected', (e) => {
    note('ws-disconnected', { error: !!e.error });
    if (ua === me && !stopping) setReg('connecting', 'Connection lost, reconnecting…');
  });
  ua.on('registered', (e) => {
    note('registered', { status: e.response.status_code });
    setReg('registered', `Registered as ${cfg.extension}, ready for calls`);
  });
  ua.on('unregistered', () => {
    note('unregistered');
    if (ua === me && !stopping) setReg('connecting', 'Registration lapsed, retrying…');
  });
  ua.on('registrationFailed', (e) => {
    note('registration-failed', { cause: e.cause, status: e.response ? e.response.status_code : null });
    const why = e.cause === JsSIP.C.causes.AUTHENTICATION_ERROR
      ? 'wrong extension or SIP password' : e.cause;
    setReg('failed', `Registration failed: ${why}`);
    if (e.cause === JsSIP.C.causes.AUTHENTICATION_ERROR) {
      stopping = true;
      ua.stop(); // retrying a wrong password only locks the extension at the PBX
      ua = null;
      setReg('failed', `Registration failed: ${why}`);
      $('sip-password').focus();
    }
  });
  ua.on('newRTCSession', (e) => { if (e.originator === 'remote') incoming(e.session, e.request); });
  ua.start();
}

function stopPhone() {
  if (!ua) return;
  stopping = true;
  const old = ua;
  ua = null;
  if (session && !session.isEnded()) session.terminate();
  try { old.unregister({ all: false }); } catch (e) { /* not registered */ }
  old.stop();
  note('stopped');
  setReg('', 'Not connected');
}

window.addEventListener('beforeunload', () => { if (ua) { ua.unregister(); ua.stop(); } });

// --- caller cards pushed by the server -----------------------------------------------------------
const cards = new Map(); // token -> card
let eventsSocket = null;
let eventsRetry = 1000;

function openEvents() {
  closeEvents();
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/console/events';
  const ws = new WebSocket(url);
  eventsSocket = ws;
  ws.onopen = () => { eventsRetry = 1000; note('events-open'); };
  ws.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch (e) { return; }
    if (msg.type === 'transfer' && msg.token && msg.card) {
      cards.set(msg.token, msg.card);
      note('card-pushed', { token: msg.token, name: msg.card.caller.name });
      if (!session || session.isEnded()) {
        $('prealert').textContent = `Transfer on its way: ${msg.card.caller.name} (${msg.card.reason})`;
        $('prealert').hidden = false;
      }
    } else if (msg.type === 'transfer_ended') {
      note('transfer-ended', { token: msg.token, outcome: msg.outcome });
      if (!session || session.isEnded()) $('prealert').hidden = true;
    }
  };
  ws.onclose = () => {
    note('events-closed');
    if (eventsSocket === ws && profile) { // reconnect while signed in
      setTimeout(() => { if (eventsSocket === ws && profile) openEvents(); }, eventsRetry);
      eventsRetry = Math.min(eventsRetry * 2, 30000);
    }
  };
}

function closeEvents() {
  const ws = eventsSocket;
  eventsSocket = null;
  if (ws) ws.close();
}

// --- the card ----------------------------------------------------------------------------------
function text(id, value) { $(id).textContent = value || '-'; }

function renderCard(card, source) {
  $('card').hidden = false;
  text('card-name', card.caller.name);
  text('card-phone', card.caller.phone);
  text('card-account', card.caller.account);
  text('card-tenant', card.tenant.name);
  text('card-reason', card.reason);
  $('card-source').textContent = source;
  const convo = $('card-conversation');
  convo.replaceChildren();
  for (const line of card.conversation || []) {
    const li = document.createElement('li');
    li.className = line.speaker;
    const who = document.createElement('span');
    who.className = 'speaker';
    who.textContent = line.speaker === 'caller' ? 'Caller:' : 'Assistant:';
    li.append(who, document.createTextNode(line.text + (line.interrupted ? ' (interrupted)' : '')));
    convo.append(li);
  }
  if (!convo.children.length) convo.append(Object.assign(document.createElement('li'), { textContent: 'Nothing said yet.' }));
  const todos = $('card-todos');
  todos.replaceChildren();
  for (const todo of card.open_todos || []) {
    const due = todo.due_at ? ` (due ${new Date(todo.due_at).toLocaleDateString()})` : '';
    todos.append(Object.assign(document.createElement('li'), { textContent: `${todo.title} [${todo.priority}]${due}` }));
  }
  if (!todos.children.length) todos.append(Object.assign(document.createElement('li'), { textContent: 'None.' }));
}

function renderBareCard(info) {
  renderCard({
    caller: { name: info.displayName || info.callerId || 'Unknown caller', phone: info.callerId, account: '' },
    tenant: { name: '' }, reason: '', conversation: [], open_todos: [],
  }, info.context ? 'Caller details unavailable' : 'No caller details (not a transferred call)');
}

// --- the call ----------------------------------------------------------------------------------
let session = null;
let current = null; // the call log entry of the current call

function setCallState(textValue, ringing) {
  $('call-state').textContent = textValue;
  $('call-state').classList.toggle('ringing', !!ringing);
}

function buttons() {
  const s = session;
  const live = !!s && !s.isEnded();
  const established = live && s.isEstablished();
  const ringing = live && !established && s.direction === 'incoming' && !current.answering;
  const held = established && s.isOnHold().local;
  const muted = established && s.isMuted().audio;
  $('answer').disabled = !ringing;
  $('reject').disabled = !ringing;
  $('mute').disabled = !established;
  $('hold').disabled = !established;
  $('hangup').disabled = !live || ringing; // while ringing, Reject says what it does
  $('transfer').disabled = !established;
  $('hold').textContent = held ? 'Resume' : 'Hold';
  $('hold').setAttribute('aria-pressed', String(held));
  $('mute').textContent = muted ? 'Unmute' : 'Mute';
  $('mute').setAttribute('aria-pressed', String(muted));
}

// Header values ride URL-encoded in Twilio's <Sip> URI; decode any that arrive still encoded.
function decoded(value) {
  try { return value ? decodeURIComponent(value) : ''; } catch (e) { return value; }
}

function incoming(s, request) {
  if (session && !session.isEnded()) { // one call at a time
    s.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
    note('busy-rejected');
    return;
  }
  session = s;
  const info = {
    from: s.remote_identity.uri.toString(),
    displayName: s.remote_identity.display_name || '',
    callerId: decoded(request.getHeader('X-Caller-Id')) || s.remote_identity.uri.user || '',
    context: request.getHeader('X-Call-Context') || '',
  };
  current = { started: new Date(), info, name: info.displayName || info.callerId, outcome: 'missed', answering: false };
  note('incoming', info);
  $('prealert').hidden = true;
  setCallState(`Incoming call from ${current.name || 'unknown caller'}`, true);

  // The pushed card is shown at once; the API's fresh copy replaces it (or, failing, stays).
  const pushed = info.context ? cards.get(info.context) : null;
  if (pushed) { renderCard(pushed, 'Transferred by the assistant'); current.name = pushed.caller.name; }
  else renderBareCard(info);
  if (info.context) {
    api('/context/' + encodeURIComponent(info.context)).then((card) => {
      if (session !== s) return;
      renderCard(card, 'Transferred by the assistant');
      current.name = card.caller.name;
      current.reason = card.reason;
      setCallState(s.isEstablished() ? `In call with ${card.caller.name}` : `Incoming call from ${card.caller.name}`, !s.isEstablished());
      note('card-fetched', { name: card.caller.name });
    }).catch((err) => {
      note('card-fetch-failed', { status: err.status, pushed: !!pushed });
      if (session === s && !pushed) renderBareCard(info);
    });
  }

  s.on('peerconnection', (pe) => watchMedia(pe.peerconnection));
  s.on('icecandidate', (ie) => { // do not wait forever for slow ICE gathering
    clearTimeout(s._iceTimer);
    s._iceTimer = setTimeout(ie.ready, 2000);
  });
  s.on('sdp', (se) => note('sdp', {
    originator: se.originator, sdpType: se.type,
    direction: (se.sdp.match(/a=(sendrecv|sendonly|recvonly|inactive)/) || [])[1] || '',
  }));
  s.on('accepted', () => { note('accepted'); current.outcome = 'answered'; current.answeredAt = new Date(); stopRinging(); buttons(); });
  s.on('confirmed', () => { note('confirmed'); setCallState(`In call with ${current.name || 'caller'}`); buttons(); $('hangup').focus(); });
  s.on('hold', (he) => { note('hold', { originator: he.originator }); buttons(); });
  s.on('unhold', (he) => { note('unhold', { originator: he.originator }); buttons(); });
  s.on('muted', () => { note('muted'); buttons(); });
  s.on('unmuted', () => { note('unmuted'); buttons(); });
  s.on('ended', (ee) => finished(s, 'ended', ee));
  s.on('failed', (fe) => finished(s, 'failed', fe));

  startRinging(current.name);
  buttons();
  $('answer').focus();
}

function finished(s, how, e) {
  note(how, { originator: e.originator, cause: e.cause });
  if (session !== s) return;
  stopRinging();
  const entry = current;
  if (how === 'failed' && entry.outcome === 'missed' && e.originator === 'local') entry.outcome = 'rejected';
  if (how === 'failed' && entry.outcome === 'missed' && e.cause === JsSIP.C.causes.CANCELED) entry.outcome = 'missed (caller hung up)';
  setCallState(entry.outcome === 'transferred' ? 'Call transferred' : 'Call ended');
  addToLog(entry);
  buttons();
  $('remote-audio').srcObject = null;
}

function watchMedia(pc) {
  pc.addEventListener('track', (te) => {
    $('remote-audio').srcObject = te.streams[0] || new MediaStream([te.track]);
    note('remote-track', { kind: te.track.kind });
  });
  pc.addEventListener('iceconnectionstatechange', () => note('ice', { state: pc.iceConnectionState }));
}

$('answer').addEventListener('click', () => {
  if (!session || session.isEnded()) return;
  note('answer-click');
  current.answering = true;
  buttons();
  setCallState('Connecting…');
  stopRinging();
  session.answer({ mediaConstraints: { audio: true, video: false } });
});

$('reject').addEventListener('click', () => {
  if (!session || session.isEnded()) return;
  note('reject-click');
  current.outcome = 'rejected';
  session.terminate({ status_code: 603, reason_phrase: 'Decline' });
});

$('mute').addEventListener('click', () => {
  if (!session) return;
  if (session.isMuted().audio) session.unmute({ audio: true }); else session.mute({ audio: true });
});

$('hold').addEventListener('click', () => {
  if (!session) return;
  const holding = !session.isOnHold().local;
  note(holding ? 'hold-click' : 'unhold-click');
  $('hold').disabled = true; // until the re-INVITE is answered
  const done = () => {
    note(holding ? 'hold-ok' : 'unhold-ok');
    setCallState(holding ? `On hold: ${current.name || 'caller'}` : `In call with ${current.name || 'caller'}`);
    buttons();
  };
  const sent = holding ? session.hold({}, done) : session.unhold({}, done);
  if (!sent) buttons();
});

$('transfer-form').addEventListener('submit', (e) => {
  e.preventDefault();
  if (!session || !session.isEstablished()) return;
  const target = $('transfer-target').value.trim();
  if (!/^[0-9*#+]{2,15}$/.test(target)) {
    setCallState('Enter the extension to transfer to (digits only).');
    $('transfer-target').focus();
    return;
  }
  const domain = phoneSettings().domain;
  const s = session;
  note('transfer-click', { target });
  setCallState(`Transferring to ${target}…`);
  s.refer(`sip:${target}@${domain}`, {
    eventHandlers: {
      requestSucceeded: (r) => note('refer-accepted', { status: r.response.status_code }),
      requestFailed: (r) => { note('refer-failed', { cause: r.cause }); setCallState(`Transfer refused (${r.cause})`); },
      accepted: () => {
        note('transfer-ok');
        current.outcome = 'transferred';
        setCallState(`Transferred to ${target}. You can hang up.`);
      },
      failed: () => { note('transfer-failed'); setCallState(`Transfer to ${target} failed; the caller is still with you`); },
    },
  });
});

$('hangup').addEventListener('click', () => {
  if (!session || session.isEnded()) return;
  note('hangup-click');
  session.terminate();
});

// --- the call log (this page's session only) --------------------------------------------------
function addToLog(entry) {
  const li = document.createElement('li');
  const time = document.createElement('time');
  time.dateTime = entry.started.toISOString();
  time.textContent = entry.started.toLocaleTimeString();
  const seconds = entry.answeredAt ? Math.round((Date.now() - entry.answeredAt) / 1000) : 0;
  const parts = [entry.name || entry.info.callerId || 'Unknown caller', entry.outcome];
  if (seconds) parts.push(`${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`);
  if (entry.reason) parts.push(entry.reason);
  li.append(time, document.createTextNode(parts.join(' · ')));
  $('call-log').prepend(li);
  $('call-log-empty').hidden = true;
}

// --- ringing: a tone, the tab title, and a notification when the tab is in the background ----
let audio = null;
let ringTimer = null;
let notification = null;
const title = document.title;

function unlockAudio() { // needs a user gesture; the Connect click is one
  try {
    audio = audio || new AudioContext();
    audio.resume();
  } catch (e) { audio = null; }
  if (window.Notification && Notification.permission === 'default') Notification.requestPermission().catch(() => {});
}

function startRinging(name) {
  stopRinging();
  let step = 0;
  const tick = () => {
    const on = step % 2 === 0;
    if (on && audio) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = 440;
      gain.gain.value = 0.08;
      osc.connect(gain).connect(audio.destination);
      osc.start();
      osc.stop(audio.currentTime + RING_MS[step % 4] / 1000);
    }
    document.title = on ? `☎ ${name || 'Incoming call'}` : title;
    ringTimer = setTimeout(tick, RING_MS[step % 4]);
    step += 1;
  };
  tick();
  if (document.hidden && window.Notification && Notification.permission === 'granted') {
    notification = new Notification('Incoming call', { body: name || '', tag: 'agent-call' });
    notification.onclick = () => { window.focus(); $('answer').focus(); };
  }
}

function stopRinging() {
  clearTimeout(ringTimer);
  ringTimer = null;
  document.title = title;
  if (notification) { notification.close(); notification = null; }
}

// --- start -------------------------------------------------------------------------------------
window.agentConsole = {
  events,
  get ua() { return ua; },
  get session() { return session; },
};
JsSIP.debug.disable('JsSIP:*');
setReg('', 'Not connected');
buttons();
api('/me').then(showSignedIn).catch(showSignedOut);
