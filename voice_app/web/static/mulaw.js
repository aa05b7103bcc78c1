// G.711 μ-law, bit-exact with the reference codec (CPython's audioop / Sun's g711.c), plus
// base64 helpers for Media Streams payloads. Imported by the page and by the mic worklet, so
// nothing here may touch `window`.

const SEG_END = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

/** One signed 16-bit sample to one μ-law byte. */
export function encodeMulaw16(sample) {
  let pcm = sample >> 2; // the codec works on 14 bits
  let mask = 0xff;
  if (pcm < 0) {
    pcm = -pcm;
    mask = 0x7f;
  }
  if (pcm > 8159) pcm = 8159;
  pcm += 33;
  let seg = 0;
  while (seg < 8 && pcm > SEG_END[seg]) seg++;
  if (seg >= 8) return 0x7f ^ mask;
  return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0f)) ^ mask;
}

/** One μ-law byte to one signed 16-bit sample. */
export function decodeMulaw16(byte) {
  const u = ~byte & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  return u & 0x80 ? 0x84 - t : t - 0x84;
}

/** A Web Audio sample (-1..1) to μ-law. */
export function encodeMulawFloat(x) {
  const clamped = Math.max(-1, Math.min(1, x));
  return encodeMulaw16(Math.round(clamped * 32767));
}

/** μ-law bytes into a Float32Array (e.g. an AudioBuffer channel). */
export function decodeMulawInto(bytes, out) {
  for (let i = 0; i < bytes.length; i++) out[i] = decodeMulaw16(bytes[i]) / 32768;
  return out;
}

export function bytesToBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
  return btoa(binary);
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
