// The microphone as Media Streams audio: low-pass, decimate to 8 kHz, μ-law encode, and post
// 20 ms frames (160 bytes) to the page. Runs on the audio thread.
import { encodeMulawFloat } from "./mulaw.js";

const TARGET_RATE = 8000;
const FRAME_BYTES = 160; // 20 ms at 8 kHz
const TAPS = 127;
const CUTOFF_HZ = 3400; // telephone band; keeps aliasing below Nyquist (4 kHz) small
const RING = 256; // > TAPS + 1 samples of history

// Windowed-sinc (Hamming) low-pass with unity gain at DC.
function lowPass(rate, cutoff, count) {
  const taps = new Float32Array(count);
  const fc = cutoff / rate;
  const mid = (count - 1) / 2;
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const n = i - mid;
    const sinc = n === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * n) / (Math.PI * n);
    const window = 0.54 - 0.46 * Math.cos((2 * Math.PI * i) / (count - 1));
    taps[i] = sinc * window;
    sum += taps[i];
  }
  for (let i = 0; i < count; i++) taps[i] /= sum;
  return taps;
}

class MulawEncoder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample (may be fractional)
    this.taps = lowPass(sampleRate, Math.min(CUTOFF_HZ, sampleRate * 0.45), TAPS);
    this.ring = new Float32Array(RING);
    this.index = -1; // index of the newest input sample
    this.next = TAPS; // position (in input samples) of the next output sample
    this.frame = new Uint8Array(FRAME_BYTES);
    this.filled = 0;
    this.muted = false;
    this.port.onmessage = ({ data }) => {
      if (data && typeof data.muted === "boolean") this.muted = data.muted;
    };
  }

  // The filter is evaluated only where an output sample is needed: decimation makes the rest
  // of the filtered signal redundant.
  filtered(k) {
    let acc = 0;
    for (let j = 0; j < TAPS; j++) acc += this.taps[j] * this.ring[(k - j) % RING];
    return acc;
  }

  emit(sample) {
    this.frame[this.filled++] = encodeMulawFloat(this.muted ? 0 : sample);
    if (this.filled === FRAME_BYTES) {
      this.port.postMessage(this.frame, [this.frame.buffer]);
      this.frame = new Uint8Array(FRAME_BYTES);
      this.filled = 0;
    }
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    for (let i = 0; i < channel.length; i++) {
      this.index += 1;
      this.ring[this.index % RING] = channel[i];
      // Linear interpolation between the two filtered samples around each output instant.
      while (this.next + 1 <= this.index) {
        const k = Math.floor(this.next);
        const frac = this.next - k;
        const y0 = this.filtered(k);
        const y1 = frac > 0 ? this.filtered(k + 1) : y0;
        this.emit(y0 + frac * (y1 - y0));
        this.next += this.step;
      }
    }
    return true;
  }
}

registerProcessor("mulaw-encoder", MulawEncoder);
