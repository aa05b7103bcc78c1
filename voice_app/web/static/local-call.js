// Local mode: the microphone streamed straight to the server as Twilio Media Streams messages,
// and the assistant's μ-law replies played back with Web Audio. The server cannot tell this
// from Twilio, apart from how it authenticates (the session cookie, not a signature).
import { base64ToBytes, bytesToBase64, decodeMulawInto } from "./mulaw.js";

const RATE = 8000;
const LEAD_SECONDS = 0.04; // small cushion so the first chunk does not start in the past

function randomHex(bytes) {
  return Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("");
}

// Plays μ-law chunks back to back and keeps Twilio's mark semantics: a mark comes back once
// the audio queued before it has played, and `clear` drops the audio and returns every pending
// mark at once.
export class Player {
  constructor(ctx, onMark) {
    this.ctx = ctx;
    this.onMark = onMark;
    this.playhead = 0;
    this.sources = new Set();
    this.marks = [];
    this.timer = setInterval(() => this.releaseMarks(), 20);
  }

  play(bytes) {
    if (!bytes.length) return;
    const buffer = this.ctx.createBuffer(1, bytes.length, RATE);
    decodeMulawInto(bytes, buffer.getChannelData(0));
    const node = this.ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.ctx.destination);
    const at = Math.max(this.playhead, this.ctx.currentTime + LEAD_SECONDS);
    node.start(at);
    this.playhead = at + buffer.duration;
    this.sources.add(node);
    node.onended = () => this.sources.delete(node);
  }

  mark(name) {
    this.marks.push({ name, at: this.playhead });
    this.releaseMarks();
  }

  releaseMarks() {
    const now = this.ctx.currentTime;
    while (this.marks.length && this.marks[0].at <= now) this.onMark(this.marks.shift().name);
  }

  get playing() {
    return this.playhead > this.ctx.currentTime;
  }

  clear() {
    this.stopAll();
    const pending = this.marks;
    this.marks = [];
    for (const mark of pending) this.onMark(mark.name);
  }

  stopAll() {
    for (const node of this.sources) {
      try {
        node.stop();
      } catch {
        // already stopped
      }
    }
    this.sources.clear();
    this.playhead = 0;
  }

  close() {
    clearInterval(this.timer);
    this.marks = [];
    this.stopAll();
  }
}

// Starts a local-mode call. `ctx` must be an AudioContext created in the click handler (so
// the browser lets it play). Resolves once the microphone is live; `onEnded(reason)` is called
// once, whoever ends the call.
export async function startLocalCall({ ctx, callSid, sessionToken, streamUrl, onConnected, onEnded }) {
  const mic = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  await ctx.audioWorklet.addModule(new URL("./mic-worklet.js", import.meta.url));
  const source = ctx.createMediaStreamSource(mic);
  // No outputs: the node is a sink, which the browser still runs.
  const encoder = new AudioWorkletNode(ctx, "mulaw-encoder", { numberOfOutputs: 0 });

  const streamSid = `MZ${randomHex(16)}`;
  const ws = new WebSocket(streamUrl);
  let sequence = 0;
  let chunk = 0;
  let live = false;
  let opened = false;
  let ended = false;

  const send = (event, body) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    sequence += 1;
    ws.send(JSON.stringify({ event, sequenceNumber: String(sequence), streamSid, ...body }));
  };
  const player = new Player(ctx, (name) => send("mark", { mark: { name } }));

  const finish = (reason) => {
    if (ended) return;
    ended = true;
    live = false;
    source.disconnect();
    encoder.port.onmessage = null;
    for (const track of mic.getTracks()) track.stop();
    player.close();
    ctx.close().catch(() => {});
    onEnded(reason);
  };

  encoder.port.onmessage = ({ data }) => {
    if (!live) return;
    chunk += 1;
    send("media", {
      media: {
        track: "inbound",
        chunk: String(chunk),
        timestamp: String((chunk - 1) * 20),
        payload: bytesToBase64(data),
      },
    });
  };

  ws.onopen = () => {
    ws.send(JSON.stringify({ event: "connected", protocol: "Call", version: "1.0.0" }));
    send("start", {
      start: {
        streamSid,
        accountSid: "local",  // no Twilio account: any non-empty value
        callSid,
        tracks: ["inbound"],
        customParameters: { session: sessionToken },
        mediaFormat: { encoding: "audio/x-mulaw", sampleRate: RATE, channels: 1 },
      },
    });
    opened = true;
    live = true;
    source.connect(encoder);
    onConnected();
  };
  ws.onmessage = ({ data }) => {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.event === "media" && message.media) player.play(base64ToBytes(message.media.payload));
    else if (message.event === "mark" && message.mark) player.mark(message.mark.name);
    else if (message.event === "clear") player.clear();
  };
  ws.onclose = (event) => {
    live = false;
    const reason = !opened ? "failed" : event.code === 1000 ? "ended" : "dropped";
    // Let the last words (usually the goodbye) finish playing before closing the audio.
    const remaining = Math.max(0, player.playhead - ctx.currentTime);
    setTimeout(() => finish(reason), remaining * 1000);
  };

  return {
    callSid,
    hangUp() {
      send("stop", { stop: { accountSid: "local", callSid } });
      ws.close(1000, "caller hung up");
      finish("hung up");
    },
    setMuted(muted) {
      encoder.port.postMessage({ muted });
    },
  };
}
