"""Speech recognition for calls: the router and the engines it chooses from per turn.

    router = AsrRouter(settings.voice.asr, data_dir=Path(settings.data_dir))
    await router.start()
    transcript = await router.recognize(pcm, 8000, Expect(kind="digits", min_digits=4))
"""

from typing import TYPE_CHECKING, Any

from gateway.voice.asr.base import AsrError, Transcript

if TYPE_CHECKING:
    from gateway.voice.asr.router import AsrRouter

__all__ = ["AsrError", "AsrRouter", "Transcript"]


def __getattr__(name: str) -> Any:
    # The router (and the settings and worker pools it brings) is imported on first use: the
    # recognizer worker processes import this package too, and each would carry it (~30 MB).
    if name == "AsrRouter":
        from gateway.voice.asr.router import AsrRouter

        return AsrRouter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
