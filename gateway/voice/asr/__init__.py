"""Speech recognition for calls: the router and the engines it chooses from per turn.

    router = AsrRouter(settings.voice.asr, data_dir=Path(settings.data_dir))
    await router.start()
    transcript = await router.recognize(pcm, 8000, Expect(kind="digits", min_digits=4))
"""

from gateway.voice.asr.base import AsrError, Transcript
from gateway.voice.asr.router import AsrRouter

__all__ = ["AsrError", "AsrRouter", "Transcript"]
