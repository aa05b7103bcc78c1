"""Offline speech-to-text: pocketsphinx with a language model built from the assistant's phrases.

Used when no Deepgram key is configured. Three parts:

* the language model: a Witten-Bell trigram over `phrases.corpus()` (the assistant's requests plus
  a general verb/noun vocabulary for todo titles), written as ARPA with a dictionary trimmed to its
  words, generated once into a cache directory;
* `Recogniser`: the synchronous core for one call: μ-law in, energy endpointing (`vad.EnergyVad`),
  decoding, `TranscriptEvent`s out;
* `OfflineSpeechToText` / `OfflineTranscriberStream`: the async shell.

Each stream decodes in a child process (`python -m voice_app.speech.offline_stt`) that reads μ-law
on stdin and writes events as JSON lines. A thread would not do: pocketsphinx 5's bindings hold the
GIL while they decode, and the second pass at the end of an utterance takes ~25 ms per second of
speech, which would stall the event loop (and every other call on it). The child starts in ~0.1 s,
uses ~25 MB, and lets calls decode on all cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voice_app.speech import phrases
from voice_app.speech.base import TranscriptEvent
from voice_app.speech.vad import EnergyVad
from voice_app.streams.audio import FRAME_BYTES, FRAME_MS, Resampler, rms, ulaw_to_pcm16

log = logging.getLogger(__name__)

LM_ORDER = 3
LM_VERSION = "wb3-1"  # bump when the builder changes, so cached models are rebuilt
DECODER_RATE = 16000  # the shipped acoustic model is 16 kHz; telephone audio is upsampled to it


# Language model ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelFiles:
    lm: str | None  # None: the general English LM shipped with pocketsphinx
    dictionary: str | None  # None: the full CMU dictionary


def _shipped(name: str) -> str:
    from pocketsphinx import get_model_path

    return str(get_model_path(os.path.join("en-us", name)))


def read_dictionary(path: str) -> dict[str, list[str]]:
    """CMU dictionary lines by word ("read" and "read(2)" both under "read")."""
    entries: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                word = line.split(maxsplit=1)[0].split("(")[0]
                entries.setdefault(word, []).append(line if line.endswith("\n") else line + "\n")
    return entries


def count_ngrams(sentences: Iterable[str], order: int) -> list[Counter[tuple[str, ...]]]:
    """counts[n] holds the n-grams of every sentence wrapped in <s> … </s> (counts[0] unused)."""
    counts: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order + 1)]
    for sentence in sentences:
        tokens = ["<s>", *sentence.split(), "</s>"]
        for n in range(1, order + 1):
            for i in range(len(tokens) - n + 1):
                counts[n][tuple(tokens[i : i + n])] += 1
    del counts[1][("<s>",)]  # a sentence never predicts its own start
    return counts


def witten_bell(
    counts: list[Counter[tuple[str, ...]]],
) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """Interpolated Witten-Bell probabilities and back-off weights, ready for ARPA.

    P(w|h) = (c(h,w) + T(h)·P(w|h')) / (c(h) + T(h)), T(h) = distinct words seen after h. A
    history followed by many different words (like "add a todo to") keeps much of its mass for
    unseen words; a fixed phrase ("my todo" → "list") keeps little. With interpolation the
    back-off weight of h is exactly T(h) / (c(h) + T(h)).
    """
    total = sum(counts[1].values())
    probs: dict[tuple[str, ...], float] = {g: c / total for g, c in counts[1].items()}
    backoffs: dict[tuple[str, ...], float] = {}
    for n in range(2, len(counts)):
        seen: Counter[tuple[str, ...]] = Counter()
        after: Counter[tuple[str, ...]] = Counter()
        for gram, c in counts[n].items():
            seen[gram[:-1]] += c
            after[gram[:-1]] += 1
        for gram, c in counts[n].items():
            h = gram[:-1]
            probs[gram] = (c + after[h] * probs[gram[1:]]) / (seen[h] + after[h])
        for h, c in seen.items():
            backoffs[h] = after[h] / (c + after[h])
    probs[("<s>",)] = 0.0
    return probs, backoffs


def arpa_text(probs: dict[tuple[str, ...], float], backoffs: dict[tuple[str, ...], float]) -> str:
    order = max(len(g) for g in probs)
    by_order = [sorted(g for g in probs if len(g) == n) for n in range(1, order + 1)]
    lines = ["\\data\\", *(f"ngram {n}={len(grams)}" for n, grams in enumerate(by_order, 1))]
    for n, grams in enumerate(by_order, 1):
        lines += ["", f"\\{n}-grams:"]
        for gram in grams:
            p = probs[gram]
            line = f"{math.log10(p) if p > 0 else -99.0:.4f} {' '.join(gram)}"
            if n < order:
                line += f" {math.log10(backoffs.get(gram, 1.0)):.4f}"
            lines.append(line)
    return "\n".join([*lines, "", "\\end\\", ""])


def domain_sentences(known: set[str]) -> list[str]:
    """The phrase corpus, minus any sentence with a word the dictionary can't pronounce."""
    sentences, dropped = [], set()
    for sentence in phrases.corpus():
        unknown = set(sentence.split()) - known
        if unknown:
            dropped |= unknown
        else:
            sentences.append(sentence)
    if dropped:
        log.warning("offline stt: no pronunciation for %s; those phrases are left out", dropped)
    return sentences


def build_domain_model(directory: Path) -> ModelFiles:
    """Write the domain LM and its dictionary into `directory` (reused when already there)."""
    corpus = phrases.corpus()
    key = hashlib.sha256("\n".join([LM_VERSION, *corpus]).encode()).hexdigest()[:16]
    lm_path, dict_path = directory / f"domain-{key}.arpa", directory / f"domain-{key}.dict"
    if lm_path.exists() and dict_path.exists():
        return ModelFiles(str(lm_path), str(dict_path))
    entries = read_dictionary(_shipped("cmudict-en-us.dict"))
    counts = count_ngrams(domain_sentences(set(entries)), LM_ORDER)
    probs, backoffs = witten_bell(counts)
    words = sorted({g[0] for g in probs if len(g) == 1} - {"<s>", "</s>"})
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(dict_path, "".join(line for w in words for line in entries[w]))
    _write_atomic(lm_path, arpa_text(probs, backoffs))
    return ModelFiles(str(lm_path), str(dict_path))


def _write_atomic(path: Path, text: str) -> None:
    """Write then rename, so a concurrent process never loads half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; it's a model, not a secret
    os.replace(tmp, path)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "voice-app" / "offline-stt"


# Recognition core (runs in the worker process) --------------------------------------------------


def make_decoder(files: ModelFiles) -> Any:
    from pocketsphinx import Decoder

    options: dict[str, Any] = {"loglevel": "FATAL", "samprate": DECODER_RATE}
    if files.lm is not None:
        options["lm"] = files.lm
    if files.dictionary is not None:
        options["dict"] = files.dictionary
    return Decoder(**options)


@dataclass(frozen=True, slots=True)
class Endpointing:
    silence_ms: int = 600  # quiet that ends an utterance
    interim_ms: int = 300  # how often a partial hypothesis may be reported
    min_rms: int = 400  # see EnergyVad.min_rms
    max_utterance_s: float = 15.0  # force a final: a caller rarely talks longer, noise might
    preroll_ms: int = 300  # audio kept from before the onset, so first syllables aren't cut


class Recogniser:
    """Endpointing and decoding of one call's audio. Synchronous; feed it μ-law of any length."""

    def __init__(self, decoder: Any, endpointing: Endpointing = Endpointing()) -> None:
        self._decoder = decoder
        self._ep = endpointing
        self._vad = EnergyVad(hangover_ms=endpointing.silence_ms, min_rms=endpointing.min_rms)
        self._resampler = Resampler(8000, DECODER_RATE)
        self._preroll: deque[bytes] = deque(maxlen=max(1, endpointing.preroll_ms // FRAME_MS))
        self._partial = b""  # μ-law short of a whole frame
        self._ms = 0  # audio time at the end of the last frame
        self._started_ms = 0  # onset of the current utterance
        self._interim_ms = 0  # when the last interim was considered
        self._interim = ""
        self._active = False  # an utterance is open in the decoder

    def feed(self, mulaw: bytes) -> list[TranscriptEvent]:
        data = self._partial + mulaw
        whole = len(data) - len(data) % FRAME_BYTES
        self._partial = data[whole:]
        events: list[TranscriptEvent] = []
        for i in range(0, whole, FRAME_BYTES):
            events += self._frame(data[i : i + FRAME_BYTES])
        return events

    def finish(self) -> list[TranscriptEvent]:
        """The audio ended: finalize an utterance still open."""
        return self._end(self._ms) if self._active else []

    def _frame(self, frame: bytes) -> list[TranscriptEvent]:
        pcm = self._resampler.convert(ulaw_to_pcm16(frame))
        self._ms += FRAME_MS
        level = rms(frame)
        change = self._vad.update(level)
        if change == "start":
            return self._start(pcm)
        if not self._active:
            self._preroll.append(pcm)
            return []
        self._decoder.process_raw(pcm, False, False)
        if change == "end":
            return self._end(self._ms - self._ep.silence_ms)
        if self._ms - self._started_ms >= self._ep.max_utterance_s * 1000:
            self._vad.force_end(level)
            return self._end(self._ms)
        return self._maybe_interim()

    def _start(self, pcm: bytes) -> list[TranscriptEvent]:
        self._preroll.append(pcm)
        self._decoder.start_utt()
        self._decoder.process_raw(b"".join(self._preroll), False, False)
        self._preroll.clear()
        self._active, self._interim, self._interim_ms = True, "", self._ms
        self._started_ms = self._ms - self._vad.onset_ms
        return [TranscriptEvent("speech_started", at=self._started_ms / 1000)]

    def _maybe_interim(self) -> list[TranscriptEvent]:
        if self._ms - self._interim_ms < self._ep.interim_ms:
            return []
        self._interim_ms = self._ms
        hyp = self._decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        if not text or text == self._interim:
            return []
        self._interim = text
        return [TranscriptEvent("interim", text, at=self._ms / 1000)]

    def _end(self, speech_end_ms: int) -> list[TranscriptEvent]:
        """Close the utterance. Like Deepgram, the final is stamped with the end of the audio it
        covers, and utterance_end with the end of the speech."""
        self._decoder.end_utt()
        self._active = False
        hyp = self._decoder.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        confidence = self._confidence() if text else 0.0
        # An empty final still ends the turn (the noise that started it was nobody talking).
        return [
            TranscriptEvent("final", text, True, confidence, self._ms / 1000),
            TranscriptEvent("utterance_end", at=max(speech_end_ms, self._started_ms) / 1000),
        ]

    def _confidence(self) -> float:
        """Mean posterior of the words (pocketsphinx's sentence posterior is tiny by nature)."""
        posts = [s.prob for s in self._decoder.seg() if not s.word.startswith(("<", "["))]
        return round(min(1.0, sum(posts) / len(posts)), 3) if posts else 0.0


def worker_main(argv: list[str] | None = None) -> int:
    """The child process: μ-law on stdin, one JSON event per line on stdout, until stdin closes."""
    parser = argparse.ArgumentParser(prog="offline_stt")
    parser.add_argument("--lm")
    parser.add_argument("--dict")
    parser.add_argument("--endpointing", default="{}", help="Endpointing fields as JSON")
    args = parser.parse_args(argv)
    recogniser = Recogniser(
        make_decoder(ModelFiles(args.lm, args.dict)), Endpointing(**json.loads(args.endpointing))
    )
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    while chunk := os.read(0, 4096):
        _emit(out, recogniser.feed(chunk))
    _emit(out, recogniser.finish())
    return 0


def _emit(out: Any, events: list[TranscriptEvent]) -> None:
    if events:
        out.write("".join(json.dumps(dataclasses.asdict(e)) + "\n" for e in events))
        out.flush()


# Async shell ------------------------------------------------------------------------------------

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # makes `-m voice_app…` work uninstalled
_build_lock = threading.Lock()


class OfflineSpeechToText:
    """`SpeechToText` with pocketsphinx, in a child process per stream.

    domain_lm: decode with the assistant's phrase model (True) or the general English LM shipped
    with pocketsphinx (False; much less accurate on this domain, kept for comparison).
    """

    name = "offline"

    def __init__(
        self,
        *,
        domain_lm: bool = True,
        endpointing: Endpointing = Endpointing(),
        cache_dir: str | Path | None = None,
        start_timeout: float = 15.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.domain_lm = domain_lm
        self.endpointing = endpointing
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.start_timeout = start_timeout
        self.close_timeout = close_timeout  # for the worker to decode what it was sent, then exit
        self._files: ModelFiles | None = None

    def model_files(self) -> ModelFiles:
        """The LM and dictionary paths, building the domain model on first use (blocking)."""
        with _build_lock:
            if self._files is None:
                self._files = self._build() if self.domain_lm else ModelFiles(None, None)
            return self._files

    def _build(self) -> ModelFiles:
        try:
            return build_domain_model(self.cache_dir)
        except OSError as exc:  # read-only home, say: a private temp dir still works
            log.warning("offline stt: %s unusable (%s); using a temp dir", self.cache_dir, exc)
            return build_domain_model(Path(tempfile.mkdtemp(prefix="voice-app-stt-")))

    async def open(self) -> OfflineTranscriberStream:
        files = await asyncio.to_thread(self.model_files)
        args = ["--endpointing", json.dumps(dataclasses.asdict(self.endpointing))]
        if files.lm is not None:
            args += ["--lm", files.lm]
        if files.dictionary is not None:
            args += ["--dict", files.dictionary]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voice_app.speech.offline_stt", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        stream = OfflineTranscriberStream(proc, self.close_timeout)
        try:
            async with asyncio.timeout(self.start_timeout):
                ready = await stream.ready()
        except TimeoutError:
            ready = False
        if not ready:
            await stream.close()
            raise RuntimeError(
                f"offline speech recogniser failed to start (exit code {proc.returncode}); "
                "is pocketsphinx installed in this Python?"
            )
        return stream


class OfflineTranscriberStream:
    """One call's recognition: writes audio to the worker, reads its events."""

    def __init__(self, proc: asyncio.subprocess.Process, close_timeout: float = 5.0) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._proc = proc
        self._close_timeout = close_timeout
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self._events: asyncio.Queue[TranscriptEvent | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._dead = False  # the worker's output ended

    async def ready(self) -> bool:
        """Wait for the worker's hello (its decoder is loaded), then start reading events."""
        if not (await self._stdout.readline()).startswith(b'{"ready"'):
            return False
        self._reader = asyncio.create_task(self._read(), name="offline-stt")
        return True

    async def send_audio(self, mulaw: bytes) -> None:
        if self._closing or self._dead or self._stdin.is_closing() or not mulaw:
            return
        self._stdin.write(mulaw)  # the pipe transport buffers; never wait on the worker here

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        if not self._closing:
            self._closing = True
            with contextlib.suppress(OSError, RuntimeError):
                self._stdin.close()  # EOF: the worker finalizes an open utterance and exits
        try:
            async with asyncio.timeout(self._close_timeout):
                if self._reader is not None:
                    await asyncio.shield(self._reader)  # the last events, then EOF
                await self._proc.wait()
        except TimeoutError:
            log.warning("offline stt: worker did not finish; killing it")
            await self._kill()

    async def _read(self) -> None:
        try:
            while line := await self._stdout.readline():
                self._events.put_nowait(TranscriptEvent(**json.loads(line)))
        finally:
            self._dead = True
            if not self._closing:
                log.error("offline stt: worker exited mid-call (code %s)", self._proc.returncode)
            self._events.put_nowait(None)

    async def _kill(self) -> None:
        # os.kill, not Process.kill: that polls (reaps) a worker that just exited, racing
        # asyncio's child watcher ("Unknown child process pid"). A zombie's pid isn't reused.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._proc.pid, signal.SIGKILL)
        await self._proc.wait()


if __name__ == "__main__":
    raise SystemExit(worker_main())
