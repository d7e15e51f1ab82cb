"""Video files and folders of frames in and out, one frame at a time (PyAV, the optional ``video`` extra).

A clip is a video file (anything FFmpeg demuxes: .mp4, .mkv, .mov, .webm, .avi, ...) or a folder of
frame images (sorted by name). :func:`probe` reads the headers only; :func:`read_frames` decodes,
checks and yields one frame at a time, so a long clip never sits in memory at full resolution;
:func:`write_video` encodes frames as they come and copies the input's audio.

Why PyAV (``av``) and not imageio-ffmpeg: PyAV's wheel ships FFmpeg's libraries (about 100 MB
against imageio-ffmpeg's 165 MB binary), decodes in-process to numpy arrays (no pipe to a child
process, no guessing of frame sizes from a byte stream: every frame comes with its own width and
height, which is how a size change mid-clip is caught), and copies audio packets into the new file
without re-encoding them. Every failure is an ``ImageError`` naming the file.

Files from strangers: the declared frame size is checked against ``max_pixels`` and the frame count
against ``max_frames`` before any frame is decoded, and each decoded frame's size again (a stream may
change size). Nothing but the file itself is opened: FFmpeg's demuxers that follow references (HLS
playlists, concat lists, ``file:``/``http:`` URLs inside a file) are refused by format name.
"""

from __future__ import annotations

import dataclasses
import fractions
import io
import os
import pathlib
import sys
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from .. import files, image
from ..errors import ImageError
from ..image.common import path_text, one_line

__all__ = ["VIDEO_EXTENSIONS", "VIDEO_EXTRA", "Clip", "audio_copy_problem", "frame_rate", "have_pyav", "is_video_path", "probe", "read_frames",
           "write_video"]

VIDEO_EXTRA = 'pip install "nst-jax[video]"'
# Output containers we encode (H.264 in all but WebM, which takes VP9).
VIDEO_EXTENSIONS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "libx264", ".webm": "libvpx-vp9"}
# Demuxers that read other files or URLs named inside the file: never opened.
_REFERENCING_FORMATS = {"hls", "concat", "ffconcat", "image2", "image2pipe", "tee", "dash", "mpd", "sdp", "rtp",
                        "rtsp", "data", "subfile", "ffmetadata"}
DEFAULT_MAX_FRAMES = 100_000
NO_AUDIO = "the input has no audio"
_CONTAINERS = {".mkv": "matroska", ".mov": "mov", ".avi": "avi", ".webm": "webm", ".mp4": "mp4"}


def have_pyav() -> bool:
    """Whether PyAV (the ``video`` extra) is importable."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _av():
    try:
        import av
    except ImportError:
        raise ImageError(f"video files need PyAV: {VIDEO_EXTRA} (a folder of frames works without it)") from None
    return av


def is_video_path(path: os.PathLike[str] | str) -> bool:
    """True for a path that names a video file by its extension (else: a folder of frames)."""
    return pathlib.Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class Clip:
    """What :func:`probe` read from the headers: ``frames`` may be 0 when a container does not say."""

    path: pathlib.Path
    kind: str  # "file" or "folder"
    width: int
    height: int
    fps: fractions.Fraction
    frames: int
    has_audio: bool
    frame_files: tuple[pathlib.Path, ...] = ()


def _folder_frames(p: pathlib.Path) -> list[pathlib.Path]:
    return sorted(f for f in p.iterdir() if f.suffix.lower() in image.IMAGE_EXTENSIONS and not f.name.startswith("."))


def _open(p: pathlib.Path):
    av = _av()
    name = path_text(p)
    if not p.exists():
        raise ImageError(f"{name}: no such file")
    if not p.is_file():
        raise ImageError(f"{name}: not a file or a folder of frames")
    try:
        container = av.open(str(p), "r", options={"protocol_whitelist": "file"})
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"{name}: not a video FFmpeg can read ({one_line(e)[:200]})") from None
    fmt = {f.strip() for f in (container.format.name or "").split(",")}
    if fmt & _REFERENCING_FORMATS:
        container.close()
        raise ImageError(f"{name}: a {container.format.name} file refers to other files; give the video itself")
    if not container.streams.video:
        container.close()
        raise ImageError(f"{name}: has no video stream")
    if container.streams.video[0].codec_context is None:  # PyAV: FFmpeg has no decoder for this codec
        container.close()
        raise ImageError(f"{name}: its video codec is unknown to FFmpeg (no decoder); convert it to H.264 "
                         "or a folder of frames first")
    return container


def probe(path: os.PathLike[str] | str, *, fps: Optional[float] = None, max_pixels: int = image.DEFAULT_MAX_PIXELS,
          max_frames: int = DEFAULT_MAX_FRAMES) -> Clip:
    """The clip's frame size, rate, frame count and audio, from headers only.

    Args:
      path: a video file or a folder of frame images.
      fps: the rate of a folder of frames (default 25); ignored for a file, which says its own.
      max_pixels: refuse frames larger than this.
      max_frames: refuse clips that declare more frames than this.

    Returns:
      ``Clip``.

    Raises:
      ImageError: missing, not a video, no video stream, no frames, too large.
    """
    p = pathlib.Path(path).expanduser()
    name = path_text(p)
    if p.is_dir():
        frames = _folder_frames(p)
        if not frames:
            raise ImageError(f"{name}: no frames (no {', '.join(sorted(image.IMAGE_EXTENSIONS))} files)")
        if len(frames) > max_frames:
            raise ImageError(f"{name}: {len(frames):,} frames, over the limit of {max_frames:,}")
        h, w = image.image_size(frames[0], max_pixels=max_pixels)
        rate = fractions.Fraction(fps if fps is not None else 25).limit_denominator(1001)
        return Clip(p, "folder", w, h, rate, len(frames), False, tuple(frames))
    container = _open(p)
    try:
        v = container.streams.video[0]
        w, h = int(v.codec_context.width or 0), int(v.codec_context.height or 0)
        if w <= 0 or h <= 0:
            raise ImageError(f"{name}: the video stream declares no frame size (unreadable codec?)")
        if w * h > max_pixels:
            raise ImageError(f"{name}: frames of {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                             "(--max-pixels)")
        n = int(v.frames or 0)
        if n > max_frames:
            raise ImageError(f"{name}: declares {n:,} frames, over the limit of {max_frames:,}")
        if n == 0:  # the container does not say (Matroska, WebM): count packets, decoding nothing
            n = _count_packets(container, v, name, max_frames)
        rate = v.average_rate or v.guessed_rate or fractions.Fraction(25)
        return Clip(p, "file", w, h, fractions.Fraction(rate), n, bool(container.streams.audio))
    finally:
        container.close()


def _count_packets(container: Any, stream: Any, name: str, max_frames: int) -> int:
    """The video stream's packet count (a frame each), read by demuxing alone; refused past ``max_frames``."""
    av = _av()
    n = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                n += 1
                if n > max_frames:
                    raise ImageError(f"{name}: more than {max_frames:,} frames, over the limit (--max-frames)")
    except av.FFmpegError as e:
        raise ImageError(f"{name}: cannot read the video's packets ({one_line(e)[:200]})") from None
    if n == 0:
        raise ImageError(f"{name}: the video stream holds no frames")
    return n


def audio_copy_problem(source: os.PathLike[str] | str, output: os.PathLike[str] | str) -> str:
    """Why the first audio stream of ``source`` cannot be copied into a file like ``output``; "" if it can.

    Decided before any frame is painted, by a trial: a container of ``output``'s kind is written to
    memory with a one-frame video stream and the first audio packets, header, packets and trailer
    (containers refuse codecs at each of these steps: Opus in AVI when the stream is added, in MOV
    at the header, PCM in MP4 at the trailer).

    Args:
      source: a video file with an audio stream.
      output: the output path (its extension names the container).

    Returns:
      "" when the copy works, else the reason for the user's note.
    """
    av = _av()
    ext = pathlib.Path(output).suffix.lower()
    src = out = None
    try:
        src = av.open(str(source), "r", options={"protocol_whitelist": "file"})
        if not src.streams.audio:
            return NO_AUDIO
        stream = src.streams.audio[0]
        if stream.codec_context is None:
            return "the input's audio codec is unknown to FFmpeg"
        codec = stream.codec_context.name
        out = av.open(io.BytesIO(), "w", format=_CONTAINERS.get(ext, "mp4"))
        v = out.add_stream(VIDEO_EXTENSIONS.get(ext, "libx264"), rate=25)
        v.width, v.height, v.pix_fmt = 16, 16, "yuv420p"
        a = out.add_stream_from_template(stream)
        for packet in v.encode(av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")):
            out.mux(packet)
        for packet in v.encode(None):
            out.mux(packet)
        copied = 0
        for packet in src.demux(stream):
            if packet.dts is None or packet.pts is None:
                continue
            packet.stream = a
            out.mux(packet)
            copied += 1
            if copied >= 8:
                break
        out.close()
        out = None
        return ""
    except (av.FFmpegError, ValueError, TypeError, OSError) as e:
        what = f"{codec} audio" if "codec" in locals() else "audio"
        return f"a {ext} file cannot hold the input's {what} ({one_line(e)[:120]})"
    finally:
        for c in (out, src):
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001 - closing a failed trial container
                    pass


def read_frames(clip: Clip, *, start: int = 0, stop: Optional[int] = None, every: int = 1,
                shape: Optional[tuple[int, int]] = None, resample: str = "bicubic",
                max_pixels: int = image.DEFAULT_MAX_PIXELS, max_frames: int = DEFAULT_MAX_FRAMES
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the selected frames one at a time, each checked and optionally resized.

    Args:
      clip: from :func:`probe`.
      start, stop, every: the frames ``start, start + every, ...`` below ``stop`` (source indices).
      shape: resize each frame to this (H, W) as soon as it is decoded.
      resample: the resize method.
      max_pixels, max_frames: limits, as in :func:`probe`.

    Yields:
      (source frame index, H×W×3 float32 RGB in [0, 1]).

    Raises:
      ImageError: a frame that cannot be decoded, or whose size differs from the first frame's.
    """
    name = path_text(clip.path)
    if every < 1 or start < 0:
        raise ImageError(f"{name}: bad frame selection (start {start}, every {every})")

    def checked(i: int, a: np.ndarray) -> tuple[int, np.ndarray]:
        if a.shape[:2] != (clip.height, clip.width):
            raise ImageError(f"{name}: frame {i} is {a.shape[1]}x{a.shape[0]}, but the clip began at "
                             f"{clip.width}x{clip.height}; frame sizes must not change mid-clip")
        return i, (a if shape is None or tuple(shape) == a.shape[:2] else image.resize(a, shape, resample))

    def wanted(i: int) -> bool:
        return i >= start and (i - start) % every == 0

    if clip.kind == "folder":
        for i, f in enumerate(clip.frame_files):
            if stop is not None and i >= stop:
                return
            if wanted(i):
                yield checked(i, image.load_image(f, max_pixels=max_pixels))
        return
    av = _av()
    container = _open(clip.path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        i = -1
        try:
            for frame in container.decode(stream):
                i += 1
                if i >= max_frames:
                    raise ImageError(f"{name}: more than {max_frames:,} frames")
                if stop is not None and i >= stop:
                    return
                if not wanted(i):
                    continue
                if frame.width * frame.height > max_pixels:
                    raise ImageError(f"{name}: frame {i} is {frame.width}x{frame.height}, over the limit of "
                                     f"{max_pixels:,} pixels")
                rgb = frame.to_ndarray(format="rgb24")
                yield checked(i, rgb.astype(np.float32) / 255.0)
        except av.FFmpegError as e:
            raise ImageError(f"{name}: cannot decode frame {i + 1} ({one_line(e)[:200]})") from None
        if i < 0:
            raise ImageError(f"{name}: no frames could be decoded (unreadable codec?)")
    finally:
        container.close()


def _copy_audio(out: Any, source: pathlib.Path) -> tuple[Any, Any]:
    """Open ``source``'s first audio stream and add a stream copying it to ``out`` (already found
    copyable by :func:`audio_copy_problem`)."""
    av = _av()
    src = av.open(str(source), "r", options={"protocol_whitelist": "file"})
    try:
        return src, out.add_stream_from_template(src.streams.audio[0])
    except BaseException:
        src.close()
        raise


def frame_rate(fps: Any) -> fractions.Fraction:
    """A frame rate as the encoder takes it (a fraction over at most 1001), refused when it rounds to 0.

    Args:
      fps: frames per second (a float or a Fraction).

    Returns:
      the rate.

    Raises:
      ImageError: a rate that is not positive or rounds to 0 (FFmpeg would silently write 24 fps).
    """
    try:
        rate = fractions.Fraction(fps).limit_denominator(1001)
    except (ValueError, OverflowError, TypeError):
        rate = fractions.Fraction(0)
    if rate <= 0 or rate > 1000:
        raise ImageError(f"a frame rate of {float(fps):.3g} fps cannot be encoded (it must round to between "
                         "1/1001 and 1000 fps); give --fps, or a smaller --every")
    return rate


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB (H, W even) to planar YUV 4:2:0, BT.601 limited range, as one (3H/2)×W array.

    The encoder's own conversion (swscale) was seen to give the same frames different bytes in
    different processes, so a rerun that finishes an interrupted job encoded another video; this
    one is plain arithmetic: the same frames always give the same video.

    Args:
      rgb: H×W×3 uint8.

    Returns:
      uint8, the Y plane (H×W) then U and V (each H/2×W/2, laid out as PyAV's yuv420p ndarray).
    """
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    h, w = y.shape
    sub = x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))  # each 2x2 block's mean colour
    r2, g2, b2 = sub[..., 0], sub[..., 1], sub[..., 2]
    u = 128.0 - 0.148223 * r2 - 0.290993 * g2 + 0.439216 * b2
    v = 128.0 + 0.439216 * r2 - 0.367788 * g2 - 0.071427 * b2
    planes = [np.clip(np.floor(p + 0.5), 0, 255).astype(np.uint8) for p in (y, u, v)]
    # PyAV's yuv420p ndarray: the Y rows, then U and V flattened into rows of width W
    chroma = np.concatenate([planes[1].reshape(-1), planes[2].reshape(-1)]).reshape(h // 2, w)
    return np.concatenate([planes[0], chroma], axis=0)


def write_video(path: os.PathLike[str] | str, frames: Sequence[os.PathLike[str] | str] | Iterator[np.ndarray], fps: Any,
                *, audio_from: Optional[os.PathLike[str] | str] = None, audio_start: float = 0.0,
                audio_stop: Optional[float] = None, overwrite: bool = False, crf: int = 18) -> list[str]:
    """Encode frames into a video file, atomically, with the audio of another file copied in.

    Args:
      path: the output (.mp4, .mkv, .mov, .avi: H.264 yuv420p; .webm: VP9). Odd frame sizes are
        cropped by one row or column (yuv420p needs even sizes).
      frames: image files, or H×W×3 float arrays in [0, 1] (uint8 also), all one size.
      fps: frames per second (a Fraction keeps 30000/1001 exact).
      audio_from: a video whose first audio stream is copied (not re-encoded), between
        ``audio_start`` and ``audio_stop`` seconds (packet accuracy).
      overwrite: replace an existing ``path``.
      crf: the H.264/VP9 constant-rate factor (lower: better; 18 is visually lossless).

    Returns:
      notes for the user (audio dropped and why), empty when all went as asked.

    Raises:
      ImageError: the path cannot be written or encoding fails.
    """
    av = _av()
    p = pathlib.Path(path).expanduser()
    ext = p.suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ImageError(f"{p}: unknown video extension (use {', '.join(sorted(VIDEO_EXTENSIONS))})")
    notes: list[str] = []
    rate = frame_rate(fps)
    if audio_from is not None:  # decided by a trial, before a frame is encoded
        why = audio_copy_problem(audio_from, p)
        if why:
            if why != NO_AUDIO:
                notes.append(f"audio dropped: {why}")
            audio_from = None

    def encode(f: Any) -> None:
        out = av.open(f, "w", format=_CONTAINERS[ext])
        src = None
        try:
            v = out.add_stream(VIDEO_EXTENSIONS[ext], rate=rate)
            v.pix_fmt = "yuv420p"
            v.options = {"crf": str(crf)} if ext != ".webm" else {"crf": str(crf + 13), "b": "0"}
            if audio_from is not None:
                src, a = _copy_audio(out, pathlib.Path(audio_from))
            size = None
            for item in frames:
                arr = image.to_uint8(image.load_image(item) if isinstance(item, (str, os.PathLike)) else item)
                h, w = arr.shape[0] // 2 * 2, arr.shape[1] // 2 * 2
                if size is None:
                    size = (h, w)
                    v.height, v.width = h, w
                elif size != (h, w):
                    raise ImageError(f"{p}: frames of different sizes ({w}x{h} after {size[1]}x{size[0]})")
                frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(arr[:h, :w]), format="yuv420p")
                for packet in v.encode(frame):
                    out.mux(packet)
            if size is None:
                raise ImageError(f"{p}: no frames to write")
            for packet in v.encode(None):
                out.mux(packet)
            if src is not None:
                for packet in src.demux(src.streams.audio[0]):
                    if packet.dts is None or packet.pts is None:
                        continue
                    t = float(packet.pts * packet.time_base)
                    if t < audio_start or (audio_stop is not None and t >= audio_stop):
                        continue
                    packet.pts -= int(audio_start / packet.time_base)
                    packet.dts -= int(audio_start / packet.time_base)
                    packet.stream = a
                    out.mux(packet)
        except (av.FFmpegError, ValueError) as e:
            raise ImageError(f"{p}: encoding failed ({one_line(e)[:200]})") from None
        finally:
            if src is not None:
                src.close()
            try:
                out.close()  # writes the trailer: a container can refuse a stream only here
            except (av.FFmpegError, ValueError) as e:
                if sys.exc_info()[0] is None:  # (not while another error is on its way out)
                    raise ImageError(f"{p}: encoding failed at the end ({one_line(e)[:200]})") from None

    files.atomic_write(p, encode, overwrite=overwrite)
    return notes
