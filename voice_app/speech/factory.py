"""Choose the speech engines from the settings: Deepgram when a key is set, offline otherwise."""

from __future__ import annotations

from voice_app.config import Settings
from voice_app.speech.base import SpeechToText, TextToSpeech


def build_speech(settings: Settings) -> tuple[SpeechToText, TextToSpeech]:
    if settings.deepgram_api_key:
        from voice_app.speech.deepgram import DeepgramSpeechToText, DeepgramTextToSpeech

        return (
            DeepgramSpeechToText(
                settings.deepgram_api_key, settings.deepgram_url, model=settings.deepgram_stt_model
            ),
            DeepgramTextToSpeech(
                settings.deepgram_api_key, settings.deepgram_url, model=settings.deepgram_tts_voice
            ),
        )
    from voice_app.speech.offline_stt import OfflineSpeechToText
    from voice_app.speech.offline_tts import OfflineTextToSpeech

    return OfflineSpeechToText(), OfflineTextToSpeech()
