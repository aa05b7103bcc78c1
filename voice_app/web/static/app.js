// The caller page: sign in with account number + PIN, call the assistant through Twilio (Voice
// JS SDK) or, in local mode, straight over a WebSocket; show status and a live transcript.
import { startLocalCall } from "./local-call.js";

const $ = (id) => document.getElementById(id);
const ui = {
  signin: $("signin"),
  form: $("signin-form"),
  account: $("account"),
  pin: $("pin"),
  signinButton: $("signin-button"),
  signinError: $("signin-error"),
  call: $("call"),
  who: $("who"),
  callTwilio: $("call-twilio"),
  callLocal: $("call-local"),
  mute: $("mute"),
  hangUp: $("hangup"),
  status: $("status"),
  transcript: $("transcript"),
  interim: $("interim"),
  signout: $("signout"),
};

const CONNECT_TIMEOUT_MS = 15000;

let me = null; // /api/me: user, tenant, csrf, features
let active = null; // { hangUp(), setMuted(bool) } while a call is up
let transcriptSocket = null;

async function api(path, { method = "GET", body } = {}) {
  const headers = { "X-Requested-With": "fetch" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (me && me.csrf) headers["X-CSRF-Token"] = me.csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = {};
    }
  }
  return { ok: response.ok, status: response.status, data };
}

function setStatus(text) {
  ui.status.textContent = text;
}

// Sign-in ----------------------------------------------------------------------------------------

function showSignIn(message = "") {
  me = null;
  ui.call.hidden = true;
  ui.signin.hidden = false;
  ui.signinError.textContent = message;
  ui.pin.value = "";
  ui.account.focus();
}

function showCallPanel(profile) {
  me = profile;
  ui.signin.hidden = true;
  ui.call.hidden = false;
  ui.who.textContent = `Signed in as ${me.user.display_name} (${me.tenant.name}).`;
  const twilioReady = me.features.twilio && typeof window.Twilio !== "undefined";
  ui.callTwilio.hidden = !twilioReady && me.features.local_mode;
  ui.callTwilio.disabled = !twilioReady;
  ui.callLocal.hidden = !me.features.local_mode;
  setStatus(
    twilioReady || me.features.local_mode
      ? "Ready to call."
      : "Calling is not set up on this server yet (no Twilio keys and local mode is off).",
  );
  setCallControls(false);
  (ui.callTwilio.hidden ? ui.callLocal : ui.callTwilio).focus();
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const accountNumber = ui.account.value.replace(/\s+/g, "");
  const pin = ui.pin.value.trim();
  if (!/^[0-9]{6,12}$/.test(accountNumber)) {
    ui.signinError.textContent = "Enter your account number: 6 to 12 digits.";
    ui.account.focus();
    return;
  }
  if (!/^[0-9]{4,8}$/.test(pin)) {
    ui.signinError.textContent = "Enter your PIN: 4 to 8 digits.";
    ui.pin.focus();
    return;
  }
  ui.signinButton.disabled = true;
  ui.signinError.textContent = "";
  try {
    const result = await api("/api/auth/pin", {
      method: "POST",
      body: { account_number: accountNumber, pin },
    });
    if (result.ok) {
      ui.pin.value = "";
      showCallPanel(result.data);
    } else {
      ui.signinError.textContent = result.data.error || "Sign-in failed. Please try again.";
      ui.pin.value = "";
      ui.pin.focus();
    }
  } catch {
    ui.signinError.textContent = "Could not reach the server. Check your connection.";
  } finally {
    ui.signinButton.disabled = false;
  }
});

ui.signout.addEventListener("click", async () => {
  if (active) active.hangUp();
  await api("/api/auth/logout", { method: "POST" });
  showSignIn("You are signed out.");
});

// Call controls ----------------------------------------------------------------------------------

function setCallControls(inCall) {
  ui.callTwilio.disabled = inCall || !(me && me.features.twilio && window.Twilio);
  ui.callLocal.disabled = inCall;
  ui.mute.disabled = !inCall;
  ui.hangUp.disabled = !inCall;
  ui.mute.setAttribute("aria-pressed", "false");
  ui.mute.textContent = "Mute";
}

function callEnded(text) {
  active = null;
  closeTranscript();
  setCallControls(false);
  setStatus(text);
  (ui.callTwilio.hidden || ui.callTwilio.disabled ? ui.callLocal : ui.callTwilio).focus();
}

ui.mute.addEventListener("click", () => {
  if (!active) return;
  const muted = ui.mute.getAttribute("aria-pressed") !== "true";
  active.setMuted(muted);
  ui.mute.setAttribute("aria-pressed", String(muted));
  ui.mute.textContent = muted ? "Unmute" : "Mute";
  setStatus(muted ? "Connected. You are muted." : "Connected.");
});

ui.hangUp.addEventListener("click", () => {
  if (active) active.hangUp();
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && active) active.hangUp();
});

ui.callTwilio.addEventListener("click", async () => {
  setCallControls(true);
  ui.mute.disabled = true;
  clearTranscript();
  setStatus("Connecting…");
  let device = null;
  let finished = false;
  const finish = (text) => {
    if (finished) return;
    finished = true;
    if (device) device.destroy();
    callEnded(text);
  };
  // Hanging up while still connecting cancels the attempt.
  active = { hangUp: () => finish("Call cancelled."), setMuted: () => {} };
  ui.hangUp.disabled = false;
  try {
    const token = await api("/api/voice/token");
    if (!token.ok) throw new Error(token.data.error || "Could not get a call token.");
    if (finished) return;
    device = new window.Twilio.Device(token.data.token, {
      codecPreferences: ["opus", "pcmu"],
      closeProtection: true,
    });
    device.on("tokenWillExpire", async () => {
      const fresh = await api("/api/voice/token");
      if (fresh.ok) device.updateToken(fresh.data.token);
    });
    // Before a call exists, errors arrive on the Device (e.g. Twilio unreachable).
    device.on("error", (error) => finish(`Call failed: ${error.message || error}`));
    // connect() waits for Twilio's signalling, which never comes if Twilio is unreachable.
    const call = await Promise.race([
      device.connect(),
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error("could not reach Twilio. Check your connection.")), CONNECT_TIMEOUT_MS),
      ),
    ]);
    if (finished) {
      call.disconnect();
      return;
    }
    active = {
      hangUp: () => call.disconnect(),
      setMuted: (muted) => call.mute(muted),
    };
    call.on("ringing", () => setStatus("Ringing…"));
    call.on("accept", () => {
      ui.mute.disabled = false;
      setStatus("Connected.");
      const callSid = call.parameters.CallSid;
      if (callSid) openTranscript(callSid);
    });
    call.on("disconnect", () => finish("Call ended."));
    call.on("cancel", () => finish("Call cancelled."));
    call.on("reject", () => finish("Call rejected."));
    call.on("error", (error) => finish(`Call failed: ${error.message || error}`));
  } catch (error) {
    finish(`Call failed: ${error.message || error}`);
  }
});

ui.callLocal.addEventListener("click", async () => {
  // The AudioContext is made inside the click so the browser allows it to play.
  const ctx = new AudioContext({ latencyHint: "interactive" });
  setCallControls(true);
  ui.mute.disabled = true;
  clearTranscript();
  setStatus("Connecting (local mode)…");
  try {
    const started = await api("/api/local/call", { method: "POST" });
    if (!started.ok) throw new Error(started.data.error || "Could not start a call.");
    const { call_sid: callSid, session_token: sessionToken, stream_url: streamUrl } = started.data;
    openTranscript(callSid);
    active = await startLocalCall({
      ctx,
      callSid,
      sessionToken,
      streamUrl,
      onConnected: () => {
        ui.mute.disabled = false;
        setStatus("Connected.");
      },
      onEnded: (reason) =>
        callEnded(
          {
            failed: "Call failed: could not reach the call server.",
            dropped: "The call was cut off.",
          }[reason] || "Call ended.",
        ),
    });
    ui.hangUp.disabled = false;
  } catch (error) {
    ctx.close().catch(() => {});
    const text = error && error.name === "NotAllowedError" ? "Microphone access was refused." : error.message;
    callEnded(`Call failed: ${text || error}`);
  }
});

// Transcript -------------------------------------------------------------------------------------

function clearTranscript() {
  ui.transcript.replaceChildren();
  ui.interim.textContent = "";
}

function openTranscript(callSid) {
  closeTranscript();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/api/calls/transcript?call_sid=${encodeURIComponent(callSid)}`;
  const socket = new WebSocket(url);
  socket.onmessage = ({ data }) => {
    let line;
    try {
      line = JSON.parse(data);
    } catch {
      return;
    }
    showLine(line);
  };
  transcriptSocket = socket;
}

function closeTranscript() {
  if (transcriptSocket) transcriptSocket.close(1000);
  transcriptSocket = null;
}

// Final lines join the log (announced by screen readers); interim words only update a visual
// preview, so assistive technology is not flooded with partial text.
function showLine({ speaker, text, final }) {
  if (!text) return;
  const who = speaker === "assistant" ? "Assistant" : "You";
  if (!final) {
    ui.interim.textContent = `${who}: ${text}`;
    return;
  }
  ui.interim.textContent = "";
  const item = document.createElement("li");
  item.className = speaker === "assistant" ? "assistant" : "caller";
  const label = document.createElement("span");
  label.className = "speaker";
  label.textContent = `${who}: `;
  item.append(label, document.createTextNode(text));
  ui.transcript.append(item);
  item.scrollIntoView({ block: "nearest" });
}

// Start ------------------------------------------------------------------------------------------

(async () => {
  const result = await api("/api/me").catch(() => ({ ok: false }));
  if (result.ok) showCallPanel(result.data);
  else showSignIn();
})();
