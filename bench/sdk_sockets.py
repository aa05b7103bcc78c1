"""What one call's Deepgram SDK sockets cost in memory, measured alone in a fresh process.

    .venv/bin/python -m bench.sdk_sockets --url http://127.0.0.1:PORT --pairs 100

Opens `pairs` × (live STT stream + TTS stream) through the app's own adapters
(voice_app.speech.deepgram) against a Deepgram stand-in and prints one JSON line: RSS, Python heap
(tracemalloc) and open files per pair. `bench.concurrency` runs it to put the app's memory per
call in proportion.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc
from typing import Any

import psutil

from voice_app.speech.deepgram import DeepgramSpeechToText, DeepgramTextToSpeech


async def probe(url: str, pairs: int) -> dict[str, Any]:
    me = psutil.Process()
    stt = DeepgramSpeechToText("bench-key", url)
    tts = DeepgramTextToSpeech("bench-key", url)
    # One pair first, so imports and the SDK's lazy set-up are not billed to the measured ones.
    warm = await asyncio.gather(stt.open(), tts.open())
    gc.collect()
    tracemalloc.start()
    rss0, heap0, fds0 = me.memory_info().rss, tracemalloc.get_traced_memory()[0], me.num_fds()
    streams = [s for _ in range(pairs) for s in await asyncio.gather(stt.open(), tts.open())]
    await asyncio.sleep(1.0)  # let every socket settle (reader tasks, first messages)
    gc.collect()
    rss1, heap1, fds1 = me.memory_info().rss, tracemalloc.get_traced_memory()[0], me.num_fds()
    await asyncio.gather(*(stream.close() for stream in [*streams, *warm]))
    return {
        "pairs": pairs,
        "rss_kb_per_pair": (rss1 - rss0) / pairs / 1024,
        "heap_kb_per_pair": (heap1 - heap0) / pairs / 1024,
        "fds_per_pair": (fds1 - fds0) / pairs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sdk_sockets", description=__doc__)
    parser.add_argument("--url", required=True, help="the Deepgram stand-in (DEEPGRAM_URL form)")
    parser.add_argument("--pairs", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(probe(args.url, args.pairs))), flush=True)


if __name__ == "__main__":
    main()
